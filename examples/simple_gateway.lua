-- The simple gateway of Apache's mod_proxy_scgi page:
--   ProxyPass "/scgi-bin/" "scgi://localhost:4000/"
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.route("/scgi-bin/", "scgi://localhost:4000/")
