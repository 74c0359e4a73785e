#!/bin/sh
# Runs every Cyclozzo test: installs what is missing, builds, runs the C unit
# tests, a short libFuzzer run of every fuzz target, and the integration tests
# (real binaries driven through HTTP by Google's official SDKs, in pytest).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20)
#   PYTEST_ARGS=...  extra pytest arguments (e.g. "-k router")
set -e
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make -j"$(nproc)"
make -j"$(nproc)" unit
make -j"$(nproc)" fuzz
./scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-20}"
./scripts/testenv.sh
exec build/testenv/bin/python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} tests/integration
