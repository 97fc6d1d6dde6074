-- The demo configuration started by `make run`: a balanced route to two instances of the
-- demo SCGI app (examples/demo_app.py), a hook, a Lua health endpoint and the status page.
local mg = require "moongate"

mg.listen("127.0.0.1:8080")
mg.workers(2)
mg.set { access_log = "stdout" }

mg.balancer("demo", {
  method = "byrequests",
  members = {
    { "scgi://127.0.0.1:4000", route = "a" },
    { "scgi://127.0.0.1:4001", route = "b" },
  },
})

-- Every response says which gateway produced it.
mg.on("header_filter", function(req, res)
  res.headers["X-Served-By"] = "moongate"
end)

mg.route("/app/", "balancer://demo/", { pathinfo = true })
mg.route("=/health", function(req) return 200, "ok\n" end)
mg.route("=/status", mg.status_handler())
mg.route("/", "scgi://127.0.0.1:4000/")
