#!/bin/sh
# Creates build/testenv: a virtualenv (Debian's python3) with pytest and the
# official App Engine SDK from PyPI, used by the integration tests.
set -e
cd "$(dirname "$0")/.."
env=build/testenv
stamp=$env/.stamp-$(cat tests/requirements.txt | sha256sum | cut -c1-16)
[ -f "$stamp" ] && exit 0
echo "testenv: creating $env (pytest, appengine-python-standard)"
rm -rf "$env"
/usr/bin/python3 -m venv "$env"
"$env/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
touch "$stamp"
