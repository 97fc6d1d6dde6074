-- token_introspection.lua: OAuth 2.0 token introspection (RFC 7662) at the gateway. A request to
-- /api/ carries `Authorization: Bearer <opaque token>`; the access hook asks the authorization
-- server's introspection endpoint over HTTPS (moongate.http, lua-resty-http's interface, the
-- server's certificate verified against lua_ssl_trusted_certificate) whether the token is active,
-- and caches the answer in a shared dictionary until the token expires (at most CACHE_TTL), so
-- the endpoint sees one call per token, not one per request, in every worker together.
--
--   curl -H 'Authorization: Bearer 2YotnFZFEjr1zCsicMWpAA' http://127.0.0.1:8080/api/x
local mg = require "moongate"
local http = require "moongate.http"
local cjson = require "cjson.safe"

mg.listen("127.0.0.1:8080")
mg.set { lua_ssl_trusted_certificate = "/etc/ssl/certs/ca-certificates.crt" }

local INTROSPECT = "https://127.0.0.1:8443/introspect"
local CLIENT_ID, CLIENT_SECRET = "gateway", "gateway-secret"
local CACHE_TTL = 300 -- seconds; an inactive token is cached for 10 s

local cache = mg.shared("tokens", "1m")

-- The introspection result {active = bool, sub = ..., exp = ...}, or nil and why.
local function introspect(token)
  local httpc = http.new()
  httpc:set_timeout(2000)
  local res, err = httpc:request_uri(INTROSPECT, {
    method = "POST",
    body = ngx.encode_args({ token = token, token_type_hint = "access_token" }),
    headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Authorization"] = "Basic " .. ngx.encode_base64(CLIENT_ID .. ":" .. CLIENT_SECRET),
    },
    ssl_verify = true,
    keepalive_timeout = 60000,
    keepalive_pool = 16,
  })
  if not res then return nil, err end
  if res.status ~= 200 then return nil, "introspection answered " .. res.status end
  local info = cjson.decode(res.body)
  if type(info) ~= "table" then return nil, "introspection answered no JSON" end
  return info
end

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = { access = function()
  local token = (ngx.var.http_authorization or ""):match("^[Bb]earer%s+(%S+)$")
  if not token then return ngx.exit(401) end
  local key = "t:" .. ngx.md5(token)
  local sub = cache:get(key)
  if sub == nil then
    local info, err = introspect(token)
    if not info then
      ngx.log(ngx.ERR, "token introspection failed: ", err)
      return ngx.exit(503)
    end
    if info.active then
      sub = tostring(info.sub or "")
      local ttl = CACHE_TTL
      if type(info.exp) == "number" then ttl = math.min(ttl, info.exp - ngx.time()) end
      if ttl > 0 then cache:set(key, sub, ttl) end
    else
      sub = false
      cache:set(key, false, 10)
    end
  end
  if not sub then return ngx.exit(401) end
  ngx.req.set_header("X-User", sub)
  ngx.req.clear_header("Authorization")
end } })
