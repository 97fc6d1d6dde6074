-- log_shipper.lua: every request is written to a Redis stream (XADD requests * ...) from the
-- log phase, after the response has been sent. A log hook in moongate may wait (OpenResty's
-- may not): it runs detached from the connection, so the client and the next request on its
-- keep-alive connection never wait for Redis; the Redis connection is pooled. A stream consumer
-- (XREAD, a consumer group) takes the records from there.
--
--   redis-cli XRANGE requests - +
local mg = require "moongate"
local redis = require "resty.redis"

mg.listen("127.0.0.1:8080")

local REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
local STREAM, MAXLEN = "requests", 100000

mg.route("/", "scgi://127.0.0.1:4000/")

mg.on("log", function()
  local red = redis:new()
  red:set_timeouts(200, 200, 200)
  local ok, err = red:connect(REDIS_HOST, REDIS_PORT)
  if not ok then
    ngx.log(ngx.WARN, "log shipper: cannot reach redis: ", err)
    return
  end
  local id, err = red:xadd(STREAM, "MAXLEN", "~", MAXLEN, "*",
    "id", ngx.var.request_id,
    "method", ngx.var.request_method,
    "uri", ngx.var.request_uri,
    "status", ngx.var.status,
    "bytes", ngx.var.body_bytes_sent,
    "ms", string.format("%.3f", ngx.var.request_time * 1000),
    "client", ngx.var.remote_addr)
  if not id then ngx.log(ngx.WARN, "log shipper: XADD failed: ", err) end
  red:set_keepalive(60000, 8)
end)
