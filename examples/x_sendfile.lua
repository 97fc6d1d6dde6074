-- Apache's  ProxySCGISendfile On  (header X-Sendfile) and  ProxySCGISendfile X-Send-Static :
-- the app names a file, the gateway sends it with sendfile(2). Unlike Apache, only files
-- inside sendfile_roots can be sent: the app cannot make the gateway read /etc/shadow.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.route("/downloads/", "scgi://localhost:4000/", {
  sendfile = true,                       -- header X-Sendfile
  sendfile_roots = { "/srv/media" },
})
mg.route("/assets/", "scgi://localhost:4000/", {
  sendfile = "X-Send-Static",
  sendfile_roots = { "/srv/media" },
  sendfile_missing = 404,
})
