#!/bin/sh
# Runs every Cyclozzo test: installs what is missing, builds, runs the C unit
# tests, a short libFuzzer run of every fuzz target, and the integration tests
# (real binaries driven through HTTP by Google's official SDKs, in pytest).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20)
#   PYTEST_ARGS=...  extra pytest arguments (e.g. "-k router")
# The datastore and task queue suites then run a second time with the
# datastore on a real PostgreSQL server (CZ_TEST_DATASTORE=postgres).
set -e
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make -j"$(nproc)"
make -j"$(nproc)" unit
make -j"$(nproc)" fuzz
./scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-20}"
./scripts/testenv.sh
build/testenv/bin/python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} tests/integration
echo "cyclozzo: the datastore suites again, on PostgreSQL"
set +e
CZ_TEST_DATASTORE=postgres build/testenv/bin/python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} \
    tests/integration/test_datastore_ndb.py tests/integration/test_datastore_query.py \
    tests/integration/test_taskqueue.py
rc=$?
[ "$rc" -eq 5 ] && rc=0     # PYTEST_ARGS deselected every one of them
exit "$rc"
