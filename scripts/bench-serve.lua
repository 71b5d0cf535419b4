-- wrk script for scripts/bench-serve.sh: GET /recommend for a random item of the 100,000-item catalog,
-- and a one-line machine-readable summary at the end.
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(seed * 7919 + os.time())
  items = tonumber(os.getenv("BENCH_ITEMS") or "100000")
end
function request()
  return wrk.format("GET", "/recommend?item=item" .. math.random(0, items - 1) .. "&k=10")
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
