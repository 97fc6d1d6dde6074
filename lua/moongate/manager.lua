-- moongate.manager: the balancer manager (docs/balancer.md, "Live control"; SPEC 20), Apache's
-- balancer-manager: mg.manager_handler{ auth = fn } makes the content handler below.
--
-- GET gives an HTML page of every balancer and member (status, lbfactor, counters summed over
-- the workers, in-flight requests) with plain forms to act on them: no script is needed to read
-- or to use it. GET ?format=json gives the same as JSON. POST changes one member, from the
-- page's form (application/x-www-form-urlencoded, answered with a 303 back to the page) or as
-- JSON ({ "balancer": NAME, "member": URL, "status": "+D", "lbfactor": n, "max_conns": n }, answered with the
-- member as JSON). A change goes to the member's slot in shared memory (lua_manager.c,
-- handler/balancer.c): every worker follows it at its next pick, and it is kept across
-- reloads. auth(req) must return true, or the answer is 403; a form whose Origin is another
-- site is refused (403) so that a page elsewhere cannot post to it with the operator's cookies.
local cjson = require "cjson.safe"
local mg = require "moongate"

local M = {}

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local STATUS_WORDS = { D = "disabled", S = "stopped", H = "hot standby", N = "draining" }

local function status_text(m)
  local words = {}
  for c in m.status:gmatch(".") do words[#words + 1] = STATUS_WORDS[c] end
  if m.health_down then words[#words + 1] = "down (health check)" end
  if #words == 0 then words[1] = m.usable and "ok" or "in error" end
  return table.concat(words, ", ")
end

local ACTIONS = { { "+N", "Drain" }, { "+D", "Disable" }, { "-D-S-N", "Enable" }, { "=", "As configured" } }

local function page(list, uri, msg)
  local out = { '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>moongate balancer manager</title>',
    '<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}',
    'td,th{border:1px solid #999;padding:.3em .5em;text-align:left}th{background:#eee}form{display:inline}</style>',
    '</head><body><h1>Balancer manager</h1>' }
  if msg and msg ~= "" then out[#out + 1] = '<p id="msg"><strong>' .. esc(msg) .. '</strong></p>' end
  for _, b in ipairs(list) do
    out[#out + 1] = '<h2>balancer://' .. esc(b.name) .. '</h2><p>method: ' .. esc(b.method) .. '</p>'
    out[#out + 1] = '<table><tr><th>member</th><th>route</th><th>status</th><th>lbfactor</th><th>max_conns</th><th>in flight</th>'
      .. '<th>requests</th><th>errors</th><th>last error</th><th>act</th></tr>'
    for _, m in ipairs(b.members) do
      local hidden = '<input type="hidden" name="balancer" value="' .. esc(b.name) .. '">'
        .. '<input type="hidden" name="member" value="' .. esc(m.url) .. '">'
      local acts = {}
      for _, a in ipairs(ACTIONS) do
        acts[#acts + 1] = '<form method="post" action="' .. esc(uri) .. '">' .. hidden
          .. '<button type="submit" name="status" value="' .. esc(a[1]) .. '" data-member="' .. esc(m.url) .. '">'
          .. a[2] .. '</button></form>'
      end
      acts[#acts + 1] = '<form method="post" action="' .. esc(uri) .. '">' .. hidden
        .. '<input name="lbfactor" size="3" value="' .. m.lbfactor .. '"><button type="submit">Set lbfactor</button></form>'
      acts[#acts + 1] = '<form method="post" action="' .. esc(uri) .. '">' .. hidden
        .. '<input name="max_conns" size="4" value="' .. m.max_conns .. '"><button type="submit">Set max_conns</button></form>'
      out[#out + 1] = '<tr data-member="' .. esc(m.url) .. '"><td>' .. esc(m.url) .. '</td><td>' .. esc(m.route or "")
        .. '</td><td class="status">' .. esc(status_text(m)) .. (m.changed and ' (set here)' or '') .. '</td><td class="lbfactor">'
        .. m.lbfactor .. '</td><td class="max_conns">' .. (m.max_conns > 0 and m.max_conns or "none")
        .. '</td><td class="inflight">' .. m.inflight .. '</td><td>' .. string.format("%.0f", m.requests)
        .. '</td><td>' .. string.format("%.0f", m.errors) .. '</td><td>' .. esc(m.last_error) .. '</td><td>'
        .. table.concat(acts, " ") .. '</td></tr>'
    end
    out[#out + 1] = '</table>'
  end
  out[#out + 1] = '<p>Counters are summed over the workers. A change applies to every worker at once and is kept '
    .. 'across reloads; "As configured" goes back to init.lua.</p></body></html>\n'
  return table.concat(out)
end

local function json_member(list, bname, url)
  for _, b in ipairs(list) do
    if b.name == bname then
      for _, m in ipairs(b.members) do if m.url == url then return m end end
    end
  end
end

-- A whole number from lo to hi (a form's "" is no value), or false when it is not one.
local function whole(v, form, lo, hi)
  if v == nil or (form and v == "") then return nil end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < lo or n > hi then return false end
  return n
end

-- The host of an Origin or Referer value ("https://h:8080/x" -> "h:8080").
local function host_of(v) return v and v:match("^%a[%w+.-]*://([^/]+)") end

function M.handler(auth)
  return function(req)
    if auth and auth(req) ~= true then return 403, "403 Forbidden\n" end
    local method = ngx.req.get_method()
    local uri = ngx.var.uri
    if method == "GET" or method == "HEAD" then
      local args = ngx.req.get_uri_args()
      local list = mg._balancers()
      if args.format == "json" then
        return 200, cjson.encode({ balancers = list }) .. "\n", { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store" }
      end
      return 200, page(list, uri, type(args.msg) == "string" and args.msg or nil),
        { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store" }
    elseif method ~= "POST" then
      return 405, "405 Method Not Allowed\n", { Allow = "GET, HEAD, POST" }
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    local ctype = (ngx.var.content_type or ""):lower()
    local change, form
    if ctype:find("application/json", 1, true) then
      change = cjson.decode(body)
      if type(change) ~= "table" then return 400, "400 Bad Request: the body is not a JSON object\n" end
    else
      local origin = host_of(ngx.var.http_origin) or host_of(ngx.var.http_referer)
      if (ngx.var.http_origin or ngx.var.http_referer) and origin ~= ngx.var.http_host then
        return 403, "403 Forbidden: a form from another site\n"
      end
      change, form = ngx.decode_args(body), true
    end
    local bname, url, status, lbfactor = change.balancer, change.member, change.status, change.lbfactor
    if type(bname) ~= "string" or type(url) ~= "string" then
      return 400, "400 Bad Request: balancer and member (the member's URL) are required\n"
    end
    if status ~= nil and type(status) ~= "string" then return 400, "400 Bad Request: status must be a string like \"+D\"\n" end
    lbfactor = whole(lbfactor, form, 1, 100)
    if lbfactor == false then return 400, "400 Bad Request: lbfactor must be a whole number from 1 to 100\n" end
    local max_conns = whole(change.max_conns, form, 0, 1000000)
    if max_conns == false then
      return 400, "400 Bad Request: max_conns must be a whole number from 0 (no limit) to 1000000\n"
    end
    if status == nil and lbfactor == nil and max_conns == nil then
      return 400, "400 Bad Request: nothing to change (status, lbfactor, max_conns)\n"
    end
    local ok, err = mg._member_set(bname, url, status, lbfactor, max_conns)
    if not ok then
      local code = (err:find("^no balancer") or err:find("has no member")) and 404 or 400
      return code, code .. (code == 404 and " Not Found: " or " Bad Request: ") .. err .. "\n"
    end
    ngx.log(ngx.NOTICE, "manager: balancer ", bname, " member ", url, status and (" status " .. status) or "",
      lbfactor and (" lbfactor " .. lbfactor) or "", max_conns and (" max_conns " .. max_conns) or "", ", by ", ngx.var.remote_addr)
    if form then
      return 303, "", { Location = uri .. "?msg=" .. ngx.escape_uri("changed " .. url) }
    end
    local m = json_member(mg._balancers(), bname, url)
    return 200, cjson.encode({ balancer = bname, member = m }) .. "\n", { ["Content-Type"] = "application/json" }
  end
end

return M
