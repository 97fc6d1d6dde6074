-- rate_limit.lua: each API key may make 5 requests a second; bursts of up to 10 more are
-- delayed to that rate (nginx's `limit_req zone=per_key burst=10`), and beyond the burst the
-- client gets 429. The bucket lives in shared memory, so the limit holds across workers.
--
--   for i in $(seq 20); do curl -s -o /dev/null -w '%{http_code}\n' -H 'X-Api-Key: k1' http://127.0.0.1:8080/api/x; done
local mg = require "moongate"

mg.listen("127.0.0.1:8080")
mg.workers(2)

local per_key = mg.limit_req("per_key", { rate = "5r/s", burst = 10, size = "1m" })

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = { access = function(req)
  local key = req.headers["X-Api-Key"] or req.remote_addr
  local delay = per_key:incoming(key, true)
  if not delay then
    return req:exit(429, "too many requests\n", { ["Retry-After"] = "1" })
  end
  -- Within the burst: wait until the request's turn (the worker serves others meanwhile).
  if delay > 0.001 then mg.sleep(delay) end
end } })
