-- wrk script of loadtest/wrk.py: POST one prebuilt body (JSON or v2 binary) on every
-- request, optionally pause between requests, and print one parseable summary line.
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local header_length = os.getenv("BENCH_HEADER_LENGTH") or ""
if header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

-- Mean pause per connection between requests (ms); drawn uniformly in [0, 2 * mean] so the
-- connections do not fall into lock-step.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
  function delay()
    return math.floor(math.random() * 2 * pause)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
