-- auth_request.lua: every request under /app/ is first checked by an auth service, as
-- nginx's auth_request does. An access hook asks an internal route, backed by an SCGI auth
-- service, with a subrequest (the worker serves others while it waits); the service's answer
-- decides, and the user it names reaches the application as X-User (HTTP_X_USER).
--
-- The auth service here is examples/demo_app.py's /auth (Bearer tokens "letmein" for alice,
-- "hunter2" for bob). Try it with `make run`, then:
--   curl -H 'Authorization: Bearer letmein' http://127.0.0.1:8080/app/hello   → 200, HTTP_X_USER=alice
--   curl http://127.0.0.1:8080/app/hello                                      → 401
--   curl http://127.0.0.1:8080/_auth/check                                    → 404 (internal)
local mg = require "moongate"

mg.listen("127.0.0.1:8080")

-- internal = true: only subrequests and internal redirects reach it (nginx's `internal;`).
mg.route("/_auth/", "scgi://127.0.0.1:4001/", { internal = true, timeout = "2s" })

mg.route("/app/", "scgi://127.0.0.1:4000/", { pathinfo = true, hooks = { access = function(req)
  -- Only the auth service may name the user: drop whatever the client sent.
  req.headers["X-User"] = nil
  local res, err = req:subrequest("/_auth/check", {
    headers = { Authorization = req.headers["Authorization"] or "" },
  })
  if not res then
    return req:exit(503, "auth service unavailable: " .. err .. "\n")
  end
  if res.status == 401 then
    return req:exit(401, "authentication required\n", { ["WWW-Authenticate"] = 'Bearer realm="app"' })
  elseif res.status ~= 200 then
    return req:exit(403, "forbidden\n")
  end
  req.headers["X-User"] = res.headers["x-user"]
  req.headers["Authorization"] = nil -- the application trusts X-User, never the token
end } })
