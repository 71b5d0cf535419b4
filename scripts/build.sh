#!/usr/bin/env bash
# Configures (once) and builds ringtrain into build/ (or $RINGTRAIN_BUILD_DIR) with Ninja and ccache.
# Extra arguments are passed to cmake at configure time, e.g. scripts/build.sh -DRINGTRAIN_WITH_MPI=OFF.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"
JOBS="${RINGTRAIN_JOBS:-$(nproc)}"

export CCACHE_BASEDIR="$ROOT"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

if [ ! -f "$BUILD/build.ninja" ] || [ $# -gt 0 ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE="${RINGTRAIN_BUILD_TYPE:-Release}" "$@"
fi
cmake --build "$BUILD" -j "$JOBS"
