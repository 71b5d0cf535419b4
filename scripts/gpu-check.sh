#!/usr/bin/env bash
# One command for the GPU device machine (Ubuntu 24.04, PyTorch 2.x with CUDA, NCCL, OpenMPI, no Gloo,
# no network): builds ringtrain against the CUDA LibTorch, runs the GPU-labelled tests (NCCL at world
# size 1: NCCL refuses two ranks on one GPU), the NCCL allreduce benchmark at world size 1, the
# multi-process CPU tests at 8 ranks, and the GPU benchmark against the PyTorch eager peer. Logs go under $OUT (or ./gpu-check-logs).
#
# Libraries the device image lacks travel as Debian packages: scripts/gpu-prepare.sh (run here, on the
# dev machine) downloads them into .device/debs and copies the peers into .device/peers; the device
# call carries .device. Budget: about 8 minutes (each phase has its own timeout).
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
  # Gloo's CMake targets name their library by absolute path: point them into the sysroot.
  sed -i "s#\"/usr/lib/#\"$SYSROOT/usr/lib/#g" "$SYSROOT"/usr/share/cmake/Gloo/*.cmake 2>/dev/null
fi
export LD_LIBRARY_PATH="$SYSROOT/usr/lib/x86_64-linux-gnu:$SYSROOT/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cpp-httplib's own .pc file points at /usr and requires openssl/brotli .pc files the image may lack:
# describe the carried copy directly.
mkdir -p "$SYSROOT/pc"
cat > "$SYSROOT/pc/cpp-httplib.pc" <<PC
Name: cpp-httplib
Description: carried from Debian's libcpp-httplib-dev
Version: 0.11.4
Libs: -L$SYSROOT/usr/lib/x86_64-linux-gnu -lcpp-httplib
Cflags: -I$SYSROOT/usr/include -DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT -DCPPHTTPLIB_BROTLI_SUPPORT
PC
export PKG_CONFIG_PATH="$SYSROOT/pc"
TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"

# 2. Build. Gloo is off unless its carried package is there (issue 10 carries it for the 8-rank runs).
GLOO=OFF
[ -f "$SYSROOT/usr/share/cmake/Gloo/GlooConfig.cmake" ] && GLOO=ON
log "configure (gloo=$GLOO)"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$SYSROOT/usr;$TORCH_PREFIX" -DRINGTRAIN_WITH_GLOO=$GLOO -DRINGTRAIN_WITH_NCCL=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 || { log "configure FAILED"; tail -40 "$OUT/configure.log"; exit 1; }
log "build with $JOBS jobs"
# -k 0: on a failure, build everything else too, so one call shows every error and still runs what built.
if ! cmake --build "$BUILD" -j "$JOBS" -- -k 0 > "$OUT/build.log" 2>&1; then
  log "build FAILED (continuing with what built)"
  grep -m30 -A6 "error:" "$OUT/build.log" | tee -a "$OUT/summary.txt"
fi
log "build done"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rc=0
# 3. GPU tests.
log "gpu tests"
timeout 200 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 120 > "$OUT/test-gpu.log" 2>&1 || rc=1
tail -5 "$OUT/test-gpu.log" | tee -a "$OUT/summary.txt"
# 3b. NCCL allreduce at world size 1 (issue 3), nccl-tests style, data checked: ncclAllReduce on this GPU.
log "nccl allreduce benchmark, 1 GPU"
timeout 90 "$BUILD/bin/allreduce_bench" --backend nccl --max-bytes 256M > "$OUT/bench-allreduce-nccl.log" 2>&1 || rc=1
tail -6 "$OUT/bench-allreduce-nccl.log" | tee -a "$OUT/summary.txt"
# 4. GPU benchmark: ringtrain against the PyTorch eager peer, same card, same run.
log "gpu benchmark"
PEERS="$ROOT/.device/peers" RINGTRAIN_BUILD_DIR="$BUILD" timeout 150 "$ROOT/scripts/bench-gpu.sh" \
  > "$OUT/bench-gpu.log" 2>&1 || rc=1
tail -8 "$OUT/bench-gpu.log" | tee -a "$OUT/summary.txt"
# 5. Multi-process CPU training at 1..8 ranks against PyTorch DDP (issue 10's scaling table).
if [ "$GLOO" = ON ]; then
  log "scaling benchmark, CPU ranks ${SCALING_RANKS:-1 2 4 8}"
  # 50 timed steps (the script defaults to 200) keep the peer runs inside this phase's 240 s.
  STEPS="${SCALING_STEPS:-50}" PEERS="$ROOT/.device/peers" RINGTRAIN_BUILD_DIR="$BUILD" timeout 240 \
    "$ROOT/scripts/bench-scaling.sh" \
    ${SCALING_RANKS:-1 2 4 8} > "$OUT/bench-scaling.log" 2>&1 || rc=1
  tail -8 "$OUT/bench-scaling.log" | tee -a "$OUT/summary.txt"
fi
# 6. The multi-process tests (real ranks: launcher, comm, training) on the 16 cores.
log "multiprocess tests"
timeout 150 ctest --test-dir "$BUILD" -L multiprocess -j 8 --output-on-failure --timeout 120 \
  > "$OUT/test-multiprocess.log" 2>&1 || rc=1
tail -5 "$OUT/test-multiprocess.log" | tee -a "$OUT/summary.txt"
log "done rc=$rc"
exit $rc
