#!/usr/bin/env bash
# Allreduce benchmark on this machine: ringtrain's ring vs the backend's own allreduce, nccl-tests style,
# for gloo (processes under ringrun) and MPI (processes under mpirun) at 2 and 4 ranks, then the
# torch.distributed gloo peer at 2 ranks. Prints every table. Builds first if needed.
#   scripts/bench-allreduce.sh                 # full sweep 4K..256M
#   scripts/bench-allreduce.sh --max-bytes 64M # extra arguments go to every allreduce_bench run
# Environment: RANKS="2 4", BACKENDS="gloo mpi", PEER=0 to skip the torch peer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"
PEER_SCRIPT="$ROOT/../shared/peers/allreduce_peer_torch.py"
RANKS="${RANKS:-2 4}"
BACKENDS="${BACKENDS:-gloo mpi}"

if [ ! -x "$BUILD/bin/allreduce_bench" ] || [ ! -x "$BUILD/bin/ringrun" ]; then
  RINGTRAIN_JOBS="${RINGTRAIN_JOBS:-1}" "$ROOT/scripts/build.sh"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

for backend in $BACKENDS; do
  for n in $RANKS; do
    echo
    echo "=== backend $backend, $n ranks ($(date +%H:%M:%S))"
    case "$backend" in
      gloo)
        "$BUILD/bin/ringrun" --standalone --nproc-per-node "$n" -- \
          "$BUILD/bin/allreduce_bench" --backend gloo "$@" ;;
      mpi)
        mpirun -np "$n" --allow-run-as-root --oversubscribe --bind-to none \
          -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$((29700 + n))" \
          "$BUILD/bin/allreduce_bench" --backend mpi "$@" ;;
      *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
  done
done

if [ "${PEER:-1}" != 0 ]; then
  echo
  echo "=== peer: torch.distributed gloo, 2 ranks ($PEER_SCRIPT)"
  if [ -f "$PEER_SCRIPT" ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 "$PEER_SCRIPT" --spawn 2
  else
    echo "skipped: $PEER_SCRIPT or /usr/bin/python3 with torch not found"
  fi
fi
