-- redis_denylist.lua: API keys on a denylist kept in Redis are refused (403) before the
-- request reaches the application. The access hook asks Redis (SISMEMBER denylist KEY)
-- through a cosocket speaking RESP, and puts the connection back in the worker's keep-alive
-- pool, so a busy gateway holds a few Redis connections, not one per request.
--
--   redis-cli SADD denylist stolen-key
--   curl -H 'X-Api-Key: stolen-key' http://127.0.0.1:8080/api/x   → 403
--   curl -H 'X-Api-Key: good-key'   http://127.0.0.1:8080/api/x   → 200
local mg = require "moongate"

mg.listen("127.0.0.1:8080")

local REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

-- One Redis command: a list of strings in, an integer or status reply out (nil, err on failure).
local function redis(args)
  local sock = mg.socket.tcp()
  sock:settimeout(500) -- ms, for connect, send and each receive
  local ok, err = sock:connect(REDIS_HOST, REDIS_PORT)
  if not ok then return nil, "connect: " .. err end
  local req = { "*", #args, "\r\n" }
  for _, a in ipairs(args) do
    req[#req + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  local sent, err = sock:send(table.concat(req))
  if not sent then return nil, "send: " .. err end
  local line, err = sock:receive("*l")
  if not line then
    sock:close()
    return nil, "receive: " .. err
  end
  sock:setkeepalive(30000, 16) -- idle ms, connections kept per worker
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == ":" then return tonumber(rest) end
  if kind == "+" then return rest end
  return nil, "redis: " .. rest
end

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = { access = function(req)
  local key = req.headers["X-Api-Key"]
  if not key then return req:exit(401, "X-Api-Key required\n") end
  local listed, err = redis({ "SISMEMBER", "denylist", key })
  if listed == nil then
    -- Fail closed: without the denylist nobody is let through.
    return req:exit(503, "denylist unavailable\n")
  end
  if listed == 1 then return req:exit(403, "this key is denied\n") end
end } })
