#!/usr/bin/env bash
# Serving benchmark: throughput and latency of `ringtrain serve` with dynamic batching off and on, measured
# by wrk against loopback in the same run, with a hot swap during each run.
#   scripts/bench-serve.sh [--duration S] [--connections C] [--items N] [--dim D] [--faiss]
# Builds a random N x D export (default 100,000 x 64) in a temp dir, starts the server (result cache off so
# every request is scored), runs wrk for S seconds (default 10) with C connections (default 64) per mode,
# swaps the model mid-run (a new export dropped into serve.watch_dir, then POST /admin/reload), and prints
# requests/s, p50/p99 (wrk's, and the server's own p99 from /metrics) and the non-2xx count per mode and
# the on/off throughput ratio. The server's p99 covers handler entry to response only; wrk's also covers
# the connection and the wait for an I/O thread. (wrk once showed a p99 of 3-6 s against the server's
# 45 ms: the old HTTP library's listen backlog of 5 dropped wrk's burst of connects, those waited for TCP
# retransmits, and wrk's coordinated-omission correction turned each stall into hundreds of samples. The
# server listens with the kernel's largest backlog; see HttpServer::start.)
# Server settings: score_threads 2 (BENCH_SCORE_THREADS), max_wait_us 0 (BENCH_MAX_WAIT_US: batches are what
# queued while the scorers were busy; on this shared 2-core machine waiting 2 ms for a batch to fill lost
# throughput), HTTP I/O threads 2 (BENCH_HTTP_THREADS; each serves any number of connections). The table
# adds the server's CPU-seconds and requests per CPU-second, steadier than requests/s when other jobs share
# the machine.
# --faiss also prints FAISS HNSW recall@10 and speed against exact (serve_bench faiss, on a smaller catalog).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RINGTRAIN_BUILD_DIR:-$ROOT/build}"
DURATION=10 CONNECTIONS=64 ITEMS=100000 DIM=64 FAISS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --items) ITEMS="$2"; shift 2 ;;
    --dim) DIM="$2"; shift 2 ;;
    --faiss) FAISS=1; shift ;;
    *) echo "usage: $0 [--duration S] [--connections C] [--items N] [--dim D] [--faiss]" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "bench-serve: wrk is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
[ -x "$BUILD/bin/ringtrain" ] && [ -x "$BUILD/bin/serve_bench" ] || "$ROOT/scripts/build.sh"

WORK="$(mktemp -d /tmp/bench-serve.XXXXXX)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench-serve: generating ${ITEMS} x ${DIM} exports in $WORK" >&2
mkdir -p "$WORK/exports" "$WORK/next"
"$BUILD/bin/serve_bench" gen --items "$ITEMS" --dim "$DIM" --seed 1 --out "$WORK/exports/model-1.vec"
"$BUILD/bin/serve_bench" gen --items "$ITEMS" --dim "$DIM" --seed 2 --out "$WORK/next/model-2.vec"
"$BUILD/bin/serve_bench" gen --items "$ITEMS" --dim "$DIM" --seed 3 --out "$WORK/next/model-3.vec"

cpu_ticks() {  # user + system clock ticks of a process
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

metric() {  # metric PORT NAME -> value of an unlabelled metric
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

run_mode() {  # run_mode LABEL MAX_BATCH
  local label="$1" max_batch="$2" port
  rm -f "$WORK/exports/model-2.vec"
  "$BUILD/bin/ringtrain" serve --model "$WORK/exports/model-1.vec" --port 0 \
      --set serve.max_batch="$max_batch" --set serve.max_wait_us="${BENCH_MAX_WAIT_US:-0}" --set serve.score_threads="${BENCH_SCORE_THREADS:-2}" \
      --set serve.threads="${BENCH_HTTP_THREADS:-2}" --set serve.queue_capacity=4096 --set serve.cache_entries=0 \
      --set serve.watch_dir="$WORK/exports" --set serve.watch_interval_ms=200 --set serve.admin_token=bench \
      > "$WORK/server.out" 2> "$WORK/server-$label.log" &
  SERVER_PID=$!
  for _ in $(seq 600); do grep -q listening "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.out")
  [ -n "$port" ] || { echo "bench-serve: server did not start:" >&2; cat "$WORK/server-$label.log" >&2; exit 1; }
  # Hot swaps during the run: a new export appears in the watched dir (written aside, then renamed in), and
  # later an explicit admin reload.
  (
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.3 }')"
    cp "$WORK/next/model-2.vec" "$WORK/exports/.model-2.tmp" && mv "$WORK/exports/.model-2.tmp" "$WORK/exports/model-2.vec"
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.35 }')"
    curl -s -X POST -H "Authorization: Bearer bench" -d "{\"model\": \"$WORK/next/model-3.vec\"}" \
      "http://127.0.0.1:$port/admin/reload" > "$WORK/reload-$label.json"
  ) &
  local swapper=$!
  local cpu0; cpu0=$(cpu_ticks "$SERVER_PID")
  BENCH_ITEMS="$ITEMS" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$ROOT/scripts/bench-serve.lua" \
      "http://127.0.0.1:$port" > "$WORK/wrk-$label.out"
  local cpu1; cpu1=$(cpu_ticks "$SERVER_PID")
  wait "$swapper"
  local result version batches batch_sum
  result=$(grep '^RESULT' "$WORK/wrk-$label.out")
  version=$(metric "$port" ringtrain_serve_model_version)
  batches=$(metric "$port" ringtrain_serve_batch_size_count)
  batch_sum=$(metric "$port" ringtrain_serve_batch_size_sum)
  # The server's own p99 (handler entry to response, batching wait included), beside wrk's p99.
  local server_p99
  server_p99=$(metric "$port" 'ringtrain_serve_request_seconds_quantile{quantile="0.99"}')
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID"; SERVER_PID=""
  # Requests per CPU-second the server used: on a shared machine this is steadier than requests/s.
  local per_cpu
  per_cpu=$(echo "$result" | awk -v c=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" \
      '{ for (i = 1; i <= NF; i++) if ($i ~ /^requests=/) { split($i, a, "="); printf "%.0f", (c > 0 ? a[2] / (c / hz) : 0) } }')
  echo "$label $result server_p99_ms=$(awk -v q="$server_p99" 'BEGIN { printf "%.2f", q * 1000 }') version=$version mean_batch=$(awk -v s="$batch_sum" -v n="$batches" 'BEGIN { printf "%.1f", (n > 0 ? s / n : 0) }') per_cpu=$per_cpu cpu_s=$(awk -v c=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", c / hz }')"
}

echo "bench-serve: wrk -t2 -c$CONNECTIONS -d${DURATION}s, GET /recommend?item=<random>&k=10, cache off" >&2
OFF=$(run_mode off 1)
ON=$(run_mode on 64)
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
printf '\n%-9s %9s %8s %8s %12s %7s %8s %9s %10s %10s %11s\n' batching req/s p50_ms p99_ms server_p99ms non2xx sockerr versions mean_batch server_cpu_s req/cpu_s
for line in "$OFF" "$ON"; do
  printf '%-9s %9s %8s %8s %12s %7s %8s %9s %10s %10s %11s\n' "$(echo "$line" | cut -d' ' -f1)" "$(field "$line" rps)" \
    "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" "$(field "$line" server_p99_ms)" "$(field "$line" non2xx)" "$(field "$line" socket_errors)" \
    "1->$(field "$line" version)" "$(field "$line" mean_batch)" "$(field "$line" cpu_s)" "$(field "$line" per_cpu)"
done
awk -v on="$(field "$ON" rps)" -v off="$(field "$OFF" rps)" \
  'BEGIN { printf "throughput ratio on/off: %.2fx (goal >= 3x, with p99 < 20 ms)\n", on / off }'
awk -v on="$(field "$ON" per_cpu)" -v off="$(field "$OFF" per_cpu)" \
  'BEGIN { printf "requests per server CPU-second on/off: %.2fx\n", on / off }'
echo "machine load during the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"

if [ "$FAISS" = 1 ]; then
  echo
  "$BUILD/bin/serve_bench" faiss --items "${FAISS_ITEMS:-20000}" --dim "$DIM" --queries 1000
fi
