#!/usr/bin/env bash
# Runs every check suite given, prints each one's summary and a closing
# "N passed, N failed" line, and fails when any suite fails or crashes.
# Counts come from the TAP file each suite's runner writes (tests/runner.c):
# one "ok"/"not ok" line a test, and a closing "1..N" plan once the suite ran
# to its end; a suite without its plan crashed and counts one failure more.
set -u
passed=0; failed=0; bad=()
for t in "$@"; do
    name=$(basename "$t")
    tap="$(dirname "$t")/$name.tap"
    rm -f "$tap"
    echo "== $name"
    out=$(ZKN_TEST_TAP="$tap" "$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -vE '^\s*$' | tail -n 40
    ok=0; nok=0; plan=
    if [ -f "$tap" ]; then
        ok=$(grep -cE '^ok [0-9]+' "$tap")
        nok=$(grep -cE '^not ok [0-9]+' "$tap")
        plan=$(grep -oE '^1\.\.[0-9]+' "$tap" | tail -n 1)
    fi
    passed=$((passed + ok)); failed=$((failed + nok))
    if [ -z "$plan" ] || [ "${plan#1..}" -ne $((ok + nok)) ]; then
        echo "$name: no complete TAP report in $tap (crashed?)"
        failed=$((failed + 1))
        bad+=("$name")
    elif [ $rc -ne 0 ] || [ "$nok" -ne 0 ]; then
        bad+=("$name")
    fi
done
[ ${#bad[@]} -gt 0 ] && echo "failing suites: ${bad[*]}"
echo "$passed passed, $failed failed"
[ ${#bad[@]} -eq 0 ]
