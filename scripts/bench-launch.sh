#!/usr/bin/env bash
# Launch overhead: from starting the launcher to its exit, for 4 ranks that join the job's store, meet
# every other rank there and leave. ringrun runs build/bin/store_join (bench/store_join.cc); Debian's
# torchrun runs the equivalent Python program (init_process_group("gloo") + destroy_process_group()).
# Prints the median of RUNS runs of each (default 5 and 3) and the ratio. Goal: ringrun <= 1 s.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BIN:-$ROOT/build/bin}"
NPROC="${NPROC:-4}"
RINGRUN_RUNS="${RINGRUN_RUNS:-5}"
TORCHRUN_RUNS="${TORCHRUN_RUNS:-3}"
PYTHON=/usr/bin/python3

for exe in ringrun store_join; do
  [ -x "$BIN/$exe" ] || { echo "bench-launch: $BIN/$exe is missing; run scripts/build.sh" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/join.py" <<'PY'
import torch.distributed as dist
dist.init_process_group("gloo")
dist.destroy_process_group()
PY

now_ns() { date +%s%N; }

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

time_runs() {  # time_runs RUNS COMMAND... -> seconds per run, one a line
  local runs="$1"; shift
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(now_ns)
    "$@" > "$work/out" 2>&1 || { echo "bench-launch: '$*' failed:" >&2; cat "$work/out" >&2; exit 1; }
    t1=$(now_ns)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b - a) / 1e9}'
  done
}

ours=$(time_runs "$RINGRUN_RUNS" "$BIN/ringrun" --nproc-per-node "$NPROC" --standalone -- "$BIN/store_join" | median)
if "$PYTHON" -c 'import torch.distributed' 2>/dev/null; then
  peer=$(time_runs "$TORCHRUN_RUNS" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
           --redirects 1 --tee 1 "$work/join.py" | median)
else
  peer=""
fi

printf '%-58s %10s\n' "launch $NPROC ranks that meet in the store, start to exit" "seconds"
printf '%-58s %10s\n' "ringrun --standalone (bench/store_join, median of $RINGRUN_RUNS)" "$ours"
if [ -n "$peer" ]; then
  printf '%-58s %10s\n' "torchrun --standalone (gloo init+destroy, median of $TORCHRUN_RUNS)" "$peer"
  awk -v a="$ours" -v b="$peer" 'BEGIN {printf "%-58s %9.1fx\n", "torchrun / ringrun", b / a}'
else
  echo "torchrun: /usr/bin/python3 has no torch (apt-get install python3-torch); peer not measured"
fi
awk -v a="$ours" 'BEGIN {exit !(a <= 1.0)}' && echo "goal ringrun <= 1 s: met" || echo "goal ringrun <= 1 s: NOT met"
