#!/bin/sh
# smtp-oauth-proxy benchmark: Release build into build-bench/, then bench/bench_relay.py.
#   bench/run.sh               full run (about 5-7 minutes on 2 cores)
#   bench/run.sh --quick       smoke test (under a minute)
# Extra arguments go to bench_relay.py (--reps, --conc, --small-msgs, --large-msgs, --cap, ...).
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$SRC/build-bench"
mkdir -p "$BUILD"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTS=OFF \
      >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j2 >"$BUILD/build.log" 2>&1 || { tail -40 "$BUILD/build.log"; exit 1; }
exec /usr/bin/python3 "$SRC/bench/bench_relay.py" --binary "$BUILD/smtp-oauth-proxy" "$@"
