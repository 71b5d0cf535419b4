#!/usr/bin/env bash
# One setting's two values against each other on the reference workload (../shared/BENCHMARKS.md section 2)
# with shared tables, in alternating runs of one invocation (a shared machine drifts: neighbours compare,
# distant runs do not). Prints, per run, pairs/s, the median step, the sparse sync left on the step with the
# part the helper thread did during backward, and how long rank 0's waits polled; then the means and B/A,
# and whether the two values' exported vectors are identical.
#   scripts/bench-ab.sh KEY A B [RANKS]               # RANKS default 2; the H100 machine: 8
#   scripts/bench-ab.sh ddp.overlap_sparse false true 8
#   scripts/bench-ab.sh comm.spin_us 50 -1 8          # the old 50 us waits against auto
#   scripts/bench-ab.sh --cpus 0-15 0,8,1,9,2,10,3,11,4,12,5,13,6,14,7,15 8   # a KEY starting with -- is a ringrun option
# Environment: ROUNDS (pairs of runs, default 3), STEPS (steps per run, default 160, the first 10 not
# counted), BIND_TO (ringrun --bind-to, default cores), SAME_VECTORS (default 1: exit 1 when the vectors
# differ, as they must not for a setting of how a job runs; 0 for a setting that changes the arithmetic),
# SETS="key=value ..." (more ringtrain --set overrides for both sides, e.g. run.deterministic=false, which
# ddp.balance and ddp.steal true need), HOG_CPU=N (a busy loop pinned to CPU N through every run: the rank
# bound there under --bind-to cores is persistently slower, e.g. HOG_CPU=1 with 2 ranks on 2 CPUs), CPUS=ORDER
# (ringrun --cpus for both sides: the CPUs shared out in that order, e.g. bench/cpu_pairs's).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build}/bin"
[ $# -ge 3 ] || { echo "usage: $0 KEY A B [RANKS]" >&2; exit 2; }
KEY=$1 A=$2 B=$3
RANKS="${4:-2}"
ROUNDS="${ROUNDS:-3}"
STEPS="${STEPS:-160}"
BIND_TO="${BIND_TO:-cores}"
LAUNCH_ARGS=()
[ -n "${CPUS:-}" ] && LAUNCH_ARGS=(--cpus "$CPUS")
if [ -n "${CPUS:-}" ] && [ "$KEY" = --cpus ]; then
  echo "CPUS and a KEY of --cpus both give ringrun --cpus: give one" >&2
  exit 2
fi
EXTRA_SETS=()
read -r -a sets <<< "${SETS:-}"  # split on spaces only: a value is never glob-expanded
for kv in "${sets[@]}"; do EXTRA_SETS+=(--set "$kv"); done
[ -x "$BIN/ringtrain" ] || "$ROOT/scripts/build.sh" >/dev/null
WORK="$(mktemp -d /tmp/ringtrain-ab-XXXXXX)"
HOG=""
trap 'rm -rf "$WORK"; [ -z "$HOG" ] || kill "$HOG"' EXIT
if [ -n "${HOG_CPU:-}" ]; then
  taskset -c "$HOG_CPU" sh -c 'while :; do :; done' &
  HOG=$!
fi
"$BIN/ringtrain" gen-data "$ROOT/configs/bench_reference.yaml" --out "$WORK/data" >/dev/null

echo "reference workload, $RANKS ranks, shared tables, ringrun --bind-to $BIND_TO${CPUS:+ --cpus $CPUS}, $STEPS steps per run (10 warm-up)${SETS:+, --set $SETS}${HOG_CPU:+, CPU $HOG_CPU kept busy}: $KEY $A (A) against $B (B)"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    value=$A
    [ "$side" = B ] && value=$B
    out="$WORK/$round-$side"
    launcher_side=("${LAUNCH_ARGS[@]}") job_side=(--set "$KEY=$value")
    [[ "$KEY" == --* ]] && launcher_side=("${LAUNCH_ARGS[@]}" "$KEY" "$value") job_side=()
    "$BIN/ringrun" --standalone --nproc-per-node "$RANKS" --bind-to "$BIND_TO" "${launcher_side[@]}" -- "$BIN/ringtrain" train \
      "$ROOT/configs/bench_reference.yaml" --set "data.corpus=$WORK/data/sequences.txt" --set "run.output_dir=$out" \
      --set "run.max_steps=$STEPS" --set log.every_steps=10 --set checkpoint.every_steps=0 \
      --set ddp.sparse_sync=shared --set eval.max_queries=20 "${EXTRA_SETS[@]}" "${job_side[@]}" > "$out.log" 2>&1 ||
      { echo "ringtrain failed ($KEY=$value):" >&2; tail -20 "$out.log" >&2; exit 1; }
    python3 - "$out/metrics.jsonl" "$out.log" "$round" "$side" "$value" <<'PY'
import json, re, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
pairs = [r["window_pairs_per_s"] for r in lines if "loss" in r][1:]  # the first window holds the warm-up
steps = [r["step_ms"] for r in lines if "step_ms" in r][10:]
log = open(sys.argv[2]).read()
m = re.search(r"rank 0\].*mean per step: .*sparse sync ([0-9.]+) ms \(exchange ([0-9.]+) ms; besides, overlapped "
              r"with backward ([0-9.]+) ms", log)
sync, exchange, helper = m.groups() if m else ("?", "?", "?")
poll = re.search(r"waits poll ([0-9]+) us", log)
stolen = re.search(r"work stealing at the end: .*\(([0-9.]+)%\) trained by a rank other", log)
print(f"round {sys.argv[3]} {sys.argv[4]} ({sys.argv[5]}): {sum(pairs) / len(pairs):11,.0f} pairs/s, median step "
      f"{statistics.median(steps):5.2f} ms, sparse sync on the step {sync} ms (exchange {exchange}), "
      f"helper during backward {helper} ms, waits poll {poll.group(1) if poll else '?'} us"
      + (f", {stolen.group(1)}% of pairs stolen" if stolen else "")
      + (", shared tables on the pool's 2 MiB pages" if "shared sparse tables are on 2 MiB pages" in log else ""))
PY
  done
done | tee "$WORK/table.txt"
python3 - "$WORK/table.txt" <<'PY'
import re, sys
runs = {"A": [], "B": []}
for line in open(sys.argv[1]):
    m = re.search(r"^round \d+ (A|B) \(.*\): +([0-9,]+) pairs/s", line)
    if m:
        runs[m.group(1)].append(float(m.group(2).replace(",", "")))
a, b = (sum(v) / len(v) for v in (runs["A"], runs["B"]))
print(f"mean: A {a:,.0f} pairs/s, B {b:,.0f} pairs/s, B/A {b / a:.3f}x")
PY
if cmp -s "$WORK/1-A/embeddings.txt" "$WORK/1-B/embeddings.txt"; then
  echo "exported vectors, A and B: identical"
elif [ "${SAME_VECTORS:-1}" = 1 ]; then
  echo "exported vectors, A and B: DIFFER" >&2
  exit 1
else
  echo "exported vectors, A and B: differ"
fi
