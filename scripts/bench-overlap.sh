#!/usr/bin/env bash
# ddp.overlap_sparse off against on, on the reference workload with shared tables, in alternating runs
# (scripts/bench-ab.sh: pairs/s, median step, the sparse sync left on the step and the helper's part during
# backward, per run and on average; exit 1 unless the exported vectors are identical, as the overlap moves
# work, not arithmetic).
#   scripts/bench-overlap.sh [RANKS]     # default 2; the H100 machine: 8
# Environment: as scripts/bench-ab.sh (ROUNDS, STEPS, BIND_TO).
exec "$(dirname "${BASH_SOURCE[0]}")/bench-ab.sh" ddp.overlap_sparse false true "${1:-2}"
