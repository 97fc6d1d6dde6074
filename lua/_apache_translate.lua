-- _apache_translate: the translation of `moongate import-apache` (docs/migrating-from-apache.md,
-- "Apache mod_proxy_scgi, directive by directive"): the tree that
-- lua/_apache_reader.lua reads, translated directive by directive into a translation's state.
--
-- What it owns: the directive table. DIRECTIVES and SECTIONS map a lower-case name to the
-- function that translates it (below, "the directive table"); a name in neither is kept as a
-- `-- not translated:` comment ("unknown or untranslatable directive", "unknown section").
-- <IfModule> is taken as true and <IfDefine NAME> as false (nothing is defined on the command
-- line). Scopes follow Apache's merge: the main server, each <VirtualHost>, each <Location> in
-- them. What only the whole configuration decides (which routes Apache could reach, what
-- applies to each) is lua/_import_apache.lua's, once every directive is translated.
--
-- translate(tree, path, root_dir, server_root, warn) returns the translation, t; a section
-- where Apache refuses it raises the reader's SyntaxError. `path` is the main file,
-- `root_dir` its folder, `server_root` the last ServerRoot (or nil), and warn(text) names a
-- problem on stderr. t holds, for the model that lua/_apache_output.lua describes:
--   root_name, listens, settings, settings_keys, balancers, balancer_order (as in the model);
--   main (the main server's scope), vhosts (the <VirtualHost> scopes, in order) and routes
--   (each ProxyPass: { path, target, src, node, scope, opts, notes, order }); a scope is
--   { kind, parent, env, setenvif, opts, deny, locations } (and a virtual host's names and
--   index, a location's path, node and order);
--   out_comments and out_untranslated, the texts of the closing comment blocks, and
--   untranslated_n, how many things were not translated;
-- and t:where(node), t:untranslated(node, why, label), for what the whole configuration finds.
-- Values put in t as Lua source are made with lit() and num() (lua/_apache_output.lua); every
-- other text in it is raw, for the output to pass through note().
--
-- directives() lists the directive table, for tests.
local M = {}

local reader = require "_apache_reader"
local output = require "_apache_output"
local errors = require "_apache_errors"

local fmt = string.format
local unpack = table.unpack or unpack
local lit, num = output.lit, output.num
local syntax = reader.syntax

local INT_MAX = 2147483647

-- A Unix socket's path fits in sockaddr_un.sun_path with its NUL.
local MAX_UNIX_PATH = 107

-- ---- one translation ------------------------------------------------------------------------
--
-- T is one translation: its state and the methods the directive table calls to build it.

local T = {}
T.__index = T

-- Scopes: the main server, each <VirtualHost>, each <Location> in them. A scope holds what
-- applies to the requests it covers; routes take the merge of main → virtual host →
-- locations, in the order Apache merges them.
local function new_scope(parent, kind)
  return { parent = parent, kind = kind, env = {}, setenvif = {}, opts = {}, deny = nil, locations = {}, locmatches = {} }
end

-- A <Location> or a <LocationMatch> (or <Location ~ RE>): the per-directory scopes whose
-- directives apply to part of the requests of a server.
local function is_loc(scope) return scope.kind == "location" or scope.kind == "locationmatch" end

function T:src(node)
  local file = node.file
  if file:sub(1, #self.base + 1) == self.base .. "/" then file = file:sub(#self.base + 2) end
  return fmt("%s:%d", file, node.line)
end

-- The directive as it reads (white space collapsed) and where it is: raw text, for note().
function T:where(node) return fmt("%s (%s)", (node.text:gsub("%s+", " ")), self:src(node)) end

-- A directive that changes request handling and has no translation (or, with `label`, one
-- whose translation needs a hand before it can run).
function T:untranslated(node, why, label)
  label = label or "not translated"
  self.untranslated_n = self.untranslated_n + 1
  why = why or "unknown or untranslatable directive"
  self.out_untranslated[#self.out_untranslated + 1] = fmt("%s: %s -- %s", label, self:where(node), why)
  self.warn(fmt("%s: %s: %s (%s)", self:src(node), label, (node.text:gsub("%s+", " ")), why))
end

-- A directive with no meaning for a gateway, or one whose effect is the gateway's default.
function T:comment(node, why)
  self.out_comments[#self.out_comments + 1] = self:where(node) .. (why and (" -- " .. why) or "")
end

-- `value` is Lua source: a lit(), num() or boolean.
function T:setting(node, key, value, note_text)
  self.settings[key] = { value = value, src = self:where(node), note = note_text }
  if not self.settings_order[key] then
    self.settings_order[key] = true
    self.settings_keys[#self.settings_keys + 1] = key
  end
end

function T:resolve_path(p)
  if reader.is_abs(p) or p:match("^%a+:") or p:sub(1, 1) == "|" then return p end
  return (self.server_root or self.root_dir) .. "/" .. p
end

-- ---- values ---------------------------------------------------------------------------------

-- A whole number written in decimal digits, from lo to hi; nil for anything else (a sign, an
-- exponent, hex, inf, nan or a number out of range: the output must hold finite numbers that
-- moongate's checks take).
local function whole(s, lo, hi)
  if type(s) ~= "string" or not s:match("^%d+$") or #s > 12 then return nil end
  local n = tonumber(s)
  if n < lo or n > hi then return nil end
  return n
end

-- An Apache time as Lua source: seconds, or "250ms" (ProxyPass parameters take ms, mi, hr);
-- nil unless it is a finite number from 0 to INT_MAX seconds.
local function time_value(s)
  local n, unit = tostring(s):match("^(%d+%.?%d*)(%a*)$")
  if not n or #n > 20 then return nil end
  local mul = ({ [""] = 1, s = 1, ms = 0.001, mi = 60, hr = 3600 })[unit]
  if not mul then return nil end
  local secs = tonumber(n) * mul
  if not secs or secs > INT_MAX then return nil end
  if unit == "ms" then return lit(n .. "ms") end
  return num(secs)
end

-- The NAME of a balancer://NAME URL, or nil.
local function balancer_name(url)
  return url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
end

-- ProxyPass URL: what moongate's route target becomes (and the balancer's name), or nil.
local function backend_url(url)
  local path = url:match("^unix:(/[^|]*)|scgi://")
  if path then
    if #path > MAX_UNIX_PATH then return nil end
    return "unix:" .. path .. "|scgi://"
  end
  local hostport = url:match("^[Ss][Cc][Gg][Ii]://([^/]+)")
  if hostport then return "scgi://" .. hostport .. "/" end
  local b = balancer_name(url)
  if b then return "balancer://" .. b .. "/", b end
  return nil
end

local function split_kv(a)
  local k, v = a:match("^([%w_]+)=(.*)$")
  return k and k:lower(), v
end

-- ---- balancers and their members --------------------------------------------------------------
--
-- key=value parameters come in three tables, each a lower-case name -> function: those of a
-- balancer (ProxySet, or a ProxyPass to balancer://), those of a member (BalancerMember), and
-- those of a ProxyPass to a lone backend. A member's or a route's function returns true when
-- it took its parameter, false when it named it untranslated: then the directive is dropped.
-- A balancer's parameter is taken or named on its own, and the directive goes on.

-- Connection tuning with no counterpart, on a member or a route. `secret` (mod_proxy_ajp's
-- shared secret) is not tuning: it falls through to "not translated".
local connection_tuning = { keepalive = true, disablereuse = true, enablereuse = true, flushpackets = true,
  flushwait = true, ping = true, min = true, max = true, smax = true, ttl = true, acquire = true,
  iobuffersize = true, receivebuffersize = true, responsefieldsize = true, addressttl = true,
  ["secret"] = false }

local BALANCER_PARAMS = {}

function BALANCER_PARAMS.lbmethod(self, node, b, v)
  local m = v:lower()
  if m == "byrequests" or m == "bytraffic" or m == "bybusyness" then b.method = { value = m, src = self:where(node) }
  else self:untranslated(node, "lbmethod " .. v .. " has no counterpart (byrequests, bytraffic, bybusyness)") end
end

function BALANCER_PARAMS.stickysession(self, node, b, v)
  local first, second = v:match("^([^|]+)|(.+)$")
  first = first or v
  if not first:match("^[%w%-_%.]+$") then self:untranslated(node, "stickysession name " .. v) return end
  local why
  if second and second ~= first then
    why = fmt("Apache reads the cookie %s and the parameter %s; moongate reads %s as both", first, second, first)
  end
  b.sticky = { value = first, src = self:where(node), note = why }
end

function BALANCER_PARAMS.maxattempts(self, node, b, v)
  local n = whole(v, 0, INT_MAX - 1)
  if not n then self:untranslated(node, "maxattempts " .. v .. ": expected a whole number of failovers") return end
  -- Apache counts failover attempts after the first try; moongate counts every try.
  b.maxattempts = { value = n + 1, src = self:where(node), note = "Apache's maxattempts=" .. v .. " failovers = " .. (n + 1) .. " tries" }
end

function BALANCER_PARAMS.nofailover(self, node, b, v)
  if v:lower() == "on" then self:untranslated(node, "nofailover=On (moongate always fails over before anything is sent)") end
end

local function no_counterpart_needed(self, node, b)
  b.notes[#b.notes + 1] = self:where(node) .. " -- no counterpart needed"
end
BALANCER_PARAMS.growth = no_counterpart_needed
BALANCER_PARAMS.forcerecovery = no_counterpart_needed

function BALANCER_PARAMS.timeout(self, node, b)
  b.notes[#b.notes + 1] = self:where(node) .. " -- moongate never queues for a busy member"
end

-- Apache's, with no counterpart: named as any unknown balancer parameter is, but known, so
-- that a ProxyPass to balancer:// passes them to the balancer.
-- failonstatus / failontimeout: Apache puts the member in error at the first such answer, for
-- its retry (60 s by default); moongate's passive health at fails = 1 does that, shared by the
-- workers (SPEC 20).
local function passive_of(self, node, b)
  b.passive = b.passive or { src = self:where(node), statuses = {}, timeouts = false }
  return b.passive
end

function BALANCER_PARAMS.failonstatus(self, node, b, v)
  local list = {}
  for code in v:gmatch("[^,]+") do
    local n = whole(code:match("^%s*(.-)%s*$"), 400, 599)
    if not n or #list == 16 then self:untranslated(node, "failonstatus " .. v .. ": expected up to 16 statuses from 400 to 599, separated by commas") return end
    list[#list + 1] = n
  end
  if #list == 0 then self:untranslated(node, "failonstatus: no status") return end
  passive_of(self, node, b).statuses = list
end

function BALANCER_PARAMS.failontimeout(self, node, b, v)
  local on = v:lower()
  if on ~= "on" and on ~= "off" then self:untranslated(node, "failontimeout " .. v .. ": expected On or Off") return end
  if on == "on" then passive_of(self, node, b).timeouts = true end
end

for _, k in ipairs({ "scolonpathdelim", "stickysessionsep" }) do
  BALANCER_PARAMS[k] = function(self, node) self:untranslated(node, "balancer parameter " .. k) end
end

function T:balancer_param(node, b, k, v)
  local fn = BALANCER_PARAMS[k]
  if fn then return fn(self, node, b, v) end
  self:untranslated(node, "balancer parameter " .. k)
end

function T:balancer(name)
  local b = self.balancers[name]
  if not b then
    b = { name = name, members = {}, notes = {} }
    self.balancers[name] = b
    self.balancer_order[#self.balancer_order + 1] = name
  end
  return b
end

local MEMBER_PARAMS = {}

function MEMBER_PARAMS.loadfactor(self, node, m, v)
  local n = v:match("^%d+%.?%d*$") and tonumber(v)
  if not n or n < 1 or n > 100 then self:untranslated(node, "loadfactor " .. v .. ": expected a number from 1 to 100") return false end
  m.opts[#m.opts + 1] = "lbfactor = " .. num(math.floor(n))
  return true
end

function MEMBER_PARAMS.route(self, node, m, v)
  m.opts[#m.opts + 1] = "route = " .. lit(v)
  return true
end

-- status=+H-D...: the flags moongate knows (R, hot standby, becomes H); a flag after "-"
-- clears, which is the default.
function MEMBER_PARAMS.status(self, node, m, v)
  local flags, bad = {}, nil
  local sign = "+"
  for c in v:gmatch(".") do
    if c == "+" or c == "-" then sign = c
    elseif sign == "+" then
      local u = c:upper()
      if u == "D" or u == "H" or u == "S" or u == "N" then flags[#flags + 1] = u
      elseif u == "R" then flags[#flags + 1] = "H"
      else bad = u end
    end
  end
  if bad then self:untranslated(node, "member status flag " .. bad) return false end
  if #flags > 0 then m.opts[#m.opts + 1] = "status = " .. lit("+" .. table.concat(flags)) end
  return true
end

local function member_time(key)
  return function(self, node, m, v, k)
    local t = time_value(v)
    if not t then self:untranslated(node, k .. " " .. v .. ": expected seconds") return false end
    m.opts[#m.opts + 1] = key .. " = " .. t
    return true
  end
end
MEMBER_PARAMS.retry = member_time("retry")
MEMBER_PARAMS.connectiontimeout = member_time("connect_timeout")
MEMBER_PARAMS.timeout = member_time("timeout")

function T:member(node, bname, url, params)
  local target = backend_url(url)
  if not target or target:find("^balancer:") then
    self:untranslated(node, "a balancer member must be scgi:// or unix:...|scgi:// (a socket path of at most " .. MAX_UNIX_PATH .. " bytes)")
    return
  end
  local m = { url = target:gsub("/$", ""), src = self:where(node), opts = {}, notes = {} }
  for _, a in ipairs(params) do
    local k, v = split_kv(a)
    if not k then self:untranslated(node, "parameter " .. a) return end
    local fn = MEMBER_PARAMS[k]
    if fn then
      if not fn(self, node, m, v, k) then return end
    elseif connection_tuning[k] then
      m.notes[#m.notes + 1] = k
    else
      self:untranslated(node, "member parameter " .. k)
      return
    end
  end
  local b = self:balancer(bname)
  b.members[#b.members + 1] = m
end

-- ---- routes ---------------------------------------------------------------------------------

-- Parameters of a ProxyPass to a lone backend (to a balancer, they are the balancer's).
local ROUTE_PARAMS = {}

local function route_time(key)
  return function(self, node, route, v, k)
    local t = time_value(v)
    if not t then self:untranslated(node, k .. " " .. v .. ": expected seconds") return false end
    route.opts[key] = { value = t, src = route.src }
    return true
  end
end
ROUTE_PARAMS.timeout = route_time("timeout")
ROUTE_PARAMS.connectiontimeout = route_time("connect_timeout")

function ROUTE_PARAMS.retry(self, node, route, v)
  route.notes[#route.notes + 1] = "retry=" .. v .. ": moongate tries a lone backend on every request"
  return true
end

-- ---- regular expressions ------------------------------------------------------------------------
--
-- Apache compiles ProxyPassMatch, <LocationMatch> and SetEnvIf regexes with PCRE2, with its
-- default RegexDefaultOptions DOTALL (the `s` of mg.re's options) and DOLLAR_ENDONLY (no
-- letter: it only matters for a subject ending in a newline, which a path can only hold
-- percent-encoded). The translation hands them to mg.re and moongate's "~" routes as written.

-- nil when `re` compiles, else PCRE2's message (Apache refuses such a configuration).
-- M.re is mg.re, which the C side passes as sys.re (lua/_import_apache.lua sets it).
local function regex_error(re)
  if type(M.re) ~= "table" then error("the importer needs mg.re (sys.re) to check regular expressions") end
  local ok2, from, _, err = pcall(M.re.find, "", re, "s")
  if not ok2 then return tostring(from) end
  if from == nil and err then return tostring(err) end
  return nil
end
M.regex_error = regex_error

-- Apache's value templates (ap_pregsub, for a SetEnvIf value and a ProxyPassMatch URL): `$0`..
-- `$9` are the match and its groups (nothing for one that did not take part), a backslash
-- makes the next character literal, anything else is itself. As Lua source reading the groups
-- from the match table `m`; `changes` is false when the template gives itself back.
local function template_expr(v)
  local parts, buf, changes = {}, {}, false
  local function flush()
    if #buf > 0 then parts[#parts + 1] = lit(table.concat(buf)); buf = {} end
  end
  local i = 1
  while i <= #v do
    local c = v:sub(i, i)
    local d = v:sub(i + 1, i + 1)
    if c == "$" and d:match("^%d$") then
      flush()
      parts[#parts + 1] = fmt("(m[%s] or \"\")", d)
      changes = true
      i = i + 2
    elseif c == "\\" and d ~= "" then
      buf[#buf + 1] = d
      changes = true
      i = i + 2
    else
      buf[#buf + 1] = c
      i = i + 1
    end
  end
  flush()
  if #parts == 0 then parts[1] = '""' end
  return table.concat(parts, " .. "), changes
end
M.template_expr = template_expr

-- The parts of a ProxyPassMatch URL: what names the backend (a host and port, a socket, a
-- balancer) and the path after it, which the match fills in; nil for another scheme.
local function url_parts(url)
  local sock, rest = url:match("^unix:(/[^|]*)|[Ss][Cc][Gg][Ii]://(.*)$")
  if not sock then rest = url:match("^[Ss][Cc][Gg][Ii]://(.*)$") or url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://(.*)$") end
  if not rest then return nil end
  local host, path = rest:match("^([^/]*)(.*)$")
  return (sock or "") .. host, path
end

-- ProxyPass PATH URL [key=value ...] (PATH implied inside <Location>); with `regex`, PATH is a
-- regular expression (ProxyPassMatch), the route is
-- "~PATH", its URL may hold $1.., and `!` makes it an exclusion: matching paths are not proxied.
function T:proxypass(node, scope, path, url, params, regex)
  if regex then
    local err = regex_error(path)
    if err then self:untranslated(node, "bad regular expression (Apache refuses it): " .. err) return end
  end
  local route = { path = regex and ("~" .. path) or path, regex = regex and path or nil, src = self:where(node), node = node,
                  scope = scope, opts = {}, notes = {}, order = #self.routes + 1, from_location = is_loc(scope) or nil }
  if url == "!" then
    if not regex then
      self:untranslated(node, "exclusions (ProxyPass PATH !) have no counterpart; give that path its own route")
      return
    end
    if #params > 0 then self:untranslated(node, "parameters after ! have no meaning") return end
    route.exclusion = true
    self.routes[#self.routes + 1] = route
    return
  end
  local target, bname = backend_url(url)
  if not target then
    self:untranslated(node, "moongate speaks SCGI only (scgi://, unix:...|scgi:// with a socket path of at most " .. MAX_UNIX_PATH .. " bytes, balancer://)")
    return
  end
  if regex then
    local host, upath = url_parts(url)
    if not host or host:find("[%$\\]") then
      self:untranslated(node, "the backend's address depends on the match; moongate's route names one backend")
      return
    end
    route.url_path = upath
  elseif not path:match("^/") then self:untranslated(node, "the path must start with /") return end
  route.target, route.bname = target, bname
  for _, a in ipairs(params) do
    local k, v = split_kv(a)
    if not k then
      self:untranslated(node, "flag " .. a .. " has no counterpart")
      return
    end
    local lone = not bname and ROUTE_PARAMS[k]
    if lone then
      if not lone(self, node, route, v, k) then return end
    elseif connection_tuning[k] then
      route.notes[#route.notes + 1] = k .. "=" .. v .. ": connection tuning with no counterpart"
    elseif bname and BALANCER_PARAMS[k] then
      self:balancer_param(node, self:balancer(bname), k, v)
    else
      self:untranslated(node, "parameter " .. k)
      return
    end
  end
  if bname then self:balancer(bname).used = true end
  self.routes[#self.routes + 1] = route
  return route
end

-- ---- SetEnvIf ---------------------------------------------------------------------------------

-- SetEnvIf's regular expression as a Lua pattern: literal characters, ., ^ at the start,
-- $ at the end, [classes], \d \w \s and escaped punctuation, and * + ? after one of those.
-- Anything else (groups, alternation, counted repetition) returns nil.
local function regex_to_pattern(re, nocase)
  local out, i, n = {}, 1, #re
  local function lit_char(c)
    if nocase and c:match("%a") then return "[" .. c:lower() .. c:upper() .. "]" end
    if c:match("[%^%$%(%)%%%.%[%]%*%+%-%?]") then return "%" .. c end
    return c
  end
  local escapes = { d = "%d", D = "%D", w = "[%w_]", W = "[^%w_]", s = "%s", S = "%S" }
  local last_atom = false
  while i <= n do
    local c = re:sub(i, i)
    if c == "^" and i == 1 then out[#out + 1] = "^"; last_atom = false
    elseif c == "$" and i == n then out[#out + 1] = "$"; last_atom = false
    elseif c == "." then out[#out + 1] = "."; last_atom = true
    elseif c == "\\" then
      local d = re:sub(i + 1, i + 1)
      if d == "" then return nil end
      if escapes[d] then out[#out + 1] = escapes[d]
      elseif d:match("%w") then return nil
      else out[#out + 1] = lit_char(d) end
      i = i + 1; last_atom = true
    elseif c == "[" then
      local j, buf = i + 1, { "[" }
      if re:sub(j, j) == "^" then buf[#buf + 1] = "^"; j = j + 1 end
      if re:sub(j, j) == "]" then buf[#buf + 1] = "%]"; j = j + 1 end
      while true do
        local d = re:sub(j, j)
        if d == "" then return nil end
        if d == "]" then break end
        if d == "\\" then
          local e = re:sub(j + 1, j + 1)
          if escapes[e] and #escapes[e] == 2 then buf[#buf + 1] = escapes[e]
          elseif e:match("%p") then buf[#buf + 1] = "%" .. e
          else return nil end
          j = j + 2
        elseif d == "%" then buf[#buf + 1] = "%%"; j = j + 1
        else
          if nocase and d:match("%a") and re:sub(j + 1, j + 1) ~= "-" and re:sub(j - 1, j - 1) ~= "-" then
            buf[#buf + 1] = d:lower() .. d:upper()
          else
            buf[#buf + 1] = d
          end
          j = j + 1
        end
      end
      buf[#buf + 1] = "]"
      out[#out + 1] = table.concat(buf)
      i = j; last_atom = true
    elseif c == "*" or c == "+" or c == "?" then
      if not last_atom then return nil end
      if re:sub(i + 1, i + 1):match("[%?%+]") then return nil end -- lazy/possessive
      out[#out + 1] = c == "*" and "*" or c; last_atom = false
    elseif c:match("[%(%)|{}]") or c == "^" or c == "$" then
      return nil
    else
      out[#out + 1] = lit_char(c); last_atom = true
    end
    i = i + 1
  end
  return table.concat(out)
end

-- The path Apache's regexes see, as Lua source. A server's or virtual host's SetEnvIf runs
-- when the request is read, on the path as sent (RAW_PATH: before the query, nothing decoded
-- or normalized); in a <Location> or <LocationMatch> it runs after the path is decoded
-- (DECODED_PATH, as ProxyPassMatch and <LocationMatch> match it): req.uri is normalized but
-- keeps %XX for what is not unreserved, so the rest is decoded ("+" stays itself).
M.RAW_PATH = 'req.raw_uri:match("^[^?]*")'
M.DECODED_PATH = 'mg.unescape_uri((req.uri:gsub("%+", "%%2B")))'

-- SetEnvIf attributes with a counterpart in req, as Lua source.
local special_attrs = {
  request_method = "req.method", remote_addr = "req.remote_addr",
  request_protocol = 'string.format("HTTP/%.1f", req.http_version)',
}

-- SetEnvIf ATTRIBUTE REGEX [!]VAR[=VALUE] ...: a condition and assignments to req.env, or nil.
-- `subject` is Lua source; `pattern` and the names and values are raw text, for lit(). A
-- regex the Lua pattern cannot hold (groups, alternation, counts ...) or a value with $1.. or
-- a backslash is matched with mg.re instead: `re` and `flags` are set, and each assignment has
-- `expr`, its value as Lua source reading the groups from the match `m`.
function T:setenvif(node, nocase, scope)
  local a = node.args
  if #a < 3 then self:untranslated(node, "SetEnvIf needs an attribute, a regex and a variable") return end
  local attr, re = a[1], a[2]
  local subject = special_attrs[attr:lower()]
  if attr:lower() == "request_uri" then subject = is_loc(scope) and M.DECODED_PATH or M.RAW_PATH end
  if not subject then
    if attr:lower() == "remote_host" or attr:lower() == "server_addr" or not attr:match("^[%w%-]+$") then
      self:untranslated(node, "attribute " .. attr .. " has no counterpart in req")
      return
    end
    subject = "(req.headers[" .. lit(attr) .. '] or "")'
  end
  local pat = regex_to_pattern(re, nocase)
  local sets = {}
  for i = 3, #a do
    local name, value = a[i]:match("^([^=]+)=(.*)$")
    if not name then name, value = a[i], "1" end
    local unset = name:sub(1, 1) == "!"
    if unset then name = name:sub(2) end
    if name == "proxy-scgi-pathinfo" then self.uses_pathinfo = true end
    if not unset and value:find("[%$\\]") then pat = nil end
    sets[#sets + 1] = { name = name, value = (not unset) and value or nil, expr = (not unset) and template_expr(value) or nil }
  end
  -- A regex every URI matches that only sets proxy-scgi-pathinfo is `pathinfo = true`.
  local all = { ["."] = true, ["^"] = true, [".*"] = true, ["^/"] = true, ["/"] = true, ["^.*$"] = true }
  if attr:lower() == "request_uri" and all[re] and #sets == 1 and sets[1].name == "proxy-scgi-pathinfo" and sets[1].value then
    return { pathinfo = true, src = self:where(node) }
  end
  if pat then return { subject = subject, pattern = pat, sets = sets, src = self:where(node) } end
  local err = regex_error(re)
  if err then self:untranslated(node, "bad regular expression (Apache refuses it): " .. err) return end
  return { subject = subject, re = re, flags = nocase and "josi" or "jos", sets = sets, src = self:where(node) }
end

-- ---- the directive table ------------------------------------------------------------------------
--
-- DIRECTIVES[name] and SECTIONS[name] = { fn =, examples = { {args...}, ... } }, by lower-case
-- name; fn(self, node, scope, args) translates the node in its scope. A directive
-- in neither table is kept as "unknown or untranslatable directive", a section as "unknown
-- section". An example is a use of the directive as a configuration would write it, with
-- `ctx` the section it belongs in ("main" when absent, "location", "virtualhost", "proxy" for
-- <Proxy balancer://...>) and, for a section, `body`, the lines inside it. M.directives()
-- lists them for tests/e2e/test_import_apache.py, which puts hostile bytes in every argument
-- of every example.

local DIRECTIVES, SECTIONS = {}, {}

local function def(into, names, examples, fn)
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do
    assert(not into[n], "the directive table names " .. n .. " twice")
    into[n] = { fn = fn, examples = examples }
  end
end

-- The node's translation in `scope`, from the table by its name.
function T:directive(node, scope)
  local entry = (node.children and SECTIONS or DIRECTIVES)[node.name]
  if entry then return entry.fn(self, node, scope, node.args) end
  self:untranslated(node, node.children and "unknown section" or nil)
end

-- Walks the nodes of one scope.
function T:walk(nodes, scope)
  for _, node in ipairs(nodes) do self:directive(node, scope) end
end

local ALLOWED = "everything is allowed unless a hook says otherwise"

local function is_granted(c)
  return c.name == "require" and (c.args[1] or ""):lower() == "all" and (c.args[2] or ""):lower() == "granted"
end

-- Directives that mean nothing to a gateway, or whose effect is moongate's default: kept as
-- comments (with `why`, when there is something to say), exit status unchanged.
local function meaningless(names, why)
  def(DIRECTIVES, names, { { "some", "value" } }, function(self, node) self:comment(node, why) end)
end

meaningless({
  "loadmodule", "loadfile", "serverroot", "pidfile", "mutex", "defaultruntimedir", "scoreboardfile",
  "startservers", "minspareservers", "maxspareservers", "maxrequestworkers", "maxclients", "serverlimit",
  "threadsperchild", "threadlimit", "maxconnectionsperchild", "maxrequestsperchild", "minsparethreads",
  "maxsparethreads", "threadstacksize", "asyncrequestworkerfactor", "servertokens", "serversignature",
  "serveradmin", "hostnamelookups", "typesconfig", "addtype", "adddefaultcharset", "directoryindex",
  "accessfilename", "enablesendfile", "enablemmap", "usecanonicalname", "traceenable",
  "gracefulshutdowntimeout", "listenbacklog", "maxmemfree", "errorlogformat",
  "options", "allowoverride", "addhandler", "addoutputfilter", "addlanguage",
  "defaultlanguage", "languagepriority", "forcelanguagepriority", "addcharset",
  "mimemagicfile", "browsermatch", "coredumpdirectory",
  "proxyiobuffersize", "proxyreceivebuffersize", "proxystatus", "proxysourceaddress",
  "proxypassreversecookiedomain", "proxypassreversecookiepath", "balancerpersist", "balancerinherit",
  "proxypassinherit", "proxyhcexpr", "proxyhctemplate", "proxyhctpsize",
})
meaningless("documentroot", "moongate serves no document root: a path outside the routes is 404 (add mg.route(PREFIX, { root = DIR }) for static files)")
meaningless("proxypreservehost", "an SCGI backend always receives the client's Host as HTTP_HOST")
meaningless("proxyaddheaders", "mod_proxy_scgi adds no X-Forwarded-* fields either")
meaningless("logformat", "moongate writes the combined format plus request time and upstream (or JSON)")

-- Directives that change request handling and have no translation, with where their work
-- goes in moongate.
local function untranslatable(names, why)
  def(DIRECTIVES, names, { { "some", "value" } }, function(self, node) self:untranslated(node, why) end)
end

untranslatable("header", "response headers: a header_filter hook (examples/header_rewrite.lua)")
untranslatable("requestheader", "request headers: a rewrite or access hook setting req.headers")
untranslatable({ "rewriteengine", "rewriterule", "rewritecond" }, "a rewrite hook setting req.uri, or req:redirect")
untranslatable({ "redirect", "redirectmatch" }, "a Lua route answering 301/302 with a Location header")
untranslatable("alias", "mg.route(PREFIX, { root = DIR }) serves PREFIX from DIR/PREFIX: check the mapping by hand")
untranslatable({ "sslengine", "sslcertificatefile", "sslcertificatekeyfile" }, "mg.listen(ADDR, { tls = { cert =, key = } })")

-- The reader's record of an Include it expanded in place (no configuration can write the
-- name: "#" starts a comment); it has no examples and M.directives() leaves it out.
def(DIRECTIVES, "#include", {}, function(self, node)
  self.out_comments[#self.out_comments + 1] = fmt("%s (%s) -- read %d file(s) in place", node.text, self:src(node), #node.files)
end)

-- Sections.

def(SECTIONS, "ifmodule", { { "proxy_module", body = { "SetEnv IN_IFMODULE yes" } } }, function(self, node, scope)
  if (node.args[1] or ""):sub(1, 1) == "!" then
    self:comment(node, "skipped: moongate takes every module as loaded")
  else
    self:walk(node.children, scope)
  end
end)

def(SECTIONS, "ifdefine", { { "!NOTDEFINED", body = { "SetEnv IN_IFDEFINE yes" } } }, function(self, node, scope)
  if (node.args[1] or ""):sub(1, 1) == "!" then self:walk(node.children, scope)
  else self:comment(node, "skipped: no -D parameter is defined") end
end)

def(SECTIONS, { "ifversion", "ifdirective", "ifsection" }, { { ">=", "2.4", body = { "SetEnv IN_IF yes" } } },
  function(self, node, scope) self:walk(node.children, scope) end)

def(SECTIONS, "virtualhost", { { "*:80", body = { "ServerName vhost.example", "ProxyPass /vh/ scgi://127.0.0.1:4000/" } } },
  function(self, node, scope)
    if scope.kind ~= "main" then syntax(node.file, node.line, "<VirtualHost> inside <%s>", scope.kind) end
    local vh = new_scope(scope, "virtualhost")
    vh.node = node
    vh.names = {}
    vh.index = #self.vhosts + 1
    self.vhosts[#self.vhosts + 1] = vh
    self:walk(node.children, vh)
  end)

def(SECTIONS, "location", { { "/loc/", body = { "ProxyPass scgi://127.0.0.1:4000/", "SetEnv IN_LOCATION yes" } } },
  function(self, node, scope)
    local path = node.args[1]
    if path == "~" then return self:locationmatch(node, scope, node.args[2]) end
    if not path then self:untranslated(node, "<Location> needs a path") return end
    local loc = new_scope(scope, "location")
    loc.path, loc.node, loc.order = path, node, self.nlocations
    self.nlocations = self.nlocations + 1
    scope.locations[#scope.locations + 1] = loc
    self:walk(node.children, loc)
  end)

-- <LocationMatch "RE"> and <Location ~ "RE">: a scope for the requests whose decoded path RE
-- matches (a ProxyPass inside is not translated: Apache proxies nothing with it).
function T:locationmatch(node, scope, re)
  if not re then self:untranslated(node, "<" .. node.Name .. "> needs a regular expression") return end
  local err = regex_error(re)
  if err then self:untranslated(node, "bad regular expression (Apache refuses it): " .. err) return end
  local lm = new_scope(scope, "locationmatch")
  lm.regex, lm.node, lm.order = re, node, self.nlocations
  self.nlocations = self.nlocations + 1
  scope.locmatches[#scope.locmatches + 1] = lm
  self:walk(node.children, lm)
end

def(SECTIONS, "locationmatch", {
  { "^/lm/(?<site>[a-z]+)/", body = { "SetEnv IN_LM yes", "Require all denied" } },
  { "\\.php$", body = { "SetEnv PHP yes", "ProxySCGIInternalRedirect Off", "LimitRequestBody 10" } },
}, function(self, node, scope) self:locationmatch(node, scope, node.args[1]) end)

-- Inside <Proxy balancer://NAME>, by name (a directive or a section of that name): the
-- members and parameters of that balancer. Anything else is translated as outside it.
local IN_BALANCER = {}

function IN_BALANCER.balancermember(self, c, b)
  self:member(c, b.name, c.args[1] or "", { unpack(c.args, 2) })
end

function IN_BALANCER.proxyset(self, c, b)
  for _, a in ipairs(c.args) do
    local k, v = split_kv(a)
    if k then self:balancer_param(c, b, k, v) else self:untranslated(c, "ProxySet " .. a) end
  end
end

function IN_BALANCER.require(self, c, b, scope)
  if is_granted(c) then self:comment(c, ALLOWED) else self:directive(c, scope) end
end

-- Inside <Proxy URL> of another URL, by name: the access rules that allow everything;
-- anything else is not translated.
local function allowed(self, c) self:comment(c, ALLOWED) end
local IN_PROXY = { order = allowed, allow = allowed }

function IN_PROXY.require(self, c, url)
  if is_granted(c) then allowed(self, c) else self:untranslated(c, "inside <Proxy " .. url .. ">") end
end

def(SECTIONS, "proxy", {
  { "balancer://sect", body = { "BalancerMember scgi://127.0.0.1:4001 route=a", "ProxySet lbmethod=bybusyness" } },
  { "http://backend.example/", body = { "Require all granted", "Header set X-A b" } },
}, function(self, node, scope)
  local url = node.args[1] or ""
  local bname = balancer_name(url)
  if bname then
    local b = self:balancer(bname)
    b.src = b.src or self:where(node)
    for _, c in ipairs(node.children) do
      local fn = IN_BALANCER[c.name]
      if fn then fn(self, c, b, scope) else self:directive(c, scope) end
    end
  else
    for _, c in ipairs(node.children) do
      local fn = IN_PROXY[c.name]
      if fn then fn(self, c, url) else self:untranslated(c, "inside <Proxy " .. url .. ">") end
    end
  end
end)

def(SECTIONS, { "directory", "directorymatch", "files", "filesmatch" }, { { "/srv/www", body = { "Require all granted" } } },
  function(self, node)
    self:comment(node, "file-system rules: moongate serves no document root (" .. #node.children .. " directives inside)")
  end)

def(SECTIONS, { "if", "elseif", "else", "limit", "limitexcept" }, { { "GET", body = { "Require all denied" } } },
  function(self, node)
    self:untranslated(node, "<" .. node.Name .. "> sections have no counterpart; write a hook")
  end)

-- Directives.

def(DIRECTIVES, "listen", { { "127.0.0.1:8080", "http" }, { "8081" } }, function(self, node, scope, a)
  local addr, proto = a[1], a[2]
  if not addr then self:untranslated(node, "Listen needs an address") return end
  if proto and proto:lower() ~= "http" then
    self:untranslated(node, "protocol " .. proto .. ": give mg.listen a tls = { cert =, key = } table")
    return
  end
  if addr:match("^%d+$") then addr = "0.0.0.0:" .. addr end
  -- Apache's forms: port, host:port, [IPv6]:port (a host of "*" is every address).
  local host, port = addr:match("^(%[[%x:]+%]):(%d+)$")
  if not host then host, port = addr:match("^([^:%[%]]+):(%d+)$") end
  if host == "*" then addr = "0.0.0.0:" .. port end
  if not host or not whole(port, 1, 65535) then
    self:untranslated(node, "the address must be PORT, HOST:PORT or [IPv6]:PORT, with a port from 1 to 65535")
    return
  end
  self.listens[#self.listens + 1] = { addr = addr, src = self:where(node) }
end)

def(DIRECTIVES, "servername", { { "www.example.com:80" }, { "v.example", ctx = "virtualhost" } }, function(self, node, scope, a)
  local name = (a[1] or ""):gsub("^%a+://", ""):gsub(":%d+$", "")
  if scope.kind == "virtualhost" then scope.names[#scope.names + 1] = name:lower()
  else self:setting(node, "server_name", lit(name)) end
end)

def(DIRECTIVES, "serveralias", { { "a.example", "b.example", ctx = "virtualhost" } }, function(self, node, scope, a)
  if scope.kind ~= "virtualhost" then self:untranslated(node, "ServerAlias outside <VirtualHost>") return end
  for _, x in ipairs(a) do
    if x:find("[%*%?]") then self:untranslated(node, "wildcard host names have no counterpart") return end
    scope.names[#scope.names + 1] = x:lower()
  end
end)

def(DIRECTIVES, "timeout", { { "30" } }, function(self, node, scope, a)
  local t = time_value(a[1] or "")
  if not t then self:untranslated(node, "not a number of seconds") return end
  self:setting(node, "client_header_timeout", t)
  self:setting(node, "client_body_timeout", t)
  if not self.proxy_timeout then self:setting(node, "timeout", t) end
end)

def(DIRECTIVES, "proxytimeout", { { "20" } }, function(self, node, scope, a)
  local t = time_value(a[1] or "")
  if not t then self:untranslated(node, "not a number of seconds") return end
  self.proxy_timeout = true
  self:setting(node, "timeout", t)
end)

def(DIRECTIVES, "keepalivetimeout", { { "5" } }, function(self, node, scope, a)
  local t = time_value(a[1] or "")
  if not t then self:untranslated(node, "not a number of seconds") return end
  self:setting(node, "keepalive_timeout", t)
end)

def(DIRECTIVES, "keepalive", { { "Off" }, { "On" } }, function(self, node, scope, a)
  if (a[1] or ""):lower() == "off" then self:setting(node, "keepalive_requests", num(1), "one request per connection")
  else self:comment(node, "keep-alive is on by default") end
end)

def(DIRECTIVES, "maxkeepaliverequests", { { "100" } }, function(self, node, scope, a)
  local c = whole(a[1], 0, INT_MAX)
  if not c then self:untranslated(node, "not a whole number from 0 to " .. INT_MAX) return end
  if c == 0 then self:setting(node, "keepalive_requests", num(1000000000), "Apache's 0 is unlimited")
  else self:setting(node, "keepalive_requests", num(c)) end
end)

def(DIRECTIVES, "limitrequestbody", { { "1000" }, { "2000", ctx = "location" } }, function(self, node, scope, a)
  local c = whole(a[1], 0, INT_MAX)
  if not c then self:untranslated(node, "not a whole number of bytes from 0 to " .. INT_MAX) return end
  if is_loc(scope) then scope.opts.client_max_body_size = { value = num(c), src = self:where(node) }
  else self:setting(node, "client_max_body_size", num(c), c == 0 and "0: no limit" or nil) end
end)

def(DIRECTIVES, { "limitrequestline", "limitrequestfieldsize", "limitrequestfields" }, { { "8190" } }, function(self, node, scope, a)
  local c = whole(a[1], 0, INT_MAX)
  if not c then self:untranslated(node, "not a whole number from 0 to " .. INT_MAX) return end
  local key = ({ limitrequestline = "max_request_line", limitrequestfieldsize = "max_header_size",
                 limitrequestfields = "max_headers" })[node.name]
  self:setting(node, key, num(c))
end)

def(DIRECTIVES, "allowencodedslashes", { { "NoDecode" } }, function(self, node, scope, a)
  local v = (a[1] or ""):lower()
  if v == "on" or v == "nodecode" then
    self:setting(node, "allow_encoded_slashes", "true", v == "nodecode" and "%2F stays encoded in REQUEST_URI; the path is decoded" or nil)
  elseif v ~= "off" then self:untranslated(node, "expected On, Off or NoDecode") end
end)

def(DIRECTIVES, { "user", "group" }, { { "root" } }, function(self, node, scope, a)
  local v = a[1] or ""
  if v:sub(1, 1) == "#" or v:find("%${") then self:untranslated(node, "a numeric id or variable; give the name") return end
  self:setting(node, node.name, lit(v))
end)

def(DIRECTIVES, "errorlog", { { "logs/error.log" } }, function(self, node, scope, a)
  local p = a[1] or ""
  if p:sub(1, 1) == "|" or p:lower():sub(1, 7) == "syslog:" or p:find("%${") then
    self:comment(node, "piped, syslog or ${VAR} logs have no counterpart: moongate writes to a file or stderr")
  else
    self:setting(node, "error_log", lit(self:resolve_path(p)))
  end
end)

def(DIRECTIVES, { "customlog", "transferlog" }, { { "logs/access.log", "combined" } }, function(self, node, scope, a)
  local p = a[1] or ""
  if self.settings.access_log or p:sub(1, 1) == "|" or p:find("%${") then
    self:comment(node, "one access log, a file: this one is not carried over")
  else
    self:setting(node, "access_log", lit(self:resolve_path(p)),
      (a[2] and a[2] ~= "combined") and "moongate writes the combined format (plus request time and upstream)" or nil)
  end
end)

local log_levels = { emerg = "error", alert = "error", crit = "error", error = "error", warn = "warn",
  notice = "notice", info = "info", debug = "debug" }

def(DIRECTIVES, "loglevel", { { "warn" } }, function(self, node, scope, a)
  local lvl = (a[1] or ""):lower()
  if lvl:find(":") then lvl = lvl:match(":(.*)$") end
  lvl = lvl:match("^trace") and "debug" or log_levels[lvl]
  if not lvl then self:untranslated(node, "unknown level") return end
  self:setting(node, "log_level", lit(lvl))
end)

def(DIRECTIVES, "proxyrequests", { { "Off" } }, function(self, node, scope, a)
  if (a[1] or ""):lower() == "on" then self:untranslated(node, "moongate is never a forward proxy")
  else self:comment(node, "moongate is never a forward proxy") end
end)

def(DIRECTIVES, "proxyvia", { { "Off" } }, function(self, node, scope, a)
  if (a[1] or "off"):lower() ~= "off" then self:untranslated(node, "Via headers are not added") else self:comment(node) end
end)

def(DIRECTIVES, "proxybadheader", { { "IsError" } }, function(self, node, scope, a)
  if (a[1] or ""):lower() == "iserror" then self:comment(node, "moongate's behaviour") else self:untranslated(node) end
end)

-- ErrorDocument, status by status in each scope (lua/_apache_errors.lua); ProxyErrorOverride
-- is intercept_errors: in mg.set for the main server, a route option below it.
def(DIRECTIVES, "errordocument", { { "404", "/errors/404.html" }, { "500", "\"Sorry, down" }, { "503", "http://status.example/", ctx = "location" } },
  function(self, node, scope, a)
    local status = errors.status(a[1])
    if not status then self:untranslated(node, "ErrorDocument takes a status from 400 to 599 (Apache refuses others)") return end
    local value, why = errors.page(a[2])
    if value == nil then self:untranslated(node, why) return end
    scope.errdocs = scope.errdocs or {}
    scope.errdocs[status] = { value = value, src = self:where(node), node = node,
                              uri = value and a[2]:sub(1, 1) == "/" and not a[2]:find(" ", 1, true) and a[2] or nil }
  end)

def(DIRECTIVES, "proxyerroroverride", { { "Off" }, { "On" }, { "On", "500", "502", ctx = "location" } }, function(self, node, scope, a)
  local v = (a[1] or ""):lower()
  if v ~= "on" and v ~= "off" then self:untranslated(node, "expected On or Off") return end
  if a[2] then
    self:untranslated(node, "the status list: moongate intercepts every status that has an error page")
  end
  if scope.kind == "main" then self:setting(node, "intercept_errors", v == "on" and "true" or "false",
      v == "on" and "Apache's mod_proxy_scgi does not apply it (the backend's errors pass); moongate answers the backend's statuses that have an ErrorDocument with it" or nil)
  else scope.opts.intercept_errors = { value = v == "on" and "true" or "false", src = self:where(node) } end
end)

def(DIRECTIVES, "proxypass", {
  { "/app/", "scgi://127.0.0.1:4000/", "timeout=30", "connectiontimeout=5", "retry=5", "keepalive=On", "nocanon" },
  { "/bal/", "balancer://pp/", "lbmethod=byrequests", "stickysession=ROUTEID|routeid", "maxattempts=1",
    "nofailover=Off", "growth=2", "timeout=3" },
  { "/unix/", "unix:/run/app.sock|scgi://" },
  { "scgi://127.0.0.1:4000/", "timeout=5", ctx = "location" },
}, function(self, node, scope, a)
  if scope.kind == "locationmatch" then
    -- Measured on Debian's Apache 2.4: such a ProxyPass proxies nothing (every path is 404).
    self:untranslated(node, "inside <" .. scope.node.Name .. "> Apache proxies nothing with it (every path is 404); ProxyPassMatch is the regex form")
  elseif scope.kind == "location" then
    self:proxypass(node, scope.parent, scope.path, a[1] or "", { unpack(a, 2) })
  else
    if #a < 2 then self:untranslated(node, "ProxyPass needs a path and a URL") return end
    self:proxypass(node, scope, a[1], a[2], { unpack(a, 3) })
  end
end)

def(DIRECTIVES, "proxypassmatch", {
  { "^/app/(.*)$", "scgi://127.0.0.1:4000/$1", "timeout=30" },
  { "^/bal/(v\\d+)/", "balancer://ppm/$1", "lbmethod=bybusyness" },
  { "\\.png$", "!" },
}, function(self, node, scope, a)
  if is_loc(scope) then self:untranslated(node, "ProxyPassMatch inside <" .. scope.node.Name .. ">: Apache refuses it") return end
  if #a < 2 then self:untranslated(node, "ProxyPassMatch needs a regular expression and a URL") return end
  self:proxypass(node, scope, a[1], a[2], { unpack(a, 3) }, true)
end)

def(DIRECTIVES, "proxypassreverse", { { "/app/", "scgi://127.0.0.1:4000/" } }, function(self, node, scope, a)
  local url = is_loc(scope) and a[1] or a[2] or ""
  if url:match("^[Ss][Cc][Gg][Ii]:") or url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]:") or url:match("^unix:") then
    self:comment(node, "an SCGI backend answers with local URLs: nothing to rewrite")
  else
    self:untranslated(node, "response header rewriting: use a header_filter hook")
  end
end)

def(DIRECTIVES, "balancermember", {
  { "scgi://127.0.0.1:4001", "loadfactor=2", "route=a", "status=+H", "retry=10", "connectiontimeout=3",
    "timeout=30", "ping=1", ctx = "proxy" },
  { "balancer://bm", "scgi://127.0.0.1:4002", "route=b" },
}, function(self, node, scope, a)
  local bname = balancer_name(a[1] or "")
  if not bname then self:untranslated(node, "outside <Proxy balancer://...> a member names its balancer first") return end
  self:member(node, bname, a[2] or "", { unpack(a, 3) })
end)

def(DIRECTIVES, "proxyset", {
  { "lbmethod=bytraffic", "stickysession=JSESSIONID|jsessionid", "maxattempts=2", "timeout=1", ctx = "proxy" },
  { "balancer://ps", "lbmethod=bybusyness", "maxattempts=3" },
}, function(self, node, scope, a)
  local bname = balancer_name(a[1] or "")
  if not bname then self:untranslated(node, "ProxySet for a single worker") return end
  for i = 2, #a do
    local k, v = split_kv(a[i])
    if k then self:balancer_param(node, self:balancer(bname), k, v) else self:untranslated(node, a[i]) end
  end
end)

def(DIRECTIVES, { "proxyscgiinternalredirect", "proxyscgisendfile" }, { { "X-Location" }, { "On", ctx = "location" } },
  function(self, node, scope, a)
    local v = a[1]
    if not v then self:untranslated(node, "needs On, Off or a header name") return end
    local key = node.name == "proxyscgiinternalredirect" and "internal_redirect" or "sendfile"
    local lv = v:lower()
    local val = lv == "on" and "true" or lv == "off" and "false" or lit(v)
    scope.opts[key] = { value = val, src = self:where(node), node = node }
  end)

def(DIRECTIVES, "setenv", { { "APP_ENV", "prod" }, { "LOC_ENV", "x", ctx = "location" } }, function(self, node, scope, a)
  local name, value = a[1], a[2] or ""
  if not name then self:untranslated(node, "SetEnv needs a name") return end
  if name == "proxy-scgi-pathinfo" then
    self.uses_pathinfo = true
    scope.opts.pathinfo = { value = "true", src = self:where(node) }
  else scope.env[#scope.env + 1] = { name = name, value = value, src = self:where(node) } end
end)

def(DIRECTIVES, "unsetenv", { { "A", "B" } }, function(self, node, scope, a)
  for _, name in ipairs(a) do scope.env[#scope.env + 1] = { name = name, value = false, src = self:where(node) } end
end)

def(DIRECTIVES, { "setenvif", "setenvifnocase" }, {
  { "User-Agent", "^curl/[0-9]+\\.x$", "IS_CURL=yes", "!OTHER" },
  { "Request_URI", "^/a[b-d]*\\.php$", "PHP=1", ctx = "location" },
  { "Request_URI", ".", "proxy-scgi-pathinfo" },
}, function(self, node, scope)
  local r = self:setenvif(node, node.name == "setenvifnocase", scope)
  if r then scope.setenvif[#scope.setenvif + 1] = r end
end)

def(DIRECTIVES, "require", { { "all", "granted" }, { "all", "denied", ctx = "location" }, { "ip", "10.0.0.0/8" } },
  function(self, node, scope, a)
    local what = (a[1] or ""):lower()
    if what == "all" and (a[2] or ""):lower() == "granted" then
      self:comment(node, ALLOWED)
    elseif what == "all" and (a[2] or ""):lower() == "denied" and is_loc(scope) then
      scope.deny = self:where(node)
    else
      self:untranslated(node, "access rules: write an access hook (examples/access_control.lua)")
    end
  end)

-- Every directive and section a configuration can name, for tests: { name =, section =,
-- examples = }.
function M.directives()
  local out = {}
  for name, d in pairs(DIRECTIVES) do
    if name ~= "#include" then out[#out + 1] = { name = name, examples = d.examples } end
  end
  for name, d in pairs(SECTIONS) do out[#out + 1] = { name = name, section = true, examples = d.examples } end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out
end

function M.translate(tree, path, root_dir, server_root, warn)
  local t = setmetatable({
    base = root_dir, root_dir = root_dir, server_root = server_root, root_name = path:match("[^/]*$"),
    settings = {}, settings_order = {}, settings_keys = {}, listens = {}, balancers = {}, balancer_order = {},
    routes = {}, vhosts = {}, nlocations = 0, out_comments = {}, out_untranslated = {}, untranslated_n = 0,
    warn = warn,
  }, T)
  t.main = new_scope(nil, "main")
  t:walk(tree, t.main)
  return t
end

return M
