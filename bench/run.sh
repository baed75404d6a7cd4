#!/bin/sh
# smtp-oauth-proxy benchmark: Release build into build-bench/, then bench/bench_relay.py.
#   bench/run.sh               full run (about 5-7 minutes on 2 cores)
#   bench/run.sh --quick       smoke test (under a minute)
# Extra arguments go to bench_relay.py (--reps, --conc, --small-msgs, --large-msgs, --cap, ...).
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$SRC/build-bench"
# The project builds with -Werror, and GCC 12 at -O3 (Release) reports warnings that -O2 does not
# (format-truncation in client_session.c, nonnull in config.c, as of this writing), so a plain
# Release build can fail. bench/cc-no-werror appends -Wno-error: warnings still print (in
# build-bench/build.log), they no longer stop the benchmark.
mkdir -p "$BUILD"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTS=OFF \
      -DCMAKE_C_COMPILER="$SRC/bench/cc-no-werror" >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j2 >"$BUILD/build.log" 2>&1 || { tail -40 "$BUILD/build.log"; exit 1; }
grep -c "warning:" "$BUILD/build.log" | sed "s/^/bench build: compiler warnings in the files rebuilt now: /" >&2 || true
exec /usr/bin/python3 "$SRC/bench/bench_relay.py" --binary "$BUILD/smtp-oauth-proxy" "$@"
