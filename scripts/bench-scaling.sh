#!/usr/bin/env bash
# Reference workload (../shared/BENCHMARKS.md section 2) at each rank count, ringtrain against the
# PyTorch peer (ddp_peer.py --sparse; at 1 rank the peer runs without DDP), in one invocation on one
# machine. Prints global pairs/s, scaling efficiency (pairs/s at N / (N x pairs/s at 1), each against
# its own 1-rank figure), the ratio to the peer, the bytes each rank synchronized per step, peak RSS and the
# PSS right after training (the largest rank's; PSS counts the shared tables once across ranks, RSS once
# per rank).
#   scripts/bench-scaling.sh            # 1 and 2 ranks (the dev machine)
#   scripts/bench-scaling.sh 1 2 4 8    # the device machine's 16 cores
# Besides the mean over the timed steps, ringtrain's pairs/s is also given from its median step time (rank 0's
# per-step metrics): on a shared machine a few slow steps move the mean, not the median.
# Each rank count above 1 runs once per sparse-row sync mode in SYNC_MODES (default "allgather shared":
# every rank all-gathers every touched row, against one shared table per host with each rank updating the
# rows it owns); one rank has nothing to sync and runs once. "allgather!" marks a shared run that fell back
# (ranks not on one host, or same-host memory refused by the OS), with the run's warning on stderr; "shared/2M"
# one whose shared tables came from the host's pool of 2 MiB pages (sysctl vm.nr_hugepages; DdpOptions::huge_pages;
# the kernel counts such pages in neither RSS nor PSS, so those columns leave the tables out).
# ringtrain's ranks start under `ringrun --bind-to cores` (each rank on its own slice of the CPUs; BIND_TO=none
# leaves them free, as the peer's are); under mpirun they are not bound.
# After the table, how long rank 0's waits polled before sleeping at each rank count (comm.spin_us as
# settled: auto polls long only where each rank has two CPUs, see README). At the end, the 1-rank run again
# (how far the machine drifted during the sweep; with ROUNDS=1), then a traced run at 1 rank and one at the
# largest rank count print where a step goes (scripts/trace-summary.py: each phase per rank, how far apart
# the ranks reach the exchange, the sync after the last one).
# ROUNDS=R (default 1) runs the whole sweep R times, the rank counts interleaved (1, 8, 1, 8, ...), each
# round's efficiencies and ratios against that round's own 1-rank and peer figures, then prints the median
# and range over rounds per row: on a host whose speed drifts within minutes, one sweep can land its 1-rank
# run in a fast or a slow phase, and only repeated, interleaved pairs tell the scaling from the drift.
# Environment: BACKEND=gloo|mpi (default gloo), STEPS (timed steps, default 200), PEER=0 skips the peer,
# PEERS=<dir with ddp_peer.py> (default ../shared/peers), SYNC_MODES (ddp.sparse_sync values), BIND_TO,
# TRACE=0 (no traced run), TRACE_MODES (sync modes traced at the largest rank count; default the last of
# SYNC_MODES), SETS="key=value ..." (more ringtrain --set overrides, e.g. ddp.overlap_sparse=false),
# CEILING=1 (after each rank count above 1, a row "independent": that many 1-rank jobs at once, no sync; see
# run_independent), CPUS_B=ORDER (each rank count above 1 runs a second time with `ringrun --cpus ORDER`, its
# rows marked "+cpus", the ceiling's and the traced run's too: the CPUs shared out in another order, such as
# bench/cpu_pairs's with each host core's two threads side by side), SETS_B="key=value ..." (overrides for
# those second runs only, e.g. run.pin_threads=true comm.spin_us=50).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTRAIN_BUILD_DIR:-$ROOT/build}/bin"
PEERS="${PEERS:-$ROOT/../shared/peers}"
BACKEND="${BACKEND:-gloo}"
BIND_TO="${BIND_TO:-cores}"
STEPS="${STEPS:-200}"
ROUNDS="${ROUNDS:-1}"
WARMUP=10
BATCH=$(awk '$1 == "batch_size:" { print $2; exit }' "$ROOT/configs/bench_reference.yaml")  # pairs per rank per step
read -r -a MODES <<< "${SYNC_MODES:-allgather shared}"
EXTRA_SETS=() SETS_B_ARGS=()
for kv in ${SETS:-}; do EXTRA_SETS+=(--set "$kv"); done
read -r -a sets_b <<< "${SETS_B:-}"  # split on spaces only: a value is never glob-expanded
for kv in "${sets_b[@]}"; do SETS_B_ARGS+=(--set "$kv"); done
if [ -n "${CPUS_B:-}" ] && [ "$BACKEND" = mpi ]; then
  echo "CPUS_B is ringrun's --cpus: BACKEND=mpi starts the ranks under mpirun, unbound" >&2
  exit 2
fi
RANKS=("$@")
[ ${#RANKS[@]} -gt 0 ] || RANKS=(1 2)
PY=/usr/bin/python3
[ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null || PY=python3
WORK="$(mktemp -d /tmp/ringtrain-bench-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The corpus is generated once, outside the timing, and shared by every run.
DATA="$WORK/data"
"$BIN/ringtrain" gen-data "$ROOT/configs/bench_reference.yaml" --out "$DATA" >/dev/null

job_args() {  # mode out steps [--set ...] -> JOB_ARGS: ringtrain's arguments for the reference job
  local mode=$1 out=$2 steps=$3
  shift 3
  JOB_ARGS=(train "$ROOT/configs/bench_reference.yaml" --set "data.corpus=$DATA/sequences.txt"
            --set "run.output_dir=$out" --set "run.max_steps=$steps" --set "log.every_steps=$WARMUP"
            --set "comm.backend=$BACKEND" --set "checkpoint.every_steps=0" --set "ddp.sparse_sync=$mode"
            "${EXTRA_SETS[@]}" "$@")
}

# RUN_CPUS: `ringrun --cpus` for the runs that follow (empty: the CPUs in id order).
RUN_CPUS=""
launch_ringtrain() {  # ranks mode out steps [--set ...]: the reference job, its output in out/ and out.log
  local n=$1 mode=$2 out=$3 steps=$4 cpus=()
  shift 4
  job_args "$mode" "$out" "$steps" "$@"
  [ -n "$RUN_CPUS" ] && cpus=(--cpus "$RUN_CPUS") && JOB_ARGS+=("${SETS_B_ARGS[@]}")
  if [ "$BACKEND" = mpi ]; then
    mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$n" "$BIN/ringtrain" "${JOB_ARGS[@]}" > "$out.log" 2>&1
  else
    "$BIN/ringrun" --standalone --nproc-per-node "$n" --bind-to "$BIND_TO" "${cpus[@]}" -- "$BIN/ringtrain" "${JOB_ARGS[@]}" > "$out.log" 2>&1
  fi || { echo "ringtrain failed at $n ranks ($mode${RUN_CPUS:+, --cpus $RUN_CPUS}):" >&2; tail -20 "$out.log" >&2; exit 1; }
}

summarize() {  # out ranks -> prints "pairs_per_s median_step_pairs_per_s sync_bytes_per_step peak_rss_mib pss_mib shared"
  python3 - "$1/metrics.jsonl" "$1.log" "$2" "$WARMUP" "$BATCH" <<'PY'
import json, re, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in lines if "loss" in r]
steady = rows[1:] or rows                      # the first window holds the warm-up steps
pairs = sum(r["window_pairs_per_s"] for r in steady) / len(steady)
steps = [r["step_ms"] for r in lines if "step_ms" in r][int(sys.argv[4]):]
median = int(sys.argv[5]) * int(sys.argv[3]) / statistics.median(steps) * 1000 if steps else 0
sync = rows[-1]["dense_bytes"] + rows[-1]["sparse_bytes"]
log = open(sys.argv[2]).read()
rss = max([float(m) for m in re.findall(r"peak RSS ([0-9.]+) MiB", log)] or [0])
pss = max([float(m) for m in re.findall(r"memory after training: PSS ([0-9.]+) MiB", log)] or [0])
shared = int("sparse tables shared by" in log)  # shared asked for but not possible falls back to allgather
shared += int("shared sparse tables are on 2 MiB pages" in log)  # 2: from the host's huge-page pool
print(f"{pairs:.0f} {median:.0f} {sync} {rss:.0f} {pss:.0f} {shared}")
PY
}

run_ringtrain() {  # ranks mode -> prints what summarize prints
  local n=$1 mode=$2 out="$WORK/rt-$1-$2${RUN_CPUS:+-cpus}"
  launch_ringtrain "$n" "$mode" "$out" $((WARMUP + STEPS))
  summarize "$out" "$n"
}

# What the machine allows at n ranks with no synchronization at all: n independent 1-rank jobs at once, each
# on the CPUs rank i of an n-rank job gets (with BIND_TO=cores, and RUN_CPUS's order), 5x the timed steps so that their timed steps
# overlap despite staggered starts. Prints the sums of their pairs/s and median-step pairs/s: the ceiling a
# data-parallel job could reach here if its synchronization cost nothing.
run_independent() {  # ranks -> prints "pairs_per_s median_step_pairs_per_s"
  local n=$1 i pids=() slices=() cpus=()
  # Each job's CPUs as ringrun cuts them for rank i (launch/cpu_binding.h, RUN_CPUS's order): asked of ringrun
  # itself, so that the ceiling binds exactly as the ranks it is compared with.
  if [ "$BIND_TO" = cores ]; then
    [ -n "$RUN_CPUS" ] && cpus=(--cpus "$RUN_CPUS")
    mapfile -t slices < <("$BIN/ringrun" --standalone --nproc-per-node "$n" --bind-to cores "${cpus[@]}" -- \
      sh -c 'echo "slice $LOCAL_RANK $RINGTRAIN_CPUS"' 2>/dev/null | sed -n 's/.*slice \([0-9]*\) \(.*\)$/\1 \2/p' |
      sort -n | cut -d' ' -f2)
    [ "${#slices[@]}" -eq "$n" ] || { echo "ringrun cut ${#slices[@]} CPU slices for $n ranks" >&2; exit 1; }
  fi
  for ((i = 0; i < n; i++)); do
    local out="$WORK/solo-$n-$i${RUN_CPUS:+-cpus}" pin=()
    [ -n "${slices[$i]:-}" ] && pin=(taskset -c "${slices[$i]}")
    job_args "${MODES[0]}" "$out" $((WARMUP + 5 * STEPS))
    [ -n "$RUN_CPUS" ] && JOB_ARGS+=("${SETS_B_ARGS[@]}")
    "${pin[@]}" "$BIN/ringtrain" "${JOB_ARGS[@]}" > "$out.log" 2>&1 &
    pids+=($!)
  done
  for ((i = 0; i < n; i++)); do
    wait "${pids[$i]}" || { echo "independent job $i of $n failed:" >&2; tail -20 "$WORK/solo-$n-$i${RUN_CPUS:+-cpus}.log" >&2; exit 1; }
  done
  for ((i = 0; i < n; i++)); do summarize "$WORK/solo-$n-$i${RUN_CPUS:+-cpus}" 1; done |
    awk '{ p += $1; m += $2 } END { printf "%.0f %.0f\n", p, m }'
}

run_peer() {  # ranks -> prints pairs_per_s
  local n=$1 log="$WORK/peer-$1.log"
  if [ "$n" -eq 1 ]; then
    "$PY" "$PEERS/ddp_peer.py" --sparse --steps "$STEPS" --warmup "$WARMUP" > "$log" 2>&1
  else
    "$PY" "$PEERS/ddp_peer.py" --sparse --spawn "$n" --steps "$STEPS" --warmup "$WARMUP" > "$log" 2>&1
  fi || { echo "peer failed at $n ranks:" >&2; tail -5 "$log" >&2; echo 0; return; }
  python3 - "$log" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"global=([0-9,]+) samples/s", t) or re.search(r"TOTAL world=1 \(no DDP\): ([0-9,]+) samples/s", t)
print(m.group(1).replace(",", "") if m else 0)
PY
}

bound="ringrun --bind-to $BIND_TO"
[ "$BACKEND" = mpi ] && bound="mpirun --bind-to none"
rounds_note=""
[ "$ROUNDS" -gt 1 ] && rounds_note=", $ROUNDS rounds"
printf "reference workload: 100k items x 64, tower 128, 1024 pairs/rank/step, 5 negatives, SGD, 1 thread/rank, %s timed steps, backend %s, %s%s%s%s\n" "$STEPS" "$BACKEND" "$bound" "${SETS:+, --set $SETS}" "$rounds_note" "${CPUS_B:+; rows +cpus: --cpus $CPUS_B${SETS_B:+ --set $SETS_B}}"
printf "%5s %6s %16s %14s %10s %16s %10s %14s %10s %12s %14s %10s %10s\n" round ranks "sync" "ringtrain p/s" "effic." \
  "median-step p/s" "effic." "peer p/s" "effic." "ratio" "sync B/step" "RSS MiB" "PSS MiB"
print_row() {  # round ranks sync rt med peer base_rt base_med base_peer sync_bytes rss pss: one table row
  echo "$1 $2 $3 $4 $5 $6 $7 $8 $9" >> "$RESULTS"
  python3 - "$@" <<'PY'
import sys
rnd, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rt, med, peer, brt, bmed, bpeer, sync, rss, pss = map(float, sys.argv[4:])
eff = lambda v, b: f"{v / (n * b):.0%}" if b > 0 else "-"
ratio = f"{rt / peer:.2f}x" if peer > 0 else "-"
print(f"{rnd:5d} {n:6d} {mode:>16} {rt:14,.0f} {eff(rt, brt):>10} {med:16,.0f} {eff(med, bmed):>10} {peer:14,.0f} "
      f"{eff(peer, bpeer):>10} {ratio:>12} {sync:14,.0f} {rss:10,.0f} {pss:10,.0f}")
PY
}
RESULTS="$WORK/results.txt"  # one line per row: round ranks shown rt med peer base_rt base_med base_peer
declare -A POLL  # ranks -> how long rank 0's waits polled, us (comm.spin_us as settled; the job's first line)
first_rt=0
for round in $(seq 1 "$ROUNDS"); do
  base_rt=0; base_med=0; base_peer=0
  for n in "${RANKS[@]}"; do
    peer=0
    [ "${PEER:-1}" = 0 ] || peer=$(run_peer "$n")
    [ "$base_peer" = 0 ] && [ "$n" -eq 1 ] && base_peer=$peer
    modes=("${MODES[@]}")
    [ "$n" -eq 1 ] && modes=("${MODES[0]}")  # nothing to sync
    orders=("")
    [ "$n" -gt 1 ] && [ -n "${CPUS_B:-}" ] && orders+=("$CPUS_B")
    for RUN_CPUS in "${orders[@]}"; do
      for mode in "${modes[@]}"; do
        read -r rt med sync rss pss shared < <(run_ringtrain "$n" "$mode")
        [ "$base_rt" = 0 ] && [ "$n" -eq 1 ] && base_rt=$rt && base_med=$med
        [ "$first_rt" = 0 ] && first_rt=$base_rt
        shown=$mode
        [ "$n" -eq 1 ] && shown="-"
        if [ "$n" -gt 1 ] && [ "$mode" = shared ] && [ "$shared" = 0 ]; then  # asked for, not possible here
          shown="allgather!"
          grep -h "cannot be used" "$WORK/rt-$n-$mode${RUN_CPUS:+-cpus}.log" >&2 || true
        fi
        [ "$shared" = 2 ] && shown="$shown/2M"
        print_row "$round" "$n" "$shown${RUN_CPUS:++cpus}" "$rt" "$med" "$peer" "$base_rt" "$base_med" "$base_peer" "$sync" "$rss" "$pss"
        [ -n "$RUN_CPUS" ] || POLL[$n]=$( (grep -o -m1 "waits poll [0-9]* us" "$WORK/rt-$n-$mode.log" || true) | tr -dc 0-9)
      done
      if [ "${CEILING:-0}" = 1 ] && [ "$n" -gt 1 ]; then
        read -r rt med < <(run_independent "$n")
        print_row "$round" "$n" "independent${RUN_CPUS:++cpus}" "$rt" "$med" 0 "$base_rt" "$base_med" "$base_peer" 0 0 0
      fi
    done
    RUN_CPUS=""
  done
done

polls=""
for n in "${RANKS[@]}"; do [ -n "${POLL[$n]:-}" ] && [ "$n" -gt 1 ] && polls+=" $n ranks ${POLL[$n]} us;"; done
[ -n "$polls" ] && echo "ringtrain's waits polled before sleeping (comm.spin_us, rank 0):${polls%;}"

# Over the rounds: each row's median and range, every figure against its own round's 1-rank and peer runs.
if [ "$ROUNDS" -gt 1 ]; then
  echo
  echo "over $ROUNDS rounds, median [min - max] (each round against its own 1-rank and peer figures):"
  python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rnd, n, mode, rt, med, peer, brt, bmed, bpeer = line.split()
    rows.setdefault((int(n), mode), []).append(tuple(map(float, (rt, med, peer, brt, bmed, bpeer))))
def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{fmt(statistics.median(values))} [{fmt(min(values))} - {fmt(max(values))}]"
pct = lambda v: f"{v:.0%}"
times = lambda v: f"{v:.2f}x"
print(f"{'ranks':>5} {'sync':>16} {'ringtrain p/s':>28} {'effic.':>18} {'median-step effic.':>18} {'ratio to peer':>22}")
for (n, mode), runs in sorted(rows.items()):
    eff = [rt / (n * brt) if brt > 0 else None for rt, _, _, brt, _, _ in runs]
    meff = [med / (n * bmed) if bmed > 0 else None for _, med, _, _, bmed, _ in runs]
    ratio = [rt / peer if peer > 0 else None for rt, _, peer, _, _, _ in runs]
    print(f"{n:5d} {mode:>16} {spread([r[0] for r in runs], lambda v: f'{v:,.0f}'):>28} "
          f"{spread(eff, pct):>18} {spread(meff, pct):>18} {spread(ratio, times):>22}")
PY
fi

# The machine may have sped up or slowed down since the 1-rank run every efficiency above divides by: run
# it again and say how far it moved (on the shared machines here, 1-rank figures varied by a third within an
# hour), so the reader can tell a scaling result from a drift. With ROUNDS > 1 the rounds show it already.
if [ "$first_rt" != 0 ] && [ "${#RANKS[@]}" -gt 1 ] && [ "$ROUNDS" -eq 1 ]; then
  read -r again _ < <(run_ringtrain 1 "${MODES[0]}")
  python3 - "$first_rt" "$again" <<'PY'
import sys
first, again = map(float, sys.argv[1:])
print(f"\n1 rank again after the others: {again:,.0f} pairs/s, {again / first - 1:+.0%} against the first "
      f"(efficiencies above use the first)")
PY
fi

# Where a step goes at the largest rank count, in the last sync mode: a separate traced run (tracing stays
# out of the timed ones), summarised by scripts/trace-summary.py. TRACE=0 skips it; TRACE_MODES="allgather
# shared" traces the largest rank count in each of those modes (private tables against shared ones).
largest=$(printf "%s\n" "${RANKS[@]}" | sort -n | tail -1)
if [ "${TRACE:-1}" != 0 ] && [ "$largest" -gt 1 ]; then
  read -r -a traced_modes <<< "${TRACE_MODES:-${MODES[${#MODES[@]}-1]}}"
  # 1 rank first: each phase's cost alone on the machine, to read the larger runs' phases against.
  runs=("1 ${traced_modes[0]} -")
  for mode in "${traced_modes[@]}"; do
    runs+=("$largest $mode -")
    [ -n "${CPUS_B:-}" ] && runs+=("$largest $mode $CPUS_B")
  done
  for run in "${runs[@]}"; do
    read -r n mode RUN_CPUS <<< "$run"
    [ "$RUN_CPUS" = - ] && RUN_CPUS=""
    out="$WORK/traced-$n-$mode${RUN_CPUS:+-cpus}"
    launch_ringtrain "$n" "$mode" "$out" $((WARMUP + 100)) --set log.trace_steps=$((WARMUP + 100))
    echo
    echo "where a step goes at $n rank(s) ($mode${RUN_CPUS:+, --cpus $RUN_CPUS}), ms, from a traced run of 100 steps after $WARMUP:"
    python3 "$ROOT/scripts/trace-summary.py" "$out/trace.json" --skip "$WARMUP"
  done
  RUN_CPUS=""
fi
