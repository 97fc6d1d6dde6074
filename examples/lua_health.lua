-- A health endpoint in Lua, answered by the gateway itself, and a timer that keeps a
-- per-worker counter the endpoint reports.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
local started = os.time()
local ticks = 0
mg.timer(1, function() ticks = ticks + 1 end)
mg.route("=/health", function(req)
  return 200, string.format('{"status":"ok","uptime":%d,"ticks":%d}\n', os.time() - started, ticks),
    { ["Content-Type"] = "application/json" }
end)
mg.route("/", "scgi://localhost:4000/")
