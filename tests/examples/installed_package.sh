#!/usr/bin/env bash
# The installed package as a user's own project meets it: `cmake --install` into a fresh prefix, then
# examples/CMakeLists.txt (find_package(ringtrain)) configured and built against that prefix, and its
# program run by the installed ringrun on 2 ranks, which must end with the same parameters.
#   tests/examples/installed_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD="$1"
SRC="$2"
WORK="$(mktemp -d /tmp/ringtrain-installed-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

step() {  # name command...: runs it with its output in a log, shown when it fails
  local name=$1
  shift
  "$@" > "$WORK/$name.log" 2>&1 || { echo "installed_package: $name failed: $*" >&2; cat "$WORK/$name.log" >&2; exit 1; }
}

step install cmake --install "$BUILD" --prefix "$WORK/prefix"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
# The dependencies are where the project's own build found them (scripts/gpu-check.sh points
# CMAKE_PREFIX_PATH at a LibTorch of its own and a Gloo unpacked beside the checkout).
parent_prefix=$(sed -n 's/^CMAKE_PREFIX_PATH:[A-Z]*=//p' "$BUILD/CMakeCache.txt" | head -1)
step configure cmake -S "$SRC/examples" -B "$WORK/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix${parent_prefix:+;$parent_prefix}" "${launcher[@]}"
step build cmake --build "$WORK/build"
step run "$WORK/prefix/bin/ringrun" --standalone --nproc-per-node 2 -- "$WORK/build/example_ddp_regression" 100
cat "$WORK/run.log"
ranks=$(grep -c "parameters' checksum" "$WORK/run.log" || true)
sums=$(grep -o "parameters' checksum .*" "$WORK/run.log" | sort -u | wc -l)
[ "$ranks" = 2 ] || { echo "installed_package: expected 2 ranks' last lines, found $ranks" >&2; exit 1; }
[ "$sums" = 1 ] || { echo "installed_package: the ranks ended with different parameters" >&2; exit 1; }
echo "installed_package: built against $WORK/prefix and ran on 2 ranks alike"
