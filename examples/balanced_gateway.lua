-- The balanced gateway of Apache's mod_proxy_scgi page:
--   ProxyPass "/scgi-bin/" "balancer://somecluster/"
--   <Proxy "balancer://somecluster">
--       BalancerMember "scgi://localhost:4000"
--       BalancerMember "scgi://localhost:4001"
--   </Proxy>
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.balancer("somecluster", {
  members = {
    { "scgi://localhost:4000" },
    { "scgi://localhost:4001" },
  },
})
mg.route("/scgi-bin/", "balancer://somecluster/")
