-- wrk script for item 1 of `make bench`: closed-loop SMS creates.
-- Usage: wrk ... -s bench/load.lua URL -- PATH AUTHORIZATION BODIES_FILE
-- Every line of BODIES_FILE is one form body (To, From, Body); each request picks one at
-- random. Requests are formatted once in init() so the Lua side costs almost nothing per
-- request and wrk stays far from being the bottleneck.

local prepared = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  local path, authorization, bodies = args[1], args[2], args[3]
  for line in io.lines(bodies) do
    if #line > 0 then
      local headers = {
        ["Authorization"] = authorization,
        ["Content-Type"] = "application/x-www-form-urlencoded",
      }
      prepared[#prepared + 1] = wrk.format("POST", path, headers, line)
    end
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  return prepared[math.random(#prepared)]
end

-- One JSON line after wrk's own report; bench/wrk.py reads it. Latencies in microseconds;
-- errors.status counts answers with a status of 400 or more.
function done(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "non2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write,
    e.timeout))
end
