-- wrk script: POST /predict with a rotating mix of real news texts, one JSON body per line of
-- the file named by $BODIES; counts answers by status and prints one JSON line at the end.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do
  bodies[#bodies + 1] = line
end

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
ok, refused, timeouts, other = 0, 0, 0, 0
function init(args)
  counter = id * 7919
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", "/predict", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 429 or status == 503 then refused = refused + 1
  elseif status == 504 then timeouts = timeouts + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local s = { ok = 0, refused = 0, timeouts = 0, other = 0 }
  for _, t in ipairs(threads) do
    s.ok = s.ok + t:get("ok")
    s.refused = s.refused + t:get("refused")
    s.timeouts = s.timeouts + t:get("timeouts")
    s.other = s.other + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "ok": %d, "refused": %d, "timeouts": %d, "other_status": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "socket_timeouts": %d, ' ..
    '"p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "mean_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.duration, s.ok, s.refused, s.timeouts, s.other,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000))
end
