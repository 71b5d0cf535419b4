#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest. The exit status is the
# result. Extra arguments go to ctest (e.g. scripts/test.sh -L unit, scripts/test.sh -R Config).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"

"$ROOT/scripts/install-deps.sh"
start=$(date +%s)
"$ROOT/scripts/build.sh"
built=$(date +%s)
echo "test.sh: build took $((built - start)) s" >&2

# mpirun refuses root unless told; the tests start ranks with it.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set +e
ctest --test-dir "$BUILD" --output-on-failure --timeout 600 -j "${RINGTRAIN_TEST_JOBS:-2}" "$@"
rc=$?
set -e
echo "test.sh: tests took $(( $(date +%s) - built )) s" >&2
exit $rc
