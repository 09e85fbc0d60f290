-- wrk script for the benchmark: the request comes from the environment, and the run ends with
-- one JSON line (prefixed BENCH_JSON) that bench/loadgen.py parses.
--
-- BENCH_METHOD, BENCH_PATH            the request line (default GET /)
-- BENCH_BODY_FILE                     a file whose bytes are the body (optional)
-- BENCH_TOKEN                         sent as "Authorization: Bearer <token>" (optional)
-- BENCH_IDEMPOTENCY_PREFIX            when set, every request carries a fresh Idempotency-Key:
--                                     <prefix>-<thread>-<counter>, so each one creates anew

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local token = os.getenv("BENCH_TOKEN")
local idempotency_prefix = os.getenv("BENCH_IDEMPOTENCY_PREFIX")
local body = nil
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  body = file:read("*a")
  file:close()
end

local headers = {}
if body then headers["Content-Type"] = "application/json" end
if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end

local thread_count = 0
function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

local counter = 0
local fixed = nil

if idempotency_prefix and idempotency_prefix ~= "" then
  -- A new key per request: wrk.format builds the request each time (cheap in C terms).
  function request()
    counter = counter + 1
    headers["Idempotency-Key"] = idempotency_prefix .. "-" .. thread_id .. "-" .. counter
    return wrk.format(method, path, headers, body)
  end
else
  function request()
    if not fixed then fixed = wrk.format(method, path, headers, body) end
    return fixed
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
