#!/usr/bin/env bash
# Every libFuzzer target in tests/fuzz/, built with clang (ASan + UBSan), run over its committed
# seed corpus and then for SECONDS more each, two at a time. The test command runs it with 20 s.
#   ./scripts/fuzz.sh               20 s a target (as ./scripts/test.sh does)
#   ./scripts/fuzz.sh 600           longer, by hand
#   ./scripts/fuzz.sh 300 -R dsn    one target (the rest goes to ctest)
# What a run found is in build-test-fuzz/fuzz/ (new/, crashes/, logs/). A crash's input, once
# fixed, goes into tests/fuzz/corpus/TARGET/ as regress_<what>.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=20
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
./scripts/install-deps.sh
dir=build-test-fuzz
echo "== fuzz: build (clang, libFuzzer, ASan+UBSan)"
CC=clang cmake -S . -B "$dir" -DBUILD_FUZZ=ON -DBUILD_TESTS=OFF -DSOP_FUZZ_SECONDS="$secs" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$dir" -j"$(nproc)" >/dev/null
echo "== fuzz: every target over its seeds, then $secs s"
rm -f "$dir"/fuzz/logs/*.log
rc=0
(cd "$dir" && ctest -L fuzz -j"$(nproc)" --output-on-failure "$@") || rc=$?
# What each target did: executions, and coverage (libFuzzer's cov/ft) from the seeds alone and
# at the end.
printf '%-24s %6s %12s %18s %18s\n' target seeds executions "seeds: cov/ft" "end: cov/ft"
for log in "$dir"/fuzz/logs/*.log; do
    [ -e "$log" ] || continue
    n=$(basename "$log" .log)
    printf '%-24s %6s %12s %18s %18s\n' "$n" "$(find "tests/fuzz/corpus/$n" -type f | wc -l)" \
        "$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)" \
        "$(sed -n 's/.*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/\1\/\2/p' "$log" | head -n 1)" \
        "$(sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/\1\/\2/p' "$log" | tail -n 1)"
done
exit $rc
