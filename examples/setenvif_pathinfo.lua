-- Apache's  SetEnvIf Request_URI . proxy-scgi-pathinfo  as a rewrite hook: the backend gets
-- SCRIPT_NAME = the route prefix and PATH_INFO = the rest, for the paths the hook chooses.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.on("rewrite", function(req)
  if req.uri:find("^/legacy/") then
    req.env["proxy-scgi-pathinfo"] = "1"
  end
end)
mg.route("/legacy/", "scgi://localhost:4000/")
mg.route("/", "scgi://localhost:4000/")
