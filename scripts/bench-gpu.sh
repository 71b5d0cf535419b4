#!/usr/bin/env bash
# GPU benchmark (../shared/BENCHMARKS.md section 3), same card, same run: ringtrain's SGNS step against
# the PyTorch eager peer, plain (dense gradients) and --sparse. Run on the device machine by
# scripts/gpu-check.sh (PEERS points at the carried peers there).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build-gpu}/bin"
PEERS="${PEERS:-$ROOT/../shared/peers}"
ARGS=(--items 1000000 --dim 128 --batch 8192 --negatives 5 --steps "${STEPS:-200}")
pairs() { sed -n 's/.* \([0-9.]*\) M pairs\/s.*/\1/p' | tail -1; }

peer_dense=$(python3 "$PEERS/sgns_gpu_peer.py" "${ARGS[@]}" 2>&1 | tee /dev/stderr | pairs)
peer_sparse=$(python3 "$PEERS/sgns_gpu_peer.py" "${ARGS[@]}" --sparse 2>&1 | tee /dev/stderr | pairs)
ours=$("$BIN/sgns_gpu" "${ARGS[@]}" 2>&1 | tee /dev/stderr | pairs)
ours_ddp=$("$BIN/sgns_gpu" "${ARGS[@]}" --ddp 2>&1 | tee /dev/stderr | pairs)
python3 - "$peer_dense" "$peer_sparse" "$ours" "$ours_ddp" <<'PY'
import sys
pd, ps, o, od = (float(x or 0) for x in sys.argv[1:])
print(f"{'':28s} {'M pairs/s':>10s} {'vs dense peer':>14s} {'vs sparse peer':>15s}")
for name, v in (("pytorch eager (dense)", pd), ("pytorch eager (--sparse)", ps), ("ringtrain", o), ("ringtrain + DDP(nccl, 1 GPU)", od)):
    r = lambda b: f"{v / b:.1f}x" if b > 0 else "-"
    print(f"{name:28s} {v:10.2f} {r(pd):>14s} {r(ps):>15s}")
print("goal: ringtrain >= 10x the dense peer and >= 3x the sparse peer")
PY
