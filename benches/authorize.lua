-- wrk script: POST the /v1/authorize body in $PARAPET_BENCH_BODY with the bearer token in
-- $PARAPET_BENCH_TOKEN, each request for another wallet (a pool of $PARAPET_BENCH_WALLETS random
-- addresses, default 10,000, built before the run so that the client spends no time on it);
-- wrk itself prints "Non-2xx or 3xx responses" when any answer failed, so a run that fails
-- closed is not mistaken for throughput. With $PARAPET_BENCH_ACKED set, the request id of every
-- 200 answer is appended to a file named by it plus a per-thread suffix (acknowledged decisions,
-- to be found in the chain afterwards); without it no answer is read, so the load runs at full
-- speed.
local f = assert(io.open(os.getenv("PARAPET_BENCH_BODY"), "r"))
local template = f:read("*a")
f:close()
local token = os.getenv("PARAPET_BENCH_TOKEN")
local wallets = tonumber(os.getenv("PARAPET_BENCH_WALLETS") or "10000")
local requests = {}
local next_request = 1
local acked_prefix = os.getenv("PARAPET_BENCH_ACKED")
local acked

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  for i = 1, wallets do
    local hex = {}
    for j = 1, 40 do hex[j] = string.format("%x", math.random(0, 15)) end
    local body = template:gsub('"address": "0x%x+"', '"address": "0x' .. table.concat(hex) .. '"', 1)
    requests[i] = wrk.format("POST", nil, headers, body)
  end
  next_request = math.random(1, wallets)
  if acked_prefix then
    acked = assert(io.open(acked_prefix .. "-" .. tostring(math.random(1, 1e9)), "w"))
    -- Line-buffered: wrk may exit without closing a thread's files.
    acked:setvbuf("line")
  end
end

if acked_prefix then
  function response(status, headers, body)
    if status == 200 then
      local id = body:match('"request_id"%s*:%s*"([^"]+)"')
      if id then acked:write(id, "\n") end
    end
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % wallets + 1
  return r
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, errors: connect %d, read %d, write %d, status %d, timeout %d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
