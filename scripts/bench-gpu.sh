#!/usr/bin/env bash
# GPU benchmark (../shared/BENCHMARKS.md section 3), same card, same run: ringtrain's SGNS step against
# the PyTorch eager peer, plain (dense gradients) and --sparse. ringtrain runs with its CUDA kernels, with
# its ATen formulation (--aten), and wrapped in DistributedDataParallel over NCCL at world size 1. The card's
# copy bandwidth, measured here too, puts the kernels' memory traffic in proportion. Run on the device
# machine by scripts/gpu-check.sh (PEERS points at the carried peers there).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build-gpu}/bin"
PEERS="${PEERS:-$ROOT/../shared/peers}"
SHAPE=(--items 1000000 --dim 128 --batch 8192 --negatives 5)
# ringtrain's steps take tens of microseconds: 10x the peer's steps keep each timed span well above a
# millisecond-scale timer and launch jitter. Both report a rate.
PEER_STEPS="${STEPS:-200}"
OUR_STEPS="${OUR_STEPS:-$((PEER_STEPS * 10))}"
pairs() { sed -n 's/.* \([0-9.]*\) M pairs\/s.*/\1/p' | tail -1; }

peer_dense=$(python3 "$PEERS/sgns_gpu_peer.py" "${SHAPE[@]}" --steps "$PEER_STEPS" 2>&1 | tee -a /dev/stderr | pairs)
peer_sparse=$(python3 "$PEERS/sgns_gpu_peer.py" "${SHAPE[@]}" --steps "$PEER_STEPS" --sparse 2>&1 | tee -a /dev/stderr | pairs)
# BENCH_GPU_ARGS adds flags to ringtrain's runs, e.g. --phases (where a step's time goes).
EXTRA=(${BENCH_GPU_ARGS:-})
ours=$("$BIN/sgns_gpu" "${SHAPE[@]}" --steps "$OUR_STEPS" "${EXTRA[@]}" 2>&1 | tee -a /dev/stderr | pairs)
ours_aten=$("$BIN/sgns_gpu" "${SHAPE[@]}" --steps "$OUR_STEPS" --aten "${EXTRA[@]}" 2>&1 | tee -a /dev/stderr | pairs)
ours_ddp=$("$BIN/sgns_gpu" "${SHAPE[@]}" --steps "$OUR_STEPS" --ddp "${EXTRA[@]}" 2>&1 | tee -a /dev/stderr | pairs)
# Device-to-device copy of 2 GiB, bytes read + written per second: the card's practical memory ceiling.
copy_gbs=$(python3 - <<'PY' 2>&1 | tee -a /dev/stderr | sed -n 's/^copy \([0-9.]*\) GB\/s$/\1/p'
import torch
src = torch.empty(2**29, dtype=torch.float32, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    dst.copy_(src)
end.record()
torch.cuda.synchronize()
print(f"copy {2 * src.numel() * 4 * 10 / (start.elapsed_time(end) / 1e3) / 1e9:.0f} GB/s")
PY
)
missing=0
for v in "$peer_dense" "$peer_sparse" "$ours" "$ours_aten" "$ours_ddp" "$copy_gbs"; do [ -n "$v" ] || missing=1; done
python3 - "$peer_dense" "$peer_sparse" "$ours" "$ours_aten" "$ours_ddp" "$copy_gbs" <<'PY'
import sys
pd, ps, o, oa, od, copy = (float(x or 0) for x in sys.argv[1:])
print(f"{'':34s} {'M pairs/s':>10s} {'vs dense peer':>14s} {'vs sparse peer':>15s}")
rows = (("pytorch eager (dense)", pd), ("pytorch eager (--sparse)", ps), ("ringtrain (CUDA kernels)", o),
        ("ringtrain (ATen ops, --aten)", oa), ("ringtrain + DDP(nccl, 1 GPU)", od))
for name, v in rows:
    r = lambda b: f"{v / b:.1f}x" if b > 0 else "-"
    print(f"{name:34s} {v:10.2f} {r(pd):>14s} {r(ps):>15s}")
print("goal: ringtrain >= 10x the dense peer and >= 3x the sparse peer")
# Rows of 128 floats (512 B) the kernel path moves per pair, counted from its design (no cache hits):
# score reads 1 + 6, backward reads 7 and writes 7 gradient rows, SGD reads those 7 and reads and writes 7
# table rows: 42 rows.
per_pair = 42 * 512
if o > 0 and copy > 0:
    gbs = o * 1e6 * per_pair / 1e9
    print(f"kernel path: {per_pair} B counted per pair -> {gbs:.0f} GB/s, {100 * gbs / copy:.0f}% of the "
          f"{copy:.0f} GB/s device copy measured here")
PY
# A run that printed no figure (crashed, or missing) fails the benchmark instead of entering the table as 0.
if [ "$missing" = 1 ]; then
  echo "bench-gpu: a run printed no figure (see its output above)" >&2
  exit 1
fi
