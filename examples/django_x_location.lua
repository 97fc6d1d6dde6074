-- Apache's  ProxySCGIInternalRedirect X-Location  for Django, which makes local URLs absolute
-- in Location: the app answers 200 with X-Location: /path, and the gateway serves /path
-- instead (a GET, with REDIRECT_URL and friends), without a round trip to the client.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.route("/django/", "scgi://localhost:4000/", {
  pathinfo = true,
  internal_redirect = "X-Location",
})
