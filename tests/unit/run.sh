#!/bin/sh
# Runs every unit-test binary given and sums their results into one line.
pass=0; fail=0; status=0
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | tail -n 1)
    p=$(printf '%s' "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ] || [ $rc -ne 0 ]; then
        printf '%s\n' "$out"; echo "unit: $(basename "$t") FAILED (exit $rc)"
        status=1; [ -z "$f" ] && f=1; [ "$f" = 0 ] && f=1; [ -z "$p" ] && p=0
    else
        echo "unit: $(basename "$t"): $line"
    fi
    pass=$((pass + p)); fail=$((fail + f))
done
echo "unit: $pass passed, $fail failed"
exit $status
