#!/usr/bin/env python3
"""Summarises a ringtrain Chrome trace (RUN_DIR/trace.json, written with log.trace_steps > 0).

  scripts/trace-summary.py RUN_DIR/trace.json [--skip N]

Prints, for each phase of a step, its median time on each rank, then where a synchronized step's time goes
across ranks (ranks on one host share the trace's clock):
  - arrival spread: the last rank to finish forward+backward against the first;
  - after the last arrival: from the last rank's forward+backward end to the last rank's finalize end, the
    time the gradient synchronization itself takes once nobody is late;
  - zero grad after the last optimizer: with shared sparse tables zeroGrad() waits for every owner;
  - which rank finished forward+backward last, in what share of the steps;
  - in the slowest tenth of steps, what grew: the last rank's forward+backward, its data wait, the sync.
The first N steps of each rank (default 10) are left out: they hold the warm-up.
Traces that record the CPU of each forward+backward give each rank's usual one. Under ddp.steal a step's
passes (one per piece of a batch, named for it) count as its one forward+backward, and a row says how much of
it went to other ranks' pairs.
"""
import argparse
import collections
import json
import re
import statistics
import sys

FORWARD = "forward+backward (buckets in flight)"
FINALIZE = "finalize: wait for buckets + sparse sync"
OPTIMIZER = "optimizer step"
ZERO_GRAD = "zero grad"
DATA_WAIT = "data wait"


# Under ddp.steal a step's forward+backward is one pass per piece taken, each traced under its own name
# ("forward+backward (N pairs of rank R's batch[, buckets in flight])"). The pieces a rank ran before a
# finalize are that step's: merged into one forward+backward span (first begin to last end) so that the
# per-step phases and the arrival analysis read such a trace as any other.
PIECE = re.compile(r"forward\+backward \((\d+ pairs of rank (\d+)'s batch|a pair weighted zero)")


def merge_stolen_pieces(spans):
    """Replaces the pieces' spans by FORWARD; returns rank -> per-step ms spent on other ranks' pairs."""
    names = [n for n in spans if PIECE.match(n)]
    if not names or FINALIZE not in spans:
        return {}
    pieces = collections.defaultdict(list)  # rank -> [(begin, end, stolen)]
    for name in names:
        owner = PIECE.match(name).group(2)
        for r, entries in spans.pop(name).items():
            pieces[r] += [(b, e, owner is not None and int(owner) != r) for b, e in entries]
    stolen_us = collections.defaultdict(list)
    for r, entries in pieces.items():
        entries.sort()
        i = 0
        for fin_begin, _ in spans[FINALIZE][r]:
            step = []
            while i < len(entries) and entries[i][0] < fin_begin:
                step.append(entries[i])
                i += 1
            if step:
                spans[FORWARD][r].append((step[0][0], max(e for _, e, _ in step)))
                stolen_us[r].append(sum(e - b for b, e, stolen in step if stolen))
    return stolen_us


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--skip", type=int, default=None,
                        help="steps left out at the start of each rank (default 10, or 1 when the trace holds "
                             "10 steps or fewer, as the main job's 5 do)")
    args = parser.parse_args()
    if args.skip is not None and args.skip < 0:
        parser.error(f"--skip {args.skip}: give a number of steps, 0 or more")
    try:
        with open(args.trace) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{args.trace}: not a readable Chrome trace ({e})")
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    spans = collections.defaultdict(lambda: collections.defaultdict(list))  # name -> rank -> [(begin, end)]
    sparse_ms = collections.defaultdict(list)
    exchange_ms = collections.defaultdict(list)
    overlapped_ms = collections.defaultdict(list)
    cpus = collections.defaultdict(list)  # rank -> the CPU of each traced forward+backward pass, in order
    for e in events:
        if e.get("ph") != "X":
            continue
        spans[e["name"]][e["pid"]].append((e["ts"], e["ts"] + e["dur"]))
        if e["name"].startswith("forward+backward") and "cpu" in e.get("args", {}):
            cpus[e["pid"]].append((e["ts"], e["args"]["cpu"]))
        if e["name"] == FINALIZE and "sparse_sync_ms" in e.get("args", {}):
            sparse_ms[e["pid"]].append(e["args"]["sparse_sync_ms"])
            exchange_ms[e["pid"]].append(e["args"].get("sparse_exchange_ms", 0))
            overlapped_ms[e["pid"]].append(e["args"].get("sparse_overlapped_ms", 0))
    if not spans:
        sys.exit(f"{args.trace}: no spans (was log.trace_steps > 0?)")
    stolen_ms = merge_stolen_pieces(spans)
    ranks = sorted({r for by_rank in spans.values() for r in by_rank})
    if args.skip is None:  # the first step warms up (allocations, first touches): never a median's sample
        most = max(len(by_rank[r]) for by_rank in spans.values() for r in by_rank)
        args.skip = 10 if most > 10 else min(1, most - 1)
    if all(len(by_rank[r]) <= args.skip for by_rank in spans.values() for r in by_rank):
        sys.exit(f"{args.trace}: no step left after skipping the first {args.skip} (lower --skip or raise "
                 "log.trace_steps)")

    def ms(value):
        return f"{value / 1000:7.2f}"
    most_steps = max(len(by_rank[r]) for by_rank in spans.values() for r in by_rank)

    def after_skip(name, r):
        # A phase of every step: its first N left out. One of some steps only (work balance, every 10th):
        # those that begin after the N-th step of the most frequent phase.
        entries = spans[name][r]
        if len(entries) == most_steps or args.skip == 0:
            return entries[args.skip:]
        reference = max((by_rank[r] for by_rank in spans.values()), key=len)  # the rank's most frequent phase
        start = reference[args.skip][0] if args.skip < len(reference) else float("inf")
        return [x for x in entries if x[0] >= start]

    print(f"median ms per rank, steps after the first {args.skip}")
    print(f"{'phase':44s}" + "".join(f"{'r' + str(r):>8s}" for r in ranks))
    order = [DATA_WAIT, FORWARD, FINALIZE, OPTIMIZER, ZERO_GRAD]  # a step's phases as they run
    for name, by_rank in sorted(spans.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        kept = {r: after_skip(name, r) for r in ranks}
        row = [statistics.median(e - b for b, e in kept[r]) if kept[r] else 0 for r in ranks]
        some = max(len(by_rank[r]) for r in ranks) < most_steps
        label = f"{name} (some steps)" if some else name
        print(f"{label[:44]:44s}" + "".join(f" {ms(v)}" for v in row))
    if sparse_ms:
        print(f"{'  of which sparse sync':44s}" +
              "".join(f" {statistics.median(sparse_ms[r][args.skip:] or [0]):7.2f}" for r in ranks))
        print(f"{'    of which the byte exchange':44s}" +
              "".join(f" {statistics.median(exchange_ms[r][args.skip:] or [0]):7.2f}" for r in ranks))
        print(f"{'  sparse rows summed during backward':44s}" +
              "".join(f" {statistics.median(overlapped_ms[r][args.skip:] or [0]):7.2f}" for r in ranks))
    if cpus:
        # Which CPU each rank's passes ended on, the most frequent and its share, after the skipped steps: ranks
        # slow on the same CPUs (or on CPUs that share a core on the host) run slow for where they run.
        def usual(r):
            kept = after_skip(FORWARD, r) if FORWARD in spans else []
            start = kept[0][0] if kept else 0
            seen = [cpu for ts, cpu in cpus[r] if ts >= start]
            if not seen:
                return "-"
            cpu, count = collections.Counter(seen).most_common(1)[0]
            return f"{cpu}:{100 * count / len(seen):.0f}%"
        label = "  forward+backward's CPU, most passes (share)"
        print(f"{label:44s}" + "".join(f" {usual(r):>7s}" for r in ranks))
    if stolen_ms:
        # The mean, not the median: a rank that steals in fewer than half the steps would show 0.
        label = "  forward+backward on others' pairs, mean"
        print(f"{label:44s}" +
              "".join(f" {statistics.mean(stolen_ms[r][args.skip:] or [0]) / 1000:7.2f}" for r in ranks))
    if len(ranks) < 2 or FORWARD not in spans or FINALIZE not in spans:
        return
    steps = min(len(spans[FORWARD][r]) for r in ranks)
    spread, after_last, zero_wait, step_ms = [], [], [], []
    last_count = collections.Counter()  # rank -> steps it finished forward+backward last
    per_step = {}  # step -> (last rank's forward+backward above its median, its data wait, spread, after last)
    fb_median = {r: statistics.median(e - b for b, e in spans[FORWARD][r][args.skip:]) for r in ranks}
    for k in range(args.skip, steps):
        fb_end = [spans[FORWARD][r][k][1] for r in ranks]
        last = ranks[fb_end.index(max(fb_end))]
        last_count[last] += 1
        b, e = spans[FORWARD][last][k]
        wait = spans[DATA_WAIT][last][k] if DATA_WAIT in spans and k < len(spans[DATA_WAIT][last]) else (0, 0)
        fin_end = [spans[FINALIZE][r][k][1] for r in ranks if k < len(spans[FINALIZE][r])]
        per_step[k] = (e - b - fb_median[last], wait[1] - wait[0], max(fb_end) - min(fb_end),
                       max(fin_end) - max(fb_end) if len(fin_end) == len(ranks) else 0)
        fin_end = [spans[FINALIZE][r][k][1] for r in ranks if k < len(spans[FINALIZE][r])]
        spread.append(max(fb_end) - min(fb_end))
        if len(fin_end) == len(ranks):
            after_last.append(max(fin_end) - max(fb_end))
        if ZERO_GRAD in spans and all(k < len(spans[ZERO_GRAD][r]) for r in ranks):
            opt_end = [spans[OPTIMIZER][r][k][1] for r in ranks]
            zg_end = [spans[ZERO_GRAD][r][k][1] for r in ranks]
            zero_wait.append(max(zg_end) - max(opt_end))
        if k + 1 < steps:
            step_ms.append(max(spans[FORWARD][r][k + 1][0] for r in ranks) - max(spans[FORWARD][r][k][0] for r in ranks))
            per_step[k] += (step_ms[-1],)
    print(f"\nacross {len(ranks)} ranks, median (90th percentile) ms over {len(spread)} steps")
    def line(label, values):
        if values:
            q = sorted(values)
            print(f"  {label:42s} {ms(statistics.median(q))} ({ms(q[int(0.9 * (len(q) - 1))])})")
    line("step, start to start", step_ms)
    line("arrival spread at finalize", spread)
    line("finalize end after the last arrival", after_last)
    line("zero grad end after the last optimizer", zero_wait)
    # One rank last in most steps is a straggler (a slow CPU, a busy neighbour); last ones spread over the
    # ranks are jitter.
    print(f"  {'last to arrive, % of steps':42s}" +
          "".join(f" r{r}:{100 * last_count[r] / max(1, len(spread)):.0f}" for r in ranks if last_count[r]))
    # The mean step is set by the long ones: what grew in them. A last rank's forward+backward far above its
    # own median is that rank held up (descheduled, a slow page); a long data wait is its loader; a long sync
    # after the last arrival is the exchange.
    timed = sorted((v for v in per_step.values() if len(v) == 5), key=lambda v: v[4])
    slow = timed[int(0.9 * len(timed)):]
    if len(slow) >= 2:
        med = lambda i: statistics.median(v[i] for v in slow) / 1000
        print(f"\nthe slowest tenth of steps ({len(slow)}), median ms: step {med(4):.2f}; the last rank's "
              f"forward+backward {med(0):+.2f} against its median, its data wait {med(1):.2f}; arrival spread "
              f"{med(2):.2f}; finalize end after the last arrival {med(3):.2f}")


if __name__ == "__main__":
    main()
