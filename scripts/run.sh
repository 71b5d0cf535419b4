#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: product embeddings on the synthetic corpus
# (configs/product_embeddings.yaml, generated on first use), 2 ranks over Gloo under ringrun. Ends by
# printing HR@10, category agreement, and where the vectors and the picture are.
# Extra arguments go to the job, e.g. scripts/run.sh --set run.epochs=1 --set run.output_dir=runs/one-epoch
# (another directory: the default one holds the default run's checkpoints, which another run length is not).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build}/bin"
RANKS="${RINGTRAIN_RANKS:-2}"

"$ROOT/scripts/install-deps.sh"
"$ROOT/scripts/build.sh"

cd "$ROOT"
exec "$BIN/ringrun" --standalone --nproc-per-node "$RANKS" -- \
  "$BIN/ringtrain" train configs/product_embeddings.yaml "$@"
