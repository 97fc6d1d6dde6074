-- redis_denylist.lua: API keys on a denylist kept in Redis are refused (403) before the
-- request reaches the application. The access hook is OpenResty code, unchanged: it asks Redis
-- (SISMEMBER denylist KEY) with Debian's lua-resty-redis (`require "resty.redis"`, package
-- lua-nginx-redis) and puts the connection back in the worker's keep-alive pool, so a busy
-- gateway holds a few Redis connections, not one per request.
--
--   redis-cli SADD denylist stolen-key
--   curl -H 'X-Api-Key: stolen-key' http://127.0.0.1:8080/api/x   → 403
--   curl -H 'X-Api-Key: good-key'   http://127.0.0.1:8080/api/x   → 200
local mg = require "moongate"
local redis = require "resty.redis"

mg.listen("127.0.0.1:8080")

local REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

local function deny(status, text)
  ngx.status = status
  ngx.say(text)
  return ngx.exit(status)
end

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = { access = function()
  local key = ngx.var.http_x_api_key
  if not key then return deny(401, "X-Api-Key required") end
  local red = redis:new()
  red:set_timeouts(500, 500, 500) -- connect, send, read (ms)
  local ok, err = red:connect(REDIS_HOST, REDIS_PORT)
  if not ok then
    -- Fail closed: without the denylist nobody is let through.
    ngx.log(ngx.ERR, "denylist: cannot connect to redis: ", err)
    return deny(503, "denylist unavailable")
  end
  local listed, err = red:sismember("denylist", key)
  if not listed then
    ngx.log(ngx.ERR, "denylist: ", err)
    return deny(503, "denylist unavailable")
  end
  red:set_keepalive(30000, 16) -- idle ms, connections kept per worker
  if listed == 1 then return deny(403, "this key is denied") end
end } })
