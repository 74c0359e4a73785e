#!/bin/sh
# Runs every built fuzz target for SECONDS each over its seed corpus
# (fuzz/corpus/<target>/); any crash fails the run.
set -e
cd "$(dirname "$0")/.."
secs=${1:-20}
for f in build/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    seeds=fuzz/corpus/$name
    work=build/fuzz-work/$name
    mkdir -p "$work"
    [ -d "$seeds" ] || seeds=
    echo "fuzz: $name for ${secs}s"
    "$f" -max_total_time="$secs" -print_final_stats=0 -close_fd_mask=3 "$work" $seeds >build/fuzz-work/$name.log 2>&1 || {
        tail -40 build/fuzz-work/$name.log; echo "fuzz: $name FAILED"; exit 1; }
done
