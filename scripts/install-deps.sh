#!/bin/sh
# Installs what Cyclozzo needs to build, run and test on Debian 12, as root.
# Safe to run again: it only installs packages that are missing.
set -e
PKGS="build-essential pkg-config curl ca-certificates
 libyaml-dev libpcre2-dev liblmdb-dev lmdb-utils libssl-dev libcurl4-openssl-dev
 libseccomp-dev libjansson-dev python3 python3-dev python3-venv python3-pip
 clang libclang-rt-14-dev valgrind
 libvips-dev libexif-dev
 postgresql libpq-dev
 golang-go
 openssl
 libmemcached-dev memcached
 libsqlite3-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "cyclozzo: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
fi
