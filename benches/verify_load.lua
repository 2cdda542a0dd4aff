-- wrk script for benches/verify_load.rs: sends pre-made payment presentations, each exactly once.
--
-- AP2_LOAD_FILE holds one presentation per line: the DPoP proof, a tab, the JSON body. Every
-- line has its own challenge, checkout, closing hop and proof, so each request is a real
-- decision; thread k of AP2_LOAD_THREADS sends the lines i with i % threads == k, in order.
-- AP2_LOAD_TOKEN is the agent's access token. A thread that runs out resends its last line,
-- which the verifier refuses; the driver treats any such run as invalid.

local threads = {}
local counter = 0

-- AP2_LOAD_PAUSE_MS, when above 0: each connection waits that long after an answer before its
-- next request (wrk's latency figures leave the pause out), to hold a rate rather than a load.
local pause = tonumber(os.getenv("AP2_LOAD_PAUSE_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("AP2_LOAD_THREADS"))
  local token = os.getenv("AP2_LOAD_TOKEN")
  local path = os.getenv("AP2_LOAD_PATH") or "/v1/payments/verify"
  reqs = {}
  local i = 0
  for line in io.lines(os.getenv("AP2_LOAD_FILE")) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", path, {
        ["Authorization"] = "DPoP " .. token,
        ["DPoP"] = line:sub(1, tab - 1),
        ["Content-Type"] = "application/json",
      }, line:sub(tab + 1))
    end
    i = i + 1
  end
  sent = 0
  success = 0
  refused = 0
  other = 0
  exhausted = 0
end

function request()
  sent = sent + 1
  if sent > #reqs then
    exhausted = exhausted + 1
    return reqs[#reqs]
  end
  return reqs[sent]
end

function response(status, headers, body)
  if status == 200 and body:find('"status":"Success"', 1, true) then
    success = success + 1
  elseif status == 200 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local s, r, o, e = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("success")
    r = r + t:get("refused")
    o = o + t:get("other")
    e = e + t:get("exhausted")
  end
  io.write(string.format("AP2 decisions success=%d refused=%d other=%d exhausted=%d\n", s, r, o, e))
  io.write(string.format("AP2 latency p50_us=%d p99_us=%d mean_us=%d\n",
    latency:percentile(50), latency:percentile(99), latency.mean))
  io.write(string.format("AP2 totals requests=%d seconds=%f\n", summary.requests, summary.duration / 1e6))
end
