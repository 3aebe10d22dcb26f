-- wrk script for bench/run.sh: optional Authorization and Tollbu-Purpose
-- headers from the environment, and a machine-readable summary line
-- (wrk's own --latency table has no p99.9).
local token = os.getenv("BENCH_TOKEN")
local purpose = os.getenv("BENCH_PURPOSE")
wrk.headers["Accept"] = "application/json"
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if purpose and purpose ~= "" then
  wrk.headers["Tollbu-Purpose"] = purpose
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
