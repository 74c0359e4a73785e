#!/bin/sh
# Installs the peers the side-by-side benchmarks compare Cyclozzo against, as
# root on Debian 12: wrk (load generator) and nginx from Debian, and gunicorn
# from PyPI into the virtualenv build/bench-venv. Safe to run again: it only
# installs what is missing, and rebuilds the venv only when
# bench/requirements.txt changes.
#
# The benchmarks start their own nginx in the foreground with a generated
# config; the Debian package's system service is not used (where the package
# starts it, it keeps serving its default site on port 80, which is harmless
# and is left alone).
set -e
cd "$(dirname "$0")/.."
PKGS="wrk nginx python3 python3-venv util-linux procps"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bench: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
fi

env=build/bench-venv
stamp=$env/.stamp-$(sha256sum <bench/requirements.txt | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "bench: creating $env from bench/requirements.txt"
    rm -rf "$env"
    /usr/bin/python3 -m venv "$env"
    "$env/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
    touch "$stamp"
fi
echo "bench: ready ($(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/.*: //'), gunicorn $("$env/bin/gunicorn" --version | sed 's/.*(version \(.*\))/\1/'))"
