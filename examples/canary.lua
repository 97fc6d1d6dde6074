-- canary.lua: one new visitor in ten goes to the canary backend, and every visitor then stays
-- where they were sent (a cookie). The split is exact across workers because the count of new
-- visitors is a shared-dictionary counter, not a per-worker random draw.
local mg = require "moongate"

mg.listen("127.0.0.1:8080")
mg.workers(2)

local PERCENT = 10
local state = mg.shared("canary", "1m")

mg.balancer("release", {
  members = {
    { "scgi://127.0.0.1:4000", route = "stable" },
    { "scgi://127.0.0.1:4001", route = "canary" },
  },
  -- The access hook below has decided; the balancer only follows.
  method = function(req, members) return req.ctx.canary and 2 or 1 end,
})

mg.route("/", "balancer://release/", { hooks = {
  access = function(req)
    local group = (req.headers["Cookie"] or ""):match("canary=(%a+)")
    if not group then
      local n = state:incr("new_visitors", 1, 0)
      group = (n % (100 / PERCENT) == 0) and "yes" or "no"
      req.ctx.set_cookie = "canary=" .. group .. "; Path=/; Max-Age=86400; HttpOnly"
    end
    req.ctx.canary = group == "yes"
  end,
  header_filter = function(req, res)
    if req.ctx.set_cookie then res.headers["Set-Cookie"] = req.ctx.set_cookie end
  end,
} })
