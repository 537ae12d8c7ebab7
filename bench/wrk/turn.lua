dofile(os.getenv("PARLEY_BENCH_SESSIONS") or "sessions.lua")
local counter = 0
local offset = 0
function setup(thread) thread:set("offset", offset); offset = offset + 1 end
function request()
  counter = counter + 1
  local id = sessions[((counter * 2 + offset) % #sessions) + 1]
  return wrk.format("POST", "/v1/sessions/" .. id .. "/messages",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"},
    '{"content":"hello parley"}')
end
function done(summary, latency, requests)
  io.write(string.format("non2xx/errors: status=%d connect=%d read=%d timeout=%d\n", summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
