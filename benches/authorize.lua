-- wrk script: POST the /v1/authorize body in $PARAPET_BENCH_BODY with the bearer token in
-- $PARAPET_BENCH_TOKEN; counts non-2xx answers so a run that fails closed is not mistaken for
-- throughput.
local f = assert(io.open(os.getenv("PARAPET_BENCH_BODY"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PARAPET_BENCH_TOKEN")

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("non-200: %d (errors counted by wrk: connect %d, read %d, write %d, status %d, timeout %d)\n",
    bad, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
