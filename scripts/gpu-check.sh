#!/usr/bin/env bash
# One command for the GPU device machine (Ubuntu 24.04, PyTorch 2.x with CUDA, NCCL, OpenMPI, no Gloo,
# no network): builds ringtrain against the CUDA LibTorch, runs the GPU-labelled tests (NCCL at world
# size 1: NCCL refuses two ranks on one GPU) and the serving scorer's check on its CPU, the GPU benchmark against the PyTorch eager peer, the NCCL
# allreduce benchmark at world size 1, the multi-process CPU tests at up to 8 ranks, the scaling
# benchmark and the sparse overlap's A/B at 8 ranks. SCALING_RANKS, SCALING_STEPS, SCALING_ROUNDS and
# SCALING_SYNC_MODES set bench-scaling.sh's rank counts, STEPS, ROUNDS and SYNC_MODES, SCALING_SETS its SETS
# (ringtrain overrides, e.g. "ddp.steal=true run.deterministic=false"), SCALING_CPUS_B and SCALING_SETS_B its
# CPUS_B ("probe": the order bench-siblings found) and SETS_B. Logs go under $OUT
# (or ./gpu-check-logs): summary.txt and one log per phase, 8 files (the device tool brings back 8 at most).
# Opt-in phases, run only when GPU_CHECK_PHASES names them: bench-spin, bench-balance, bench-steal and
# bench-ab (alternating A/Bs of one setting at 8 ranks, below), bench-hugepages (run.huge_pages at 1 rank),
# bench-serve, bench-hugetlb (8 ranks, run.huge_pages off/on: with GPU_CHECK_HUGE_POOL set, shared tables on
# the pool's 2 MiB pages against 4 KiB ones), and bench-siblings (bench/cpu_pairs measures which vCPUs slow each other down, as a host
# core's two threads do, then 8 ranks with the CPUs shared out in id order against the order it found;
# SCALING_CPUS_B=probe then adds the scaling benchmark's "+cpus" rows in that order).
#
# Libraries the device image lacks travel as Debian packages: scripts/gpu-prepare.sh (run here, on the
# dev machine) downloads them into .device/debs and copies the peers into .device/peers; the device
# call carries .device. Budget: 8 minutes (GPU_CHECK_BUDGET); each phase has its own limit inside it.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-check-logs}"
mkdir -p "$OUT"
SYSROOT="$ROOT/.device/sysroot"
BUILD="$ROOT/build-gpu"
JOBS="$(nproc)"
START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET:-480}"  # seconds for the whole script: issue 8 asks for 8 minutes
elapsed() { echo "$(( $(date +%s) - START ))s"; }
log() { echo "== gpu-check [$(elapsed)] $*" | tee -a "$OUT/summary.txt"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  nproc
  # The CPU's model number and caches, to tell the lent machines apart: one session's three machines ran one
  # rank at 145k-277k pairs/s, and every one called its CPU "Intel(R) Xeon(R) Processor".
  lscpu | grep -E '^(Model name|Model|Stepping|L2 cache|L3 cache):' | tr -s ' ' | paste -sd ';'
  # Private tensors may get transparent huge pages where shared tables (memfd) cannot: one thing that can
  # make a rank over shared tables slower per row than one rank alone.
  echo "thp $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null), shmem $(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null)"
} > /tmp/gpu-check-machine.txt 2>&1
log "machine: $(tr '\n' ' ' < /tmp/gpu-check-machine.txt)"
# GPU_CHECK_HUGE_POOL=N reserves N 2 MiB pages (sysctl vm.nr_hugepages; root, as on the device machines) for
# the tables ranks share, which get no transparent huge pages where shmem_enabled is "never". The reference
# workload's two tables need 26.
if [ -n "${GPU_CHECK_HUGE_POOL:-}" ]; then
  echo "$GPU_CHECK_HUGE_POOL" > /proc/sys/vm/nr_hugepages 2>/dev/null ||
    log "cannot write /proc/sys/vm/nr_hugepages (not root?)"
  log "huge-page pool: $(grep -E 'HugePages_(Total|Free)' /proc/meminfo | tr -s ' ' | paste -sd ' ')"
fi

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
# ringtrain's CUDA kernels need nvcc: CMake looks on PATH only.
if ! command -v nvcc >/dev/null; then
  for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    [ -x "$dir/nvcc" ] && { export PATH="$dir:$PATH"; break; }
  done
fi
log "nvcc: $(command -v nvcc || echo 'not found: the model runs ATen ops on the GPU') $(nvcc --version 2>/dev/null | tail -1)"

# 2. Build what runs here: everything but the unit-test binaries (CI runs those; on this machine they would
# only cost build time).
GLOO=OFF
[ -f "$SYSROOT/usr/share/cmake/Gloo/GlooConfig.cmake" ] && GLOO=ON
log "configure (gloo=$GLOO)"
mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$SYSROOT/usr;$TORCH_PREFIX" -DRINGTRAIN_WITH_GLOO=$GLOO -DRINGTRAIN_WITH_NCCL=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_POLICY_VERSION_MINIMUM=3.5 > "$BUILD/configure.log" 2>&1 ||
  { log "configure FAILED"; tail -40 "$BUILD/configure.log" | tee -a "$OUT/summary.txt"; exit 1; }
grep -E "ringtrain (backends|CUDA kernels)|CUDA compiler|Caffe2: CUDA" "$BUILD/configure.log" | tee -a "$OUT/summary.txt"
# GPU_CHECK_TARGETS="ringtrain_cli ringrun" builds only those (a call that runs only bench-scaling needs no more).
TARGETS=${GPU_CHECK_TARGETS:-$(cmake --build "$BUILD" --target help 2>/dev/null | sed -n 's/^\([A-Za-z0-9_.-]*\): phony$/\1/p' |
  grep -v -E '^(test_.*_unit|test|all|clean|help|install|edit_cache|rebuild_cache|list_install_components|build.ninja)$|\.a$')}
log "build with $JOBS jobs: $(echo $TARGETS | wc -w) targets"
# -k 0: on a failure, build everything else too, so one call shows every error and still runs what built.
# The build may use the budget but for a minute (on the H200 machine it took 36-51 s).
rc=0
BUILD_LIMIT=$(( BUDGET - ($(date +%s) - START) - 60 ))
(( BUILD_LIMIT < 60 )) && BUILD_LIMIT=60
if ! timeout "$BUILD_LIMIT" cmake --build "$BUILD" -j "$JOBS" --target $TARGETS -- -k 0 > "$OUT/build.log" 2>&1; then
  rc=1
  log "build FAILED or timed out (continuing with what built)"
  grep -m30 -A6 "error" "$OUT/build.log" | tee -a "$OUT/summary.txt"
fi
log "build done"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Each phase gets at most its own limit and what is left of the whole budget; a phase that would get under
# 20 s is skipped (and said so), so the script ends inside the budget (configure is not limited: it takes
# seconds).
# GPU_CHECK_PHASES picks phases by the names of their logs (default: all).
PHASES="${GPU_CHECK_PHASES:-test-gpu bench-gpu bench-allreduce-nccl test-multiprocess bench-scaling bench-overlap}"
phase() {  # phase NAME LIMIT_SECONDS LOG TAIL_LINES COMMAND...
  local name=$1 limit=$2 logfile=$3 lines=$4
  shift 4
  [[ " $PHASES " == *" $(basename "$logfile" .log) "* ]] || return 0
  local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then
    log "$name: SKIPPED (${left}s of the ${BUDGET}s budget left)"
    rc=1
    return
  fi
  log "$name (limit ${limit}s)"
  # Appending: a phase whose programs reopen their stderr (tee -a /dev/stderr) then cannot write over what
  # the phase already logged.
  : > "$logfile"
  timeout "$limit" "$@" >> "$logfile" 2>&1 || { rc=1; log "$name: FAILED or timed out (see $(basename "$logfile"))"; }
  tail -"$lines" "$logfile" | tee -a "$OUT/summary.txt"
}
# In order of what matters most if time runs short.
# With them, the serving scorer's check on this machine's CPU: its 8-bit pass (AVX512-VNNI, where the CPU has
# it) must agree with the fp32 scan at every batch size, or serve_bench exits 1.
phase "gpu tests, then the exact scorer on this CPU" 200 "$OUT/test-gpu.log" 12 \
  bash -c 'ctest --test-dir "$1" -L gpu --output-on-failure --timeout 120; rc=$?
           "$1/bin/serve_bench" scoring --items 100000 --dim 64 || rc=1; exit $rc' _ "$BUILD"
phase "gpu benchmark" 150 "$OUT/bench-gpu.log" 10 \
  env PEERS="$ROOT/.device/peers" RINGTRAIN_BUILD_DIR="$BUILD" "$ROOT/scripts/bench-gpu.sh"
# NCCL allreduce at world size 1 (issue 3), nccl-tests style, data checked: ncclAllReduce on this GPU.
phase "nccl allreduce benchmark, 1 GPU" 60 "$OUT/bench-allreduce-nccl.log" 6 \
  "$BUILD/bin/allreduce_bench" --backend nccl --max-bytes 256M
# The multi-process tests (real ranks: launcher, comm, training) on the 16 cores, up to 8 ranks each.
phase "multiprocess tests, up to ${RINGTRAIN_TEST_MAX_RANKS:-8} ranks" 250 "$OUT/test-multiprocess.log" 5 \
  env RINGTRAIN_TEST_MAX_RANKS="${RINGTRAIN_TEST_MAX_RANKS:-8}" \
  ctest --test-dir "$BUILD" -L multiprocess -j 4 --output-on-failure --timeout 120
# Which vCPUs are one host core's two threads (the guest's topology may not say), and 8 ranks with each
# rank's two CPUs such a pair against the id order. The order found goes to the scaling phase when
# SCALING_CPUS_B=probe.
rm -f "$OUT/bench-siblings.log"  # PROBED_ORDER below reads this call's, never an earlier call's
if [ "$GLOO" = ON ]; then
  phase "which CPUs slow each other down, then 8 ranks on them in id order against pairs side by side" 210 \
    "$OUT/bench-siblings.log" 8 bash -c '
      probe=$("$1/bin/cpu_pairs") || exit 1
      echo "$probe"
      order=$(sed -n "s/^order: //p" <<< "$probe")
      ids=$(python3 -c "import os; print(\",\".join(map(str, sorted(os.sched_getaffinity(0)))))")
      [ "$order" != "$ids" ] || { echo "the order found is the id order (no pairs, or pairs that are neighbours there already): no layout A/B"; exit 0; }
      echo
      RINGTRAIN_BUILD_DIR="$1" "$2/scripts/bench-ab.sh" --cpus "$ids" "$order" 8' _ "$BUILD" "$ROOT"
fi
PROBED_ORDER=""  # the probe's order where it differs from the id order
if [[ " $PHASES " == *" bench-siblings "* ]] && grep -q "^reference workload" "$OUT/bench-siblings.log" 2>/dev/null; then
  PROBED_ORDER=$(sed -n 's/^order: //p' "$OUT/bench-siblings.log")
fi
# Multi-process CPU training at 1..8 ranks against PyTorch DDP (issue 10's scaling table), sparse rows
# all-gathered and in shared tables; 50 timed steps (the script defaults to 200) keep the peer runs short.
if [ "$GLOO" = ON ]; then
  cpus_b=${SCALING_CPUS_B:-}
  if [ "$cpus_b" = probe ]; then
    cpus_b=$PROBED_ORDER
    [ -n "$cpus_b" ] || log "SCALING_CPUS_B=probe: bench-siblings gave no order other than the id order (or did not run): no +cpus rows"
  fi
  phase "scaling benchmark, CPU ranks ${SCALING_RANKS:-1 2 4 8}${cpus_b:+, and with --cpus $cpus_b}" \
    $([ -n "$cpus_b" ] && echo 420 || echo 300) "$OUT/bench-scaling.log" $([ -n "$cpus_b" ] && echo 16 || echo 11) \
    env STEPS="${SCALING_STEPS:-50}" ROUNDS="${SCALING_ROUNDS:-1}" SYNC_MODES="${SCALING_SYNC_MODES:-allgather shared}" \
    SETS="${SCALING_SETS:-}" CPUS_B="$cpus_b" SETS_B="${SCALING_SETS_B:-}" \
    PEERS="$ROOT/.device/peers" RINGTRAIN_BUILD_DIR="$BUILD" "$ROOT/scripts/bench-scaling.sh" ${SCALING_RANKS:-1 2 4 8}
fi
# ddp.overlap_sparse off against on at 8 ranks, alternating (the overlap needs a CPU to spare per rank,
# which the dev machine's 2 cores do not give).
if [ "$GLOO" = ON ]; then
  phase "sparse overlap off/on, 8 ranks" 120 "$OUT/bench-overlap.log" 6 \
    env RINGTRAIN_BUILD_DIR="$BUILD" "$ROOT/scripts/bench-overlap.sh" 8
fi
# Opt-in A/Bs, only when named in GPU_CHECK_PHASES: one setting's two values, alternating
# (scripts/bench-ab.sh). ab_phase LOG TITLE SAME_VECTORS SETS RANKS KEY A B (SETS: overrides for both sides).
# GPU_CHECK_AB_CPUS=ORDER runs both sides of every A/B with ringrun --cpus ORDER ("probe": bench-siblings's).
ab_phase() {
  [ "$GLOO" = ON ] && [[ " ${GPU_CHECK_PHASES:-} " == *" $1 "* ]] || return 0
  local cpus=${GPU_CHECK_AB_CPUS:-}
  if [ "$cpus" = probe ]; then
    cpus=$PROBED_ORDER
    [ -n "$cpus" ] || log "GPU_CHECK_AB_CPUS=probe: bench-siblings gave no order other than the id order (or did not run): $1 in id order"
  fi
  phase "$2${cpus:+ (--cpus $cpus)}" 150 "$OUT/$1.log" 6 env RINGTRAIN_BUILD_DIR="$BUILD" SAME_VECTORS="$3" SETS="$4" \
    CPUS="$cpus" "$ROOT/scripts/bench-ab.sh" "${@:6}" "$5"
}
# The waits' old 50 us poll against auto (comm.spin_us).
ab_phase bench-spin "waits polling 50 us against auto, 8 ranks" 1 "" 8 comm.spin_us 50 -1
# Tables on ordinary pages against huge pages, at 1 rank: the private tables they apply to (shared ones are
# shmem, which gets none there).
ab_phase bench-hugepages "tables on huge pages off/on, 1 rank" 1 "" 1 run.huge_pages false true
# Shared tables on the pool's 2 MiB pages against 4 KiB ones, 8 ranks (GPU_CHECK_HUGE_POOL must fill the pool;
# off, both sides run on 4 KiB pages and the log says so).
ab_phase bench-hugetlb "tables on huge pages off/on, 8 ranks sharing them" 1 "" 8 run.huge_pages false true
# ddp.balance off against on (its vectors differ by float rounding: the same pairs, summed in another order;
# so both sides run with run.deterministic false, which balance needs and which changes nothing else).
ab_phase bench-balance "work balance off/on, 8 ranks" 0 run.deterministic=false 8 ddp.balance false true
# ddp.steal off against on (likewise the same pairs, summed in another order).
ab_phase bench-steal "work stealing off/on, 8 ranks" 0 run.deterministic=false 8 ddp.steal false true
# Any setting, from GPU_CHECK_AB="KEY A B" (for example "loader.workers 2 1"); GPU_CHECK_AB_SAME=0 for a setting
# whose vectors may differ; GPU_CHECK_AB_SETS="k=v ..." for overrides on both sides.
ab_phase bench-ab "A/B ${GPU_CHECK_AB:-(GPU_CHECK_AB unset)}, 8 ranks" "${GPU_CHECK_AB_SAME:-1}" "${GPU_CHECK_AB_SETS:-}" 8 ${GPU_CHECK_AB:-}
# Only when named in GPU_CHECK_PHASES (its log would be a ninth file, and the tool brings back 8): the
# serving benchmark on a machine where wrk and the server need not share 2 cores (wrk travels as a Debian
# package, unpacked into the sysroot).
if [[ " ${GPU_CHECK_PHASES:-} " == *" bench-serve "* ]]; then
  phase "serving benchmark, batching off/on" 90 "$OUT/bench-serve.log" 8 \
    env PATH="$SYSROOT/usr/bin:$PATH" RINGTRAIN_BUILD_DIR="$BUILD" "$ROOT/scripts/bench-serve.sh"
fi
log "done rc=$rc"
exit $rc
