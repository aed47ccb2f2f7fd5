-- wrk script of scripts/load-bench.sh: POSTs the call payload to wrk's URL, each request with
-- a distinct call_id (callbridge runs the hooks of one call one at a time, and a repeated
-- call_id would skip the create step on `when: not results.call_log_id`).
--   BENCH_RUN   a tag unique to this wrk run (call ids never repeat across runs)
--   BENCH_KEY   sent as `Authorization: Bearer <key>` (the fake CRM paths send the CRM token)
-- Each wrk thread gets its own prefix through setup(), then counts on its own.

local run = os.getenv("BENCH_RUN") or tostring(os.time())
local key = os.getenv("BENCH_KEY") or "bench-token"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix, n, headers

function init(args)
  prefix = run .. "-t" .. tostring(tid or 0) .. "-"
  n = 0
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }
end

local body_head = '{"call_id":"'
local body_tail = '","direction":"inbound","phone":"0901234567",'
  .. '"agent":{"id":"42","name":"Lan Nguyen","email":"lan@acme.example","extension":"1001"},'
  .. '"started_at":"2026-11-20T09:15:00Z","answered_at":"2026-11-20T09:15:07Z",'
  .. '"duration":125,"status":"answered","notes":"Customer asked about invoice 7731"}'

function request()
  n = n + 1
  return wrk.format("POST", nil, headers, body_head .. prefix .. n .. body_tail)
end
