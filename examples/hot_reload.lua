-- Hot reload walk-through. Start moongate on this file, then edit the greeting below and
-- save: with watch = true the gateway reloads by itself (or send `moongate -s reload`).
-- Requests in flight finish on the old version; a broken edit is refused and logged with
-- file:line, and the running version stays.
local mg = require "moongate"
mg.listen("127.0.0.1:8080")
mg.set { watch = true }
local greeting = "hello from version 1\n"
mg.route("=/hello", function(req) return 200, greeting end)
mg.route("/", "scgi://localhost:4000/")
