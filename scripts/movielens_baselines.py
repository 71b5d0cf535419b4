#!/usr/bin/env python3
"""Count-based baselines for MovieLens leave-last-10-out (../shared/BENCHMARKS.md section 4), computed
exactly as `ringtrain train configs/movielens.yaml` evaluates: every user is held out, the last 10 items
are hidden, each hidden item not already in the visible prefix is one query whose items are the distinct
visible prefix (excluded from the ranking), candidates are all other items, HR@10 / NDCG@10 per query;
candidates scoring the same as the target share its place (counted scores tie often, most of all at 0).

Prints popularity, co-occurrence and +-5-window cosine (cosine of the items' +-5 co-occurrence rows),
scoring with the whole prefix and with its last N items, and, for comparison only, the +-5-window cosine
whose query is the +-5 positions around the target in the FULL sequence: that query contains other hidden
items (the user's future), which the protocol does not allow; it is the variant that reproduces the
counted 0.125. Needs numpy; takes a few minutes (one 9k x 9k matrix product).
Usage: scripts/movielens_baselines.py [data/movielens/sequences.txt]
"""
import sys

import numpy as np

HIDE, WINDOW, K = 10, 5, 10


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "data/movielens/sequences.txt"
    seqs = [line.split() for line in open(path)]
    index = {t: i for i, t in enumerate(sorted({t for s in seqs for t in s}))}
    n = len(index)
    seqs = [[index[t] for t in s] for s in seqs]
    train, queries, leaky = [], [], []
    for ids in seqs:
        h = min(HIDE, len(ids) - 1)
        visible = ids[:len(ids) - h]
        if len(visible) >= 2:
            train.append(visible)
        prefix = list(dict.fromkeys(visible))
        targets = set(prefix)  # each distinct hidden item once, none already in the query, as ringtrain's split
        for p in range(len(ids) - h, len(ids)):
            if ids[p] in targets:
                continue
            targets.add(ids[p])
            queries.append((prefix, ids[p]))
            around = [ids[j] for j in range(max(0, p - WINDOW), min(len(ids), p + WINDOW + 1)) if j != p]
            leaky.append((list(dict.fromkeys(around)), ids[p]))
    counts = np.zeros(n)
    cooc = np.zeros((n, n), dtype=np.float32)
    for s in train:
        for i, x in enumerate(s):
            counts[x] += 1
            for j in range(max(0, i - WINDOW), min(len(s), i + WINDOW + 1)):
                if j != i:
                    cooc[x, s[j]] += 1
    rows = cooc / np.maximum(np.linalg.norm(cooc, axis=1, keepdims=True), 1e-12)
    cosine = rows @ rows.T
    np.fill_diagonal(cosine, 0)

    def evaluate(name, score, qs=queries):
        hits = ndcg = 0.0
        for query, target in qs:
            s = score(query).astype(np.float64)
            t = s[target]
            s[query] = -np.inf
            s[target] = t
            # Candidates level with the target share its place, as ringtrain's evaluator does: each place
            # from `higher` to `higher + ties` counts 1 / (ties + 1), the average over a random order.
            higher = int((s > t).sum())
            ties = int((s == t).sum()) - 1
            for place in range(higher, min(higher + ties + 1, K)):
                hits += 1 / (ties + 1)
                ndcg += 1 / (ties + 1) / np.log2(place + 2)
        print(f"{name:58s} HR@{K} {hits / len(qs):.4f}  NDCG@{K} {ndcg / len(qs):.4f}  ({len(qs)} queries)",
              flush=True)

    evaluate("popularity (train counts)", lambda q: counts)
    for last in (0, 3, 5):
        tag = f"last {last} items" if last else "whole prefix"
        evaluate(f"co-occurrence +-{WINDOW}, {tag}", lambda q: cooc[q[-last:] if last else q].sum(0))
        evaluate(f"+-{WINDOW}-window cosine, {tag}", lambda q: cosine[q[-last:] if last else q].sum(0))
    evaluate(f"+-{WINDOW}-window cosine, query = +-{WINDOW} around target (LEAKS)",
             lambda q: cosine[q].sum(0), leaky)


if __name__ == "__main__":
    main()
