#!/usr/bin/env bash
# Builds ringtrain and its tests with a sanitizer into build-tsan/ or build-asan/ and runs them:
#   scripts/sanitize.sh thread   [CTEST ARGS...]   ThreadSanitizer: data races, lock-order inversions
#   scripts/sanitize.sh address  [CTEST ARGS...]   AddressSanitizer + UndefinedBehaviorSanitizer: use after
#                                                  free, overflows, leaks, undefined behaviour
# CTEST ARGS default to `-L unit`; give e.g. `-L multiprocess` or `-R Serve` instead. A report fails its test
# (exitcode 66 for TSan, halt_on_error for ASan/UBSan), and the report is in the test's output.
# LibTorch, Gloo and OpenMPI are Debian's uninstrumented builds: what they do is not checked, and the
# suppressions in scripts/sanitizers/ name the few reports that come from inside them, each with why.
# Deadlines stretch (RINGTRAIN_TEST_TIMEOUT_SCALE): code runs 2-3x (ASan) to 5-15x (TSan) slower.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:-}"
case "$kind" in
  thread) name=tsan flags="-fsanitize=thread -fno-omit-frame-pointer" scale=10 ;;
  address) name=asan flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" scale=4 ;;
  *) echo "usage: scripts/sanitize.sh thread|address [ctest arguments, default -L unit]" >&2; exit 2 ;;
esac
shift
[ $# -gt 0 ] || set -- -L unit
BUILD="$ROOT/build-$name"

"$ROOT/scripts/install-deps.sh"
# The project's build script (Ninja, ccache), into the sanitizer's own directory. -O1 keeps reports' stacks
# readable at a bearable speed. Benchmarks, examples and NCCL are left out: they add build time and nothing
# a CPU-only test run exercises.
RINGTRAIN_BUILD_DIR="$BUILD" RINGTRAIN_BUILD_TYPE=RelWithDebInfo "$ROOT/scripts/build.sh" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
  -DRINGTRAIN_BUILD_BENCHMARKS=OFF -DRINGTRAIN_BUILD_EXAMPLES=OFF -DRINGTRAIN_WITH_NCCL=OFF \
  -DRINGTRAIN_TEST_TIMEOUT_SCALE="$scale"

SUPP="$ROOT/scripts/sanitizers"
# allocator_may_return_null: a test asks LibTorch for an impossible allocation and expects its error.
export TSAN_OPTIONS="suppressions=$SUPP/tsan.supp exitcode=66 second_deadlock_stack=1 history_size=4 allocator_may_return_null=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 allocator_may_return_null=1 ${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp print_suppressions=0 ${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 suppressions=$SUPP/ubsan.supp ${UBSAN_OPTIONS:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Ranks started by mpirun run without leak checks (memory errors are still caught there). OpenMPI keeps
# buffers of MPI_Init past MPI_Finalize, and its libraries have no frame pointers: the fast unwinder stops in
# them, so the reports name no library a suppression could match. The slow unwinder made the tests 10x slower.
# A shim first on PATH passes the option to the ranks (-x: OpenMPI refuses its env-list parameter beside the
# tests' own -x).
if [ "$name" = asan ] && command -v mpirun >/dev/null; then
  shims="$BUILD/sanitizer-shims"
  mkdir -p "$shims"
  printf '#!/bin/sh\nexec %s -x "ASAN_OPTIONS=$ASAN_OPTIONS detect_leaks=0" "$@"\n' "$(command -v mpirun)" > "$shims/mpirun"
  chmod +x "$shims/mpirun"
  export PATH="$shims:$PATH"
fi
ctest --test-dir "$BUILD" --output-on-failure -j "${RINGTRAIN_TEST_JOBS:-2}" "$@"
