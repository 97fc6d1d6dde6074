-- _explain: the report of `moongate --explain` (docs/lua-api.md, "Testing a policy"), filled
-- by src/explain.c as the request runs: the hooks with what each changed (the request compared
-- before and after), internal restarts, the route, the member, the SCGI variables in order, or
-- the response.
-- output(json) renders it as text or as one JSON object with the keys route, hooks, member,
-- env ([name, value] pairs in order) and response.
local M = {}

local st

function M.start(method, target)
  st = { request = { method = method, target = target }, hooks = {}, current = nil,
         response = { status = nil, headers = {}, body = {} } }
end

local function env_copy(req)
  local out = {}
  for k, v in pairs(req.env) do out[k] = v end
  return out
end

local function snapshot(req)
  return { uri = req.uri, query = req.query, method = req.method, headers = req:headers(), env = env_copy(req) }
end

local function show(v)
  if v == nil then return "(none)" end
  if type(v) == "table" then return string.format("%q", table.concat(v, ", ")) end
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function same(a, b)
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
  end
  return a == b
end

local function sorted_union(a, b)
  local keys, seen = {}, {}
  for k in pairs(a) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  for k in pairs(b) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  return keys
end

-- What changed between two snapshots, as readable lines.
local function diff(a, b)
  local out = {}
  for _, f in ipairs({ "method", "uri", "query" }) do
    if a[f] ~= b[f] then out[#out + 1] = string.format("%s %s -> %s", f, show(a[f]), show(b[f])) end
  end
  for _, k in ipairs(sorted_union(a.headers, b.headers)) do
    if not same(a.headers[k], b.headers[k]) then
      out[#out + 1] = string.format("header %s: %s -> %s", k, show(a.headers[k]), show(b.headers[k]))
    end
  end
  for _, k in ipairs(sorted_union(a.env, b.env)) do
    if a.env[k] ~= b.env[k] then
      if b.env[k] == false then out[#out + 1] = string.format("env %s removed", k)
      else out[#out + 1] = string.format("env %s = %s", k, show(b.env[k])) end
    end
  end
  return out
end

function M.hook_begin(phase, fn, req, route)
  if route then st.route = route end
  local info = debug.getinfo(fn, "S")
  local src = info and (info.short_src .. ":" .. tostring(info.linedefined)) or "?"
  st.current = { phase = phase, source = src, before = snapshot(req) }
end

function M.hook_end(req, err)
  local h = st.current
  if not h then return end
  st.current = nil
  h.changes = diff(h.before, snapshot(req))
  h.before = nil
  h.error = err
  st.hooks[#st.hooks + 1] = h
end

function M.restart(location)
  st.route = nil
  st.hooks[#st.hooks + 1] = { phase = "restart", source = "", changes = { "internal redirect to " .. location } }
end

function M.handler(route)
  st.route = route
end

function M.backend(route, member, env)
  st.route, st.member, st.env = route, member, env
end

function M.response_status(code) st.response.status = code end
function M.response_header(name, value) table.insert(st.response.headers, { name, value }) end
function M.response_body(piece) table.insert(st.response.body, piece) end

local function text(answered)
  local out = {}
  local function add(...) out[#out + 1] = string.format(...) end
  add("request   %s %s", st.request.method, st.request.target)
  if st.route then
    local r = st.route
    add("route     %s%s -> %s  (%s, %s)", r.match, r.host and (" host " .. r.host) or "", r.target,
        r.handler, r.decl or "?")
    if r.captures then add("captures  %s", table.concat(r.captures, " ")) end
  else
    add("route     (none)")
  end
  if #st.hooks == 0 then
    add("hooks     (none ran)")
  else
    add("hooks")
    for _, h in ipairs(st.hooks) do
      local what = #h.changes > 0 and table.concat(h.changes, "; ") or "no change"
      if h.error then what = what .. "; FAILED: " .. h.error:gsub("\n.*", "") end
      add("  %-13s %-20s %s", h.phase, h.source, what)
    end
  end
  if st.member then
    local m = st.member
    add("member    %s  (#%d, lbfactor %d%s%s)", m.url, m.index, m.lbfactor, m.route and (", route " .. m.route) or "",
        m.sticky and (", sticky by " .. m.sticky) or "")
  end
  if answered then
    local r = st.response
    if r.status == nil then
      add("response  none: the connection closed without an answer (ngx.exit(444), 408 or 499)")
    else
      add("response  %s", tostring(r.status))
    end
    for _, h in ipairs(r.headers) do
      if h[1]:lower() ~= "date" then add("  %s: %s", h[1], h[2]) end
    end
    local body = table.concat(r.body)
    if body ~= "" then
      add("")
      out[#out + 1] = (body:gsub("\n$", ""))
    end
  elseif st.env then
    add("SCGI variables, in the order sent:")
    for _, kv in ipairs(st.env) do add("  %s=%s", kv[1], kv[2]) end
  elseif st.route then
    add("handler   %s (not run by --explain)", st.route.handler)
  end
  return table.concat(out, "\n") .. "\n"
end

-- Debian's lua-cjson encodes an empty table as {}: empty lists go out through a marker.
local EMPTY = "\0empty list\0"
local function list(t) return #t > 0 and t or EMPTY end

local function json(answered)
  local cjson = require "cjson"
  local hooks = {}
  for _, h in ipairs(st.hooks) do
    hooks[#hooks + 1] = { phase = h.phase, source = h.source, changes = list(h.changes), error = h.error }
  end
  local doc = {
    request = st.request,
    route = st.route or cjson.null,
    hooks = list(hooks),
    member = st.member or cjson.null,
    env = st.env or cjson.null,
  }
  if answered then
    doc.response = { status = st.response.status, headers = list(st.response.headers),
                     body = table.concat(st.response.body) }
  end
  return (cjson.encode(doc):gsub('"\\u0000empty list\\u0000"', "[]")) .. "\n"
end

function M.output(as_json, answered)
  if as_json then return json(answered) end
  return text(answered)
end

return M
