-- json_errors.lua: a JSON API gateway: every error, whether the gateway's (401, 404, 429, 502)
-- or the application's own error page, reaches the client as
--   {"error":{"status":502,"message":"bad gateway"}}
-- with Content-Type application/json. Successful responses pass through untouched.
local mg = require "moongate"
local cjson = require "cjson"

mg.listen("127.0.0.1:8080")

local messages = {
  [400] = "bad request", [401] = "unauthorized", [403] = "forbidden", [404] = "not found",
  [429] = "too many requests", [500] = "internal error", [502] = "bad gateway",
  [503] = "service unavailable", [504] = "gateway timeout",
}

local function json_error(status)
  return cjson.encode({ error = { status = status, message = messages[status] or "error" } })
end

local hooks = {
  access = function(req)
    if not req.headers["Authorization"] then return req:exit(401) end
  end,
  header_filter = function(req, res)
    if res.status >= 400 then
      req.ctx.error = res.status
      res.headers["Content-Type"] = "application/json"
    end
  end,
  -- The error body, whatever produced it, is replaced by the JSON one.
  body_filter = function(req, res, chunk, eof)
    if not req.ctx.error then return end
    return eof and json_error(req.ctx.error) or ""
  end,
}

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = hooks })
mg.route("/", function(req) return 404, json_error(404), { ["Content-Type"] = "application/json" } end)
