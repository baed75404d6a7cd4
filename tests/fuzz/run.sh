#!/usr/bin/env bash
# One fuzz test (ctest runs it; see scripts/fuzz.sh): every committed seed, then SECONDS of
# fuzzing. The seed corpus is only read; what the fuzzer finds goes to WORK/new/TARGET, a crash
# to WORK/crashes/TARGET-*, the whole output to WORK/logs/TARGET.log.
#   run.sh FUZZER SECONDS SEED_DIR WORK
set -euo pipefail
fuzzer=$1 secs=$2 seeds=$3 work=$4
name=$(basename "$fuzzer")
mkdir -p "$work/new/$name" "$work/crashes" "$work/logs"
log=$work/logs/$name.log
if ! "$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$name-" "$work/new/$name" "$seeds" >"$log" 2>&1; then
    cat "$log"
    echo "$name: FAILED; the input is in $work/crashes/ (add it to $seeds as regress_<what>" \
        "once fixed)"
    exit 1
fi
