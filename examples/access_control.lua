-- An access hook: requests to /admin/ need a token header and come from loopback.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.route("/admin/", "scgi://localhost:4000/", {
  hooks = {
    access = function(req)
      if req.remote_addr ~= "127.0.0.1" then
        return req:exit(403, "forbidden\n")
      end
      if req.headers["X-Admin-Token"] ~= "s3cret" then
        return req:exit(401, "token required\n", { ["WWW-Authenticate"] = "Token" })
      end
      req.headers["X-Admin-Token"] = nil    -- the app never sees the token
      req.env.ADMIN_USER = "ops"
    end,
  },
})
mg.route("/", "scgi://localhost:4000/")
