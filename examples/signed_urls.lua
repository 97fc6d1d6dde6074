-- signed_urls.lua: links under /files/ work only when signed and not expired, as nginx's
-- secure_link: ?expires=UNIX_TIME&sig=HEX with sig = hex(HMAC-SHA256(SECRET, path .. expires)).
-- The application (or any script with the secret) makes the links; the gateway checks them in
-- the access phase, so the backend never sees an unsigned request.
--
--   python3 -c 'import hmac,hashlib,time; e=int(time.time())+60; p="/files/report.pdf";
--     print("%s?expires=%d&sig=%s" % (p, e, hmac.new(b"change-me", (p+str(e)).encode(), hashlib.sha256).hexdigest()))'
local mg = require "moongate"

mg.listen("127.0.0.1:8080")

local SECRET = "change-me"

mg.route("/files/", "scgi://127.0.0.1:4000/", { hooks = { access = function(req)
  local args = mg.decode_args(req.query or "")
  local expires = tonumber(args.expires)
  if not expires or type(args.sig) ~= "string" then
    return req:exit(403, "unsigned link\n")
  end
  if expires < mg.time() then
    return req:exit(410, "link expired\n")
  end
  local want = mg.to_hex(mg.hmac_sha256(SECRET, req.uri .. args.expires))
  if args.sig:lower() ~= want then
    return req:exit(403, "bad signature\n")
  end
end } })
