#!/usr/bin/env bash
# One SGNS training step on the reference workload (../shared/BENCHMARKS.md section 2) at one rank:
# ringtrain's fused step (sgns_step) beside the PyTorch eager peer (ddp_peer.py --sparse, no DDP),
# measured in the same invocation, and their ratio. Extra arguments go to sgns_step.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"
PEER="${RINGTRAIN_PEER:-$ROOT/../shared/peers/ddp_peer.py}"
[ -f "$PEER" ] || PEER="/work/shared/peers/ddp_peer.py"
BENCH="$BUILD/bin/sgns_step"
[ -x "$BENCH" ] || "$ROOT/scripts/build.sh" >/dev/null

ours_line="$("$BENCH" "$@")"
echo "$ours_line"
peer_out="$(/usr/bin/python3 "$PEER" --sparse --threads 1)"
echo "$peer_out"
ours="$(sed -n 's/^ringtrain sgns_step: \([0-9.]*\) pairs\/s.*/\1/p' <<<"$ours_line")"
peer="$(sed -n 's/^TOTAL world=1 (no DDP): \([0-9,]*\) samples\/s.*/\1/p' <<<"$peer_out" | tr -d ,)"
if [ -z "$ours" ] || [ -z "$peer" ]; then
  echo "bench-step: could not parse the figures" >&2
  exit 1
fi
awk -v o="$ours" -v p="$peer" 'BEGIN { printf "reference step, 1 rank: ringtrain %.0f pairs/s, PyTorch eager (sparse) %.0f pairs/s, ratio %.2fx\n", o, p, o / p }'
