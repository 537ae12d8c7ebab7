-- The durable-turn load of bench/run: one wrk process sending chat turns
-- (POST /v1/sessions/{id}/messages, each with a unique client_message_id),
-- or, with BENCH_MODE=responses, chained Responses (POST /v1/responses with
-- the session's latest response as previous_response_id, each with a unique
-- Idempotency-Key): the id of each answer is the next request's
-- previous_response_id, so every session is one chain.
--
-- Sessions: each wrk thread owns every T-th line of BENCH_SESSIONS; a session
-- has at most one turn in flight and is handed out again (first in, first out)
-- only once the answer carrying its X-Request-Id is back, so the turns of a
-- session are sequential, as a chat client's are. (wrk's Lua API has no
-- connection identity, so a session moves between the thread's connections.)
-- A thread with no free session left (a connection lost with a turn in flight)
-- reuses one and counts it in "overlap".
--
-- Measured here, per acknowledged turn: latency from the request being handed
-- to wrk to the whole answer parsed (an SSE turn: up to its done event), into
-- a histogram (exact microseconds below 10 ms, 4 significant digits above),
-- per class when BENCH_NODE is set: "owner" (the node sent to owns the
-- session) or "hop". Every answer is counted by status and error code. done()
-- writes each thread's figures to BENCH_OUT (JSON; bench/report.py merges
-- them) and "id sent acked" per session to BENCH_OUT.sessions.
--
-- Environment: BENCH_SESSIONS (lines "id [owner node]"; responses: "id
-- latest-response-id"), BENCH_KEY (API key), BENCH_THREADS (wrk's -t),
-- BENCH_OUT, BENCH_RUN (client id prefix, unique per run), BENCH_STREAM=1
-- (streamed turns), BENCH_NODE (node id sent to), BENCH_MODE (responses).
--
-- A chained response lands in its session unless the chain forked (its
-- previous response was not the latest: a request that failed after its turn
-- was committed); such an answer counts as "200 forked", not acknowledged,
-- and the chain goes on from it.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec* ts);
]])
local clock_monotonic = 1
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(clock_monotonic, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

-- Main state (setup, done) ----------------------------------------------------

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- Each thread's figures come back as strings (report_json, report_sessions):
-- wrk 4.1 cannot copy nested tables between Lua states.
function done(summary, latency, requests)
  local out = os.getenv("BENCH_OUT")
  local sf = assert(io.open(out .. ".sessions", "w"))
  local parts = {}
  for _, t in ipairs(threads) do
    sf:write(t:get("report_sessions"))
    table.insert(parts, t:get("report_json"))
  end
  sf:close()
  local e = summary.errors
  local f = assert(io.open(out, "w"))
  f:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"wrk_latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d},"threads":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
  f:close()
end

-- Thread states (init, request, response) -------------------------------------

local key, run, node, stream_field, responses
local headers = {}
local free, head, tail = {}, 1, 0 -- FIFO of the indices of free sessions
local pending = {}                -- request id -> {session index, start}
local owners = {}
local next_request, reuse = 0, 0
local verify_call = false

local hist = { all = {}, owner = {}, hop = {} }
local answers, totals = {}, { sent = 0, acked = 0, overlap = 0, unmatched = 0 }
local ids, sent, acked = {}, {}, {}
local latest = {} -- responses: session index -> the chain's latest response id

local function json_object(t, fmt)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format(fmt, k, v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local reports = {
  report_json = function()
    local classes = {}
    for class, counts in pairs(hist) do
      local rows = {}
      for us, n in pairs(counts) do
        table.insert(rows, string.format("[%d,%d]", us, n))
      end
      classes[class] = "[" .. table.concat(rows, ",") .. "]"
    end
    return string.format('{"answers":%s,"totals":%s,"hist":%s}', json_object(answers, '"%s":%d'),
      json_object(totals, '"%s":%d'), json_object(classes, '"%s":%s'))
  end,
  report_sessions = function()
    local lines = {}
    for i, id in ipairs(ids) do
      lines[i] = id .. "\t" .. sent[i] .. "\t" .. acked[i] .. "\n"
    end
    return table.concat(lines)
  end,
}
-- done() reads these as globals of the thread's state (thread:get).
setmetatable(_G, { __index = function(_, name)
  return reports[name] and reports[name]()
end })

function init(args)
  key, run, node = os.getenv("BENCH_KEY"), os.getenv("BENCH_RUN"), os.getenv("BENCH_NODE")
  if node == "" then
    node = nil
  end
  stream_field = os.getenv("BENCH_STREAM") == "1" and ',"stream":true' or ""
  responses = os.getenv("BENCH_MODE") == "responses"
  assert(not (responses and stream_field ~= ""), "chained responses are not streamed")
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local line_no = 0
  for line in io.lines(os.getenv("BENCH_SESSIONS")) do
    local id, owner = line:match("^(%S+)%s*(%S*)")
    if id then
      if line_no % nthreads == tid then
        table.insert(ids, id)
        if responses then
          assert(owner ~= "", "no latest response for session " .. id)
          latest[#ids] = owner
        else
          owners[#ids] = owner
        end
        sent[#ids], acked[#ids] = 0, 0
        tail = tail + 1
        free[tail] = #ids
      end
      line_no = line_no + 1
    end
  end
  assert(#ids > 0, "no sessions for wrk thread " .. tid .. " in " .. os.getenv("BENCH_SESSIONS"))
  headers["Authorization"] = "Bearer " .. key
  headers["Content-Type"] = "application/json"
  -- wrk calls the first thread's request() once before it starts, only to
  -- check that the request parses; that call must not take a session.
  verify_call = tid == 0
end

function request()
  if verify_call then
    verify_call = false
    return wrk.format("GET", "/healthz")
  end
  local s
  if head <= tail then
    s = free[head]
    free[head] = nil
    head = head + 1
  else
    totals.overlap = totals.overlap + 1
    reuse = reuse % #ids + 1
    s = reuse
  end
  next_request = next_request + 1
  local rid = tid .. "-" .. next_request
  sent[s] = sent[s] + 1
  totals.sent = totals.sent + 1
  headers["X-Request-Id"] = rid
  pending[rid] = { s, now_us() }
  if responses then
    headers["Idempotency-Key"] = run .. "-" .. rid
    local body = '{"input":"bench turn ' .. rid .. '","previous_response_id":"' .. latest[s] ..
        '"' .. stream_field .. "}"
    return wrk.format("POST", "/v1/responses", headers, body)
  end
  local body = '{"content":"bench turn ' .. rid .. '","client_message_id":"' .. run .. "-" ..
      rid .. '"' .. stream_field .. "}"
  return wrk.format("POST", "/v1/sessions/" .. ids[s] .. "/messages", headers, body)
end

local function record(class, us)
  local v = math.floor(us)
  local scale = 1
  while v >= 10000 * scale do
    scale = scale * 10
  end
  v = v - v % scale
  local h = hist[class]
  h[v] = (h[v] or 0) + 1
end

-- A chained response's answer: its id becomes the chain's latest; it
-- acknowledges a turn of session s unless the chain forked.
local function chained(s, body)
  local id = body:match('"id"%s*:%s*"(resp_[%w_]+)"')
  if not id then
    return "200 without id", false
  end
  latest[s] = id
  if id:sub(6, 5 + #ids[s] + 1) ~= ids[s] .. "_" then
    return "200 forked", false
  end
  return "200", true
end

-- The answer's key in `answers`, and whether it acknowledges the turn.
local function classify(status, body, s)
  local code = body:match('"code"%s*:%s*"([%w_]+)"')
  if status ~= 200 then
    return status .. " " .. (code or "-"), false
  end
  if responses then
    return chained(s, body)
  end
  if stream_field ~= "" then
    if body:find("event: done", 1, true) then
      return "200", true
    end
    return "200 stream " .. (code or "incomplete"), false
  end
  if body:find('"reply"', 1, true) then
    return "200", true
  end
  return "200 without reply", false
end

function response(status, hdrs, body)
  local t = now_us()
  local rid = hdrs["X-Request-Id"] or hdrs["x-request-id"]
  local p = rid and pending[rid]
  if not p then
    totals.unmatched = totals.unmatched + 1
    return
  end
  pending[rid] = nil
  local s = p[1]
  local what, ok = classify(status, body, s)
  answers[what] = (answers[what] or 0) + 1
  if ok then
    acked[s] = acked[s] + 1
    totals.acked = totals.acked + 1
    record("all", t - p[2])
    if node and owners[s] ~= "" then
      record(owners[s] == node and "owner" or "hop", t - p[2])
    end
  end
  tail = tail + 1
  free[tail] = s
end
