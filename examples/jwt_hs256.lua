-- jwt_hs256.lua: HS256 JSON Web Tokens checked at the gateway. A request to /api/ needs
-- `Authorization: Bearer <jwt>` signed with the shared secret; the signature, the algorithm
-- ("alg": "HS256" only: a token cannot choose "none"), the expiry ("exp") and "not before"
-- ("nbf") are checked, the subject reaches the application as X-User, and the token itself
-- does not. Errors are JSON, as an API client expects.
--
--   curl -H "Authorization: Bearer $(python3 make_jwt.py)" http://127.0.0.1:8080/api/x
local mg = require "moongate"
local cjson = require "cjson.safe"

mg.listen("127.0.0.1:8080")

local SECRET = "change-me-to-32-random-bytes"
local LEEWAY = 30 -- seconds of clock skew allowed on exp and nbf

-- base64url (RFC 7515) → bytes, or nil.
local function unb64url(s)
  s = s:gsub("-", "+"):gsub("_", "/")
  return ngx.decode_base64(s) -- padding is optional, as in ngx.decode_base64
end

local function b64url(bytes)
  return (ngx.encode_base64(bytes, true):gsub("+", "-"):gsub("/", "_"))
end

local function refuse(why)
  ngx.status = 401
  ngx.header["Content-Type"] = "application/json"
  ngx.header["WWW-Authenticate"] = 'Bearer error="invalid_token"'
  ngx.say(cjson.encode({ error = "invalid_token", error_description = why }))
  return ngx.exit(401)
end

-- The claims of a valid token, or nil and why not.
local function verify(token)
  local h64, p64, s64 = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
  if not h64 then return nil, "not a JWS compact token" end
  local header = cjson.decode(unb64url(h64) or "")
  if type(header) ~= "table" or header.alg ~= "HS256" then return nil, "alg must be HS256" end
  local expected = b64url(mg.hmac_sha256(SECRET, h64 .. "." .. p64))
  if expected ~= s64 then return nil, "bad signature" end
  local claims = cjson.decode(unb64url(p64) or "")
  if type(claims) ~= "table" then return nil, "payload is not JSON" end
  local now = ngx.time()
  if type(claims.exp) ~= "number" or claims.exp + LEEWAY < now then return nil, "token expired" end
  if claims.nbf and (type(claims.nbf) ~= "number" or claims.nbf - LEEWAY > now) then return nil, "token not yet valid" end
  return claims
end

mg.route("/api/", "scgi://127.0.0.1:4000/", { hooks = { access = function()
  local auth = ngx.var.http_authorization
  local token = auth and auth:match("^[Bb]earer%s+(%S+)$")
  if not token then return refuse("bearer token required") end
  local claims, why = verify(token)
  if not claims then return refuse(why) end
  ngx.req.set_header("X-User", tostring(claims.sub))
  ngx.req.clear_header("Authorization")
end } })
