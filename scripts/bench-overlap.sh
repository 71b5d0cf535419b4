#!/usr/bin/env bash
# ddp.overlap_sparse off against on, on the reference workload (../shared/BENCHMARKS.md section 2) with
# shared tables, in alternating runs of one invocation (a shared machine drifts: neighbours compare, distant
# runs do not). Prints, per run, pairs/s, the median step and the sparse sync left on the step, with the
# part the helper thread did during backward; then the means, and whether the two modes' exported vectors
# are identical (they must be: the overlap moves work, not arithmetic; exit 1 otherwise).
#   scripts/bench-overlap.sh [RANKS]     # default 2; the H100 machine: 8
# Environment: ROUNDS (pairs of runs, default 3), STEPS (steps per run, default 160, the first 10 not
# counted), BIND_TO (ringrun --bind-to, default cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build}/bin"
RANKS="${1:-2}"
ROUNDS="${ROUNDS:-3}"
STEPS="${STEPS:-160}"
BIND_TO="${BIND_TO:-cores}"
[ -x "$BIN/ringtrain" ] || "$ROOT/scripts/build.sh" >/dev/null
WORK="$(mktemp -d /tmp/ringtrain-overlap-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
"$BIN/ringtrain" gen-data "$ROOT/configs/bench_reference.yaml" --out "$WORK/data" >/dev/null

echo "reference workload, $RANKS ranks, shared tables, ringrun --bind-to $BIND_TO, $STEPS steps per run (10 warm-up)"
for round in $(seq "$ROUNDS"); do
  for overlap in false true; do
    out="$WORK/$round-$overlap"
    "$BIN/ringrun" --standalone --nproc-per-node "$RANKS" --bind-to "$BIND_TO" -- "$BIN/ringtrain" train \
      "$ROOT/configs/bench_reference.yaml" --set "data.corpus=$WORK/data/sequences.txt" --set "run.output_dir=$out" \
      --set "run.max_steps=$STEPS" --set log.every_steps=10 --set checkpoint.every_steps=0 \
      --set ddp.sparse_sync=shared --set "ddp.overlap_sparse=$overlap" --set eval.max_queries=20 > "$out.log" 2>&1 ||
      { echo "ringtrain failed (overlap $overlap):" >&2; tail -20 "$out.log" >&2; exit 1; }
    python3 - "$out/metrics.jsonl" "$out.log" "$round" "$overlap" <<'PY'
import json, re, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
pairs = [r["window_pairs_per_s"] for r in lines if "loss" in r][1:]  # the first window holds the warm-up
steps = [r["step_ms"] for r in lines if "step_ms" in r][10:]
m = re.search(r"rank 0\].*mean per step: .*sparse sync ([0-9.]+) ms \(exchange ([0-9.]+) ms; besides, overlapped "
              r"with backward ([0-9.]+) ms", open(sys.argv[2]).read())
sync, exchange, helper = m.groups() if m else ("?", "?", "?")
print(f"round {sys.argv[3]} overlap {sys.argv[4]:5s}: {sum(pairs) / len(pairs):11,.0f} pairs/s, median step "
      f"{statistics.median(steps):5.2f} ms, sparse sync on the step {sync} ms (exchange {exchange}), "
      f"helper during backward {helper} ms")
PY
  done
done | tee "$WORK/table.txt"
python3 - "$WORK/table.txt" <<'PY'
import re, sys
runs = {"false": [], "true": []}
for line in open(sys.argv[1]):
    m = re.search(r"overlap (\w+)\s*: +([0-9,]+) pairs/s", line)
    if m:
        runs[m.group(1)].append(float(m.group(2).replace(",", "")))
off, on = (sum(v) / len(v) for v in (runs["false"], runs["true"]))
print(f"mean: off {off:,.0f} pairs/s, on {on:,.0f} pairs/s, on/off {on / off:.3f}x")
PY
if cmp -s "$WORK/1-false/embeddings.txt" "$WORK/1-true/embeddings.txt"; then
  echo "exported vectors, overlap off and on: identical"
else
  echo "exported vectors, overlap off and on: DIFFER" >&2
  exit 1
fi
