#!/usr/bin/env bash
# Runs every check suite given, prints each one's summary and a closing
# "N passed, N failed" line, and fails when any suite fails.
set -u
passed=0; failed=0; bad=()
for t in "$@"; do
    echo "== $(basename "$t")"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -vE '^\s*$' | tail -n 40
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n 1)
    if [ -n "$line" ]; then
        checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
        fails=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
        errs=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
        passed=$((passed + checks - fails - errs)); failed=$((failed + fails + errs))
    fi
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        bad+=("$(basename "$t")")
        [ -z "$line" ] && failed=$((failed + 1))
    fi
done
[ ${#bad[@]} -gt 0 ] && echo "failing suites: ${bad[*]}"
echo "$passed passed, $failed failed"
[ ${#bad[@]} -eq 0 ]
