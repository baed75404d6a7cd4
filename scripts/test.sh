#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, check formatting and cppcheck,
# build twice (plain, and ASan+UBSan), run unit and integration tests against both builds, then
# build every libFuzzer target with clang and run each over its seed corpus and 20 s more
# (scripts/fuzz.sh; SOP_FUZZ_SECONDS=N changes the 20).
#   ./scripts/test.sh            everything
#   ./scripts/test.sh -R relay   only tests whose name matches (passed to ctest, fuzz included)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

echo "== lint: clang-format, cppcheck, layers"
mapfile -t csrc < <(git ls-files '*.c' '*.h' 2>/dev/null || find common proxy oauth store tests -name '*.[ch]')
clang-format --dry-run --Werror "${csrc[@]}"
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
    --inline-suppr -I . common proxy oauth store
./scripts/check-layers.sh

jobs=$(nproc)
for variant in plain asan; do
    dir=build-test-$variant
    opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    [ "$variant" = asan ] && opts+=(-DSANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
    echo "== build ($variant)"
    cmake -S . -B "$dir" "${opts[@]}" >/dev/null
    cmake --build "$dir" -j"$jobs" >/dev/null
    echo "== tests ($variant)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd "$dir" && ctest --output-on-failure --timeout 600 "$@")
    echo "== $variant: ${SECONDS} s so far"
done
./scripts/fuzz.sh "${SOP_FUZZ_SECONDS:-20}" "$@"
echo "== all tests passed in ${SECONDS} s"
