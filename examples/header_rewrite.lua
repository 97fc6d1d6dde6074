-- Header rewriting: a request id for the app, security headers for the client, and no
-- version leak from the app.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.on("access", function(req)
  req.headers["X-Request-Id"] = req.id
end)
mg.on("header_filter", function(req, res)
  res.headers["X-Content-Type-Options"] = "nosniff"
  res.headers["X-Powered-By"] = nil
  if res.status >= 500 then res.headers["Retry-After"] = "5" end
end)
mg.route("/", "scgi://localhost:4000/")
