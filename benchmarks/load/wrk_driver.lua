-- wrk driver for benchmarks/load/run.py (wrk 4.x with LuaJIT).
--
-- The run's specification is a Lua file named by YINXIN_LOAD_SPEC, written by _wrk.py:
--   method, path, headers (table), clients (list of addresses sent as X-Forwarded-For, one per
--   simulated client, cycled per request), body (string), bodies (a list, cycled per request) or
--   body_prefix/body_suffix (a unique number goes between them), idempotency (bool: a unique Idempotency-Key per request),
--   run_id (string), expect (a substring every 2xx body must contain, or nil),
--   limit (responses per thread, 0 = none).
--
-- Count bound: when a thread has seen `limit` responses it sends SIGINT to wrk itself; wrk's
-- main thread then stops every thread (the same path as Ctrl+C), so a run ends at whichever
-- comes first, the count or -d. The summary is one JSON line on stdout after "YINXIN-JSON ".
local ffi = require("ffi")
ffi.cdef([[
int kill(int pid, int sig);
int getpid(void);
]])

local spec = dofile(os.getenv("YINXIN_LOAD_SPEC"))
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  responses, non2xx, unexpected, sent = 0, 0, 0, 0
  statuses = {}
  signalled = false
  static = {}
  if spec.body_prefix == nil then
    -- Every request is one of a few fixed strings (a client address, a body): build them once.
    local count = #spec.clients
    if spec.bodies ~= nil then count = math.max(count, #spec.bodies) end
    for i = 1, count do
      local headers = {}
      for k, v in pairs(spec.headers) do headers[k] = v end
      headers["X-Forwarded-For"] = spec.clients[(i - 1) % #spec.clients + 1]
      local body = spec.body
      if spec.bodies ~= nil then body = spec.bodies[(i - 1) % #spec.bodies + 1] end
      static[i] = wrk.format(spec.method, spec.path, headers, body)
    end
  end
end

function request()
  sent = sent + 1
  local client = spec.clients[(sent - 1) % #spec.clients + 1]
  if spec.body_prefix == nil then
    return static[(sent - 1) % #static + 1]
  end
  local unique = spec.run_id .. "-" .. tid .. "-" .. sent
  local headers = {}
  for k, v in pairs(spec.headers) do headers[k] = v end
  headers["X-Forwarded-For"] = client
  if spec.idempotency then headers["Idempotency-Key"] = unique end
  return wrk.format(spec.method, spec.path, headers, spec.body_prefix .. unique .. spec.body_suffix)
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  elseif spec.expect ~= nil and (body == nil or not string.find(body, spec.expect, 1, true)) then
    unexpected = unexpected + 1
  end
  if spec.limit > 0 and responses >= spec.limit and not signalled then
    signalled = true
    ffi.C.kill(ffi.C.getpid(), 2)
  end
end

function done(summary, latency, requests)
  local total_responses, total_non2xx, total_unexpected = 0, 0, 0
  local statuses_all = {}
  for _, thread in ipairs(threads) do
    total_responses = total_responses + (thread:get("responses") or 0)
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    total_unexpected = total_unexpected + (thread:get("unexpected") or 0)
    local st = thread:get("statuses") or {}
    for code, count in pairs(st) do statuses_all[code] = (statuses_all[code] or 0) + count end
  end
  local parts = {}
  for code, count in pairs(statuses_all) do
    table.insert(parts, string.format('"%d": %d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'YINXIN-JSON {"requests": %d, "responses": %d, "duration_us": %d, "non2xx": %d, '
      .. '"unexpected": %d, "statuses": {%s}, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "latency_us": {"p50": %d, "p90": %d, "p99": %d, '
      .. '"max": %d, "mean": %.1f}}\n',
    summary.requests, total_responses, summary.duration, total_non2xx, total_unexpected,
    table.concat(parts, ", "), e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
