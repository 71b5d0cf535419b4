#!/usr/bin/env bash
# One command for the GPU device machine (Ubuntu 24.04, PyTorch 2.x with CUDA, NCCL, OpenMPI, no Gloo,
# no network): builds ringtrain against the CUDA LibTorch, runs the GPU-labelled tests (NCCL at world
# size 1: NCCL refuses two ranks on one GPU), the multi-process CPU tests at 8 ranks, and the GPU
# benchmark against the PyTorch eager peer. Logs go under $OUT (or ./gpu-check-logs).
#
# Libraries the device image lacks travel as Debian packages: scripts/gpu-prepare.sh (run here, on the
# dev machine) downloads them into .device/debs and copies the peers into .device/peers; the device
# call carries .device. Budget: about 8 minutes.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-check-logs}"
mkdir -p "$OUT"
SYSROOT="$ROOT/.device/sysroot"
BUILD="$ROOT/build-gpu"
JOBS="$(nproc)"
START=$(date +%s)
elapsed() { echo "$(( $(date +%s) - START ))s"; }
log() { echo "== gpu-check [$(elapsed)] $*" | tee -a "$OUT/summary.txt"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  nproc
} > "$OUT/machine.txt" 2>&1
log "machine: $(tr '\n' ' ' < "$OUT/machine.txt")"

# 1. Libraries from Debian packages, unpacked into a private sysroot.
if [ -d "$ROOT/.device/debs" ]; then
  mkdir -p "$SYSROOT"
  for deb in "$ROOT"/.device/debs/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
fi
export LD_LIBRARY_PATH="$SYSROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"

# 2. Build. Gloo is off unless its carried package is there (issue 10 carries it for the 8-rank runs).
GLOO=OFF
[ -f "$SYSROOT/usr/share/cmake/Gloo/GlooConfig.cmake" ] && GLOO=ON
log "configure (gloo=$GLOO)"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$SYSROOT/usr;$TORCH_PREFIX" -DRINGTRAIN_WITH_GLOO=$GLOO -DRINGTRAIN_WITH_NCCL=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 || { log "configure FAILED"; tail -40 "$OUT/configure.log"; exit 1; }
log "build with $JOBS jobs"
cmake --build "$BUILD" -j "$JOBS" > "$OUT/build.log" 2>&1 || { log "build FAILED"; grep -m20 -B2 -A10 "error" "$OUT/build.log"; exit 1; }
log "build done"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rc=0
# 3. GPU tests.
log "gpu tests"
ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 120 > "$OUT/test-gpu.log" 2>&1 || rc=1
tail -5 "$OUT/test-gpu.log" | tee -a "$OUT/summary.txt"
# 4. Multi-process CPU tests at 8 ranks.
log "multiprocess tests at 8 ranks"
RINGTRAIN_TEST_RANKS=8 ctest --test-dir "$BUILD" -L multiprocess -j 4 --output-on-failure --timeout 300 \
  > "$OUT/test-multiprocess.log" 2>&1 || rc=1
tail -5 "$OUT/test-multiprocess.log" | tee -a "$OUT/summary.txt"
# 5. GPU benchmark: ringtrain against the PyTorch eager peer, same card, same run.
if [ -x "$ROOT/scripts/bench-gpu.sh" ]; then
  log "gpu benchmark"
  PEERS="$ROOT/.device/peers" "$ROOT/scripts/bench-gpu.sh" 2>&1 | tee "$OUT/bench-gpu.log" | tail -20 | tee -a "$OUT/summary.txt"
fi
log "done rc=$rc"
exit $rc
