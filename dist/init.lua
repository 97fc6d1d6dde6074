-- /etc/moongate/init.lua: the configuration `make install` puts in place (see
-- docs/deploying.md and docs/reference.md). Check a change with `moongate -t -c THIS_FILE`,
-- apply it with `systemctl reload moongate`.
local mg = require "moongate"

mg.listen("127.0.0.1:8080")
mg.workers("auto")
mg.set {
  user = "www-data", group = "www-data",
  error_log = "/var/log/moongate/error.log",
  access_log = "/var/log/moongate/access.log",
}

-- Your application's SCGI server (uWSGI with --scgi-socket, for instance):
mg.route("/", "scgi://127.0.0.1:4000/")
mg.route("=/healthz", function(req) return 200, "ok\n" end)
