#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job on its embedded default.
# Extra arguments are passed on to the job (e.g. --set run.max_steps=100).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"

"$ROOT/scripts/install-deps.sh"
"$ROOT/scripts/build.sh"

cd "$ROOT"
"$BUILD/bin/ringtrain" config configs/default.yaml "$@"
