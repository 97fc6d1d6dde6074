-- A custom balancing policy in Lua: requests with X-Tenant go to the member whose route is
-- the tenant; the rest to the member with the fewest requests in flight.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.balancer("tenants", {
  method = function(req, members)
    local tenant = req.headers["X-Tenant"]
    local best
    for _, m in ipairs(members) do
      if m.usable then
        if tenant and m.route == tenant then return m end
        if not best or m.inflight < best.inflight then best = m end
      end
    end
    return best
  end,
  members = {
    { "scgi://localhost:4000", route = "blue" },
    { "scgi://localhost:4001", route = "green" },
  },
})
mg.route("/", "balancer://tenants/")
mg.route("=/status", mg.status_handler())
