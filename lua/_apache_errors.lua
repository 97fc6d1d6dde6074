-- _apache_errors: ErrorDocument for `moongate import-apache` (docs/migrating-from-apache.md,
-- "Error pages"): what each ErrorDocument becomes in moongate's error_pages, and the merge of
-- the scopes that apply to a route.
--
-- Apache tells the kinds of its second argument apart as core.c does: with a space in it, a
-- message; starting with "/", a local URL (an internal redirect, the status kept: moongate's
-- local URI page); a URL with a scheme, a redirect (302) to it; anything else, a message.
-- "default" restores Apache's own page. A message or a redirect becomes a Lua function page.
-- Apache merges ErrorDocument status by status (a <Location> that sets 404 keeps the server's
-- 500); moongate's route table replaces the global one, so a route whose merged table differs
-- from the main server's gets the whole merged table.
local output = require "_apache_output"

local E = {}
local fmt = string.format
local lit = output.lit

-- The Lua source of the page for `msg`, or false for "default"; nil and why when Apache
-- would refuse it.
function E.page(msg)
  if msg == nil or msg == "" then return nil, "ErrorDocument needs a status and a page" end
  if msg == "default" then return false end
  if not msg:find(" ", 1, true) and msg:sub(1, 1) == "/" then return lit(msg) end
  if not msg:find(" ", 1, true) and msg:match("^[%a][%w+.-]*://[^%s]+$") then
    return fmt('function() return 302, "", { Location = %s } end', lit(msg))
  end
  -- A message: Apache sends it as the body of the error status, as HTML.
  local text = msg:gsub('^"', "")
  return fmt('function(req, status) return status, %s, { ["Content-Type"] = "text/html; charset=iso-8859-1" } end', lit(text))
end

-- The status of `code` (a string), when Apache accepts it for ErrorDocument (400 to 599), or nil.
function E.status(code)
  local n = tonumber(code or "")
  if n and n == math.floor(n) and n >= 400 and n <= 599 and tostring(code):match("^%d+$") then return n end
  return nil
end

-- The merged table of the scopes in `chain` (outermost first; each scope.errdocs maps a status
-- to { value = source or false, src }): status -> entry, with "default" entries dropped.
function E.merge(chain)
  local m = {}
  for _, s in ipairs(chain) do
    for status, e in pairs(s.errdocs or {}) do m[status] = e end
  end
  for status, e in pairs(m) do if e.value == false then m[status] = nil end end
  return m
end

-- The Lua source of a merged table, in status order ("false" when it is empty), and the
-- directives it comes from, joined.
function E.source(m)
  local codes = {}
  for status in pairs(m) do codes[#codes + 1] = status end
  table.sort(codes)
  if #codes == 0 then return "false", nil end
  local parts, srcs = {}, {}
  for _, c in ipairs(codes) do
    parts[#parts + 1] = fmt("[%d] = %s", c, m[c].value)
    srcs[#srcs + 1] = m[c].src
  end
  return "{ " .. table.concat(parts, ", ") .. " }", table.concat(srcs, "; ")
end

-- Whether two merged tables say the same.
function E.same(a, b)
  for k, v in pairs(a) do if not b[k] or b[k].value ~= v.value then return false end end
  for k in pairs(b) do if not a[k] then return false end end
  return true
end

return E
