-- wrk script for item 1 of `make bench`: closed-loop SMS creates, or dial API decisions.
-- Usage: wrk ... -s bench/load.lua URL -- PATH AUTHORIZATION BODIES_FILE [FIELD PREFIX]
-- Every line of BODIES_FILE is one form body (To, From, Body); each request picks one at
-- random. Requests are formatted once in init() so the Lua side costs almost nothing per
-- request and wrk stays far from being the bottleneck. With FIELD (the dial API's call_id),
-- every request gets FIELD=PREFIX-thread-n appended, a value no other request has, and is
-- formatted when it is sent.

local prepared = {}
local next_id = 0
local bodies = {}
local headers = nil
local path = nil
local unique = nil
local sent = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function init(args)
  local authorization, file = args[2], args[3]
  path = args[1]
  headers = {
    ["Authorization"] = authorization,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
  if args[4] then
    unique = "&" .. args[4] .. "=" .. args[5] .. "-" .. (thread_id or 0) .. "-"
  end
  for line in io.lines(file) do
    if #line > 0 then
      if unique then
        bodies[#bodies + 1] = line
      else
        prepared[#prepared + 1] = wrk.format("POST", path, headers, line)
      end
    end
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  if unique then
    sent = sent + 1
    return wrk.format("POST", path, headers, bodies[math.random(#bodies)] .. unique .. sent)
  end
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
