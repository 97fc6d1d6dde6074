-- _import_apache: `moongate import-apache FILE` (SPEC 16).
--
-- Reads an Apache httpd configuration the way httpd does -- line continuations, whole-line
-- comments, quoted words, sections nested in sections, Include/IncludeOptional with globs
-- (expanded where they stand), case-insensitive directive names, <IfModule> taken as true
-- and <IfDefine NAME> as false (nothing is defined on the command line) -- into a tree, then
-- translates its mod_proxy / mod_proxy_scgi / mod_proxy_balancer parts into an init.lua a
-- person would keep editing: grouped (listeners, settings, balancers, routes, hooks), each
-- line commented with the directive it comes from and its file:line.
--
-- run(path) prints the init.lua on stdout and returns the exit status: 0 when everything
-- that changes request handling was translated, 3 when something was not (each such
-- directive is kept as a `-- not translated:` comment and named on stderr with file:line),
-- 1 on a syntax error (file:line on stderr, nothing on stdout).
--
-- The C side (import_apache.c) passes `sys` with glob(pattern) -> sorted list and
-- isdir(path) -> boolean.
local M = {}

local fmt = string.format
local unpack = table.unpack or unpack

-- ---- reading: lines, words, sections, includes ---------------------------------------------

local SyntaxError = {}

local function syntax(file, line, msg, ...)
  error(setmetatable({ msg = fmt("%s:%d: %s", file, line, fmt(msg, ...)) }, SyntaxError), 0)
end

-- Apache's ap_getword_conf: words split on white space; "..." or '...' quote a word, and a
-- backslash before the quote character inside it stands for that character.
local function words(text, file, line)
  local out, i, n = {}, 1, #text
  while true do
    i = text:find("%S", i)
    if not i then break end
    local c = text:sub(i, i)
    if c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while true do
        if j > n then syntax(file, line, "unterminated %s quote", c) end
        local d = text:sub(j, j)
        if d == "\\" and text:sub(j + 1, j + 1) == c then
          buf[#buf + 1] = c; j = j + 2
        elseif d == c then
          j = j + 1; break
        else
          buf[#buf + 1] = d; j = j + 1
        end
      end
      out[#out + 1] = table.concat(buf)
      i = j
    else
      local j = text:find("%s", i) or n + 1
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return out
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function is_abs(p) return p:sub(1, 1) == "/" end

local Reader = {}
Reader.__index = Reader

-- Logical lines of one file: {text, line} with continuations joined (a backslash as the very
-- last character of a line continues it on the next; the line number is the first one's).
local function logical_lines(src)
  local out, pending, first, ln = {}, nil, nil, 0
  for raw in (src .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    raw = raw:gsub("\r$", "")
    if raw:sub(-1) == "\\" then
      pending = (pending or "") .. raw:sub(1, -2)
      first = first or ln
    else
      out[#out + 1] = { text = (pending or "") .. raw, line = first or ln }
      pending, first = nil, nil
    end
  end
  if pending then out[#out + 1] = { text = pending, line = first } end
  return out
end

-- Parses `path` into `into` (a list of nodes). A node: { name (lower case), Name, args, file,
-- line, text, children (sections) }. Include is expanded in place.
function Reader:parse_file(path, into, depth)
  if depth > 32 then syntax(path, 1, "Include nested more than 32 deep (an include loop?)") end
  local src, err = read_file(path)
  if not src then return nil, err end
  local stack = { { children = into, name = nil } }
  for _, l in ipairs(logical_lines(src)) do
    local t = l.text:match("^%s*(.-)%s*$")
    if t ~= "" and t:sub(1, 1) ~= "#" then
      local top = stack[#stack]
      if t:sub(1, 2) == "</" then
        local name = t:match("^</%s*([%w_:%-]+)%s*>$")
        if not name then syntax(path, l.line, "bad closing tag %s", t) end
        if not top.name then syntax(path, l.line, "</%s> without matching <%s> section", name, name) end
        if top.name ~= name:lower() then
          syntax(path, l.line, "</%s> closes <%s> (opened at line %d)", name, top.Name, top.line)
        end
        stack[#stack] = nil
      elseif t:sub(1, 1) == "<" then
        if t:sub(-1) ~= ">" then syntax(path, l.line, "section %s lacks its closing '>'", t) end
        local inner = t:sub(2, -2)
        local name, rest = inner:match("^([%w_:%-]+)(.*)$")
        if not name then syntax(path, l.line, "bad section %s", t) end
        local node = { name = name:lower(), Name = name, args = words(rest, path, l.line), file = path,
                       line = l.line, text = t, children = {} }
        top.children[#top.children + 1] = node
        stack[#stack + 1] = node
      else
        local w = words(t, path, l.line)
        local name = table.remove(w, 1)
        if not name:match("^[%a][%w_]*$") then syntax(path, l.line, "bad directive name %q", name) end
        local node = { name = name:lower(), Name = name, args = w, file = path, line = l.line, text = t }
        if node.name == "include" or node.name == "includeoptional" then
          self:include(node, top.children, depth)
        else
          if node.name == "serverroot" and w[1] then self.server_root = w[1] end
          top.children[#top.children + 1] = node
        end
      end
    end
  end
  if #stack > 1 then
    local open = stack[#stack]
    syntax(path, open.line, "<%s> section is never closed", open.Name)
  end
  return true
end

local function has_wildcard(p) return p:find("[%*%?%[]") ~= nil end

function Reader:expand(path, list)
  if self.sys.isdir(path) then
    for _, p in ipairs(self.sys.glob(path .. "/*")) do self:expand(p, list) end
  else
    list[#list + 1] = path
  end
end

function Reader:include(node, into, depth)
  local optional = node.name == "includeoptional"
  local pat = node.args[1]
  if not pat then syntax(node.file, node.line, "%s needs a file or pattern", node.Name) end
  -- As httpd: relative to ServerRoot (once set), else to the main file's folder.
  if not is_abs(pat) then pat = (self.server_root or self.root_dir) .. "/" .. pat end
  local files = {}
  if has_wildcard(pat) then
    for _, p in ipairs(self.sys.glob(pat)) do self:expand(p, files) end
    if #files == 0 and not optional then
      syntax(node.file, node.line, "Include: no file matches the wildcard %s", pat)
    end
  elseif self.sys.isdir(pat) then
    self:expand(pat, files)
  else
    local f = io.open(pat, "rb")
    if f then f:close(); files[1] = pat
    elseif not optional then syntax(node.file, node.line, "Include: cannot open %s", pat) end
  end
  into[#into + 1] = { name = "#include", Name = node.Name, args = node.args, file = node.file,
                      line = node.line, text = node.text, files = files }
  for _, p in ipairs(files) do
    local ok, err = self:parse_file(p, into, depth + 1)
    if not ok then syntax(node.file, node.line, "Include: cannot read %s: %s", p, tostring(err)) end
  end
end

-- ---- translating ------------------------------------------------------------------------------

local T = {}
T.__index = T

local function q(s) return fmt("%q", s) end

function T:src(node)
  local file = node.file
  if file:sub(1, #self.base + 1) == self.base .. "/" then file = file:sub(#self.base + 2) end
  return fmt("%s:%d", file, node.line)
end

function T:where(node) return fmt("%s (%s)", (node.text:gsub("%s+", " ")), self:src(node)) end

-- Directives that change request handling, with where their work goes in moongate.
local untranslatable = {
  header = "response headers: a header_filter hook (examples/header_rewrite.lua)",
  requestheader = "request headers: a rewrite or access hook setting req.headers",
  rewriteengine = "a rewrite hook setting req.uri, or req:redirect",
  rewriterule = "a rewrite hook setting req.uri, or req:redirect",
  rewritecond = "a rewrite hook setting req.uri, or req:redirect",
  redirect = "a Lua route answering 301/302 with a Location header",
  redirectmatch = "a Lua route answering 301/302 with a Location header",
  proxypassmatch = "regular-expression routes: a rewrite hook mapping them onto a prefix route",
  alias = "mg.route(PREFIX, { root = DIR }) serves PREFIX from DIR/PREFIX: check the mapping by hand",
  errordocument = "a header_filter hook, or json_errors.lua's pattern",
  sslengine = "mg.listen(ADDR, { tls = { cert =, key = } })",
  sslcertificatefile = "mg.listen(ADDR, { tls = { cert =, key = } })",
  sslcertificatekeyfile = "mg.listen(ADDR, { tls = { cert =, key = } })",
}

-- A directive that changes request handling and has no translation.
function T:untranslated(node, why)
  self.untranslated_n = self.untranslated_n + 1
  why = why or untranslatable[node.name] or "unknown or untranslatable directive"
  local c = "-- not translated: " .. self:where(node)
  if why then c = c .. " -- " .. why end
  self.out_untranslated[#self.out_untranslated + 1] = c
  io.stderr:write(fmt("moongate import-apache: %s: not translated: %s%s\n", self:src(node), (node.text:gsub("%s+", " ")),
                      why and (" (" .. why .. ")") or ""))
end

-- A directive with no meaning for a gateway, or one whose effect is the gateway's default.
function T:comment(node, why)
  self.out_comments[#self.out_comments + 1] = "-- " .. self:where(node) .. (why and (" -- " .. why) or "")
end

function T:setting(node, key, value, note)
  self.settings[key] = { value = value, src = self:where(node), note = note }
  if not self.settings_order[key] then
    self.settings_order[key] = true
    self.settings_keys[#self.settings_keys + 1] = key
  end
end

local function num(s) return tonumber(s) end

local function time_value(s)
  -- Apache times are seconds; "250ms" is accepted by ProxyPass parameters.
  local n, unit = tostring(s):match("^(%d+%.?%d*)(%a*)$")
  if not n then return nil end
  if unit == "" or unit == "s" then return tonumber(n) end
  if unit == "ms" then return q(n .. "ms") end
  if unit == "mi" then return tonumber(n) * 60 end
  if unit == "hr" then return tonumber(n) * 3600 end
  return nil
end

-- Directives that mean nothing to a gateway: kept as comments, exit status unchanged.
local meaningless = {}
for _, d in ipairs({
  "loadmodule", "loadfile", "serverroot", "pidfile", "mutex", "defaultruntimedir", "scoreboardfile",
  "startservers", "minspareservers", "maxspareservers", "maxrequestworkers", "maxclients", "serverlimit",
  "threadsperchild", "threadlimit", "maxconnectionsperchild", "maxrequestsperchild", "minsparethreads",
  "maxsparethreads", "threadstacksize", "asyncrequestworkerfactor", "servertokens", "serversignature",
  "serveradmin", "hostnamelookups", "typesconfig", "addtype", "adddefaultcharset", "directoryindex",
  "accessfilename", "enablesendfile", "enablemmap", "usecanonicalname", "traceenable",
  "gracefulshutdowntimeout", "listenbacklog", "maxmemfree", "logformat", "errorlogformat",
  "documentroot", "options", "allowoverride", "addhandler", "addoutputfilter", "addlanguage",
  "adddefaultcharset", "defaultlanguage", "languagepriority", "forcelanguagepriority", "addcharset",
  "mimemagicfile", "browsermatch", "coredumpdirectory", "keepalive", "proxypreservehost",
  "proxyiobuffersize", "proxyreceivebuffersize", "proxystatus", "proxyaddheaders", "proxysourceaddress",
  "proxypassreversecookiedomain", "proxypassreversecookiepath", "balancerpersist", "balancerinherit",
  "proxypassinherit", "proxyhcexpr", "proxyhctemplate", "proxyhctpsize",
}) do meaningless[d] = true end

local why_meaningless = {
  documentroot = "moongate serves no document root: a path outside the routes is 404 (add mg.route(PREFIX, { root = DIR }) for static files)",
  proxypreservehost = "an SCGI backend always receives the client's Host as HTTP_HOST",
  proxyaddheaders = "mod_proxy_scgi adds no X-Forwarded-* fields either",
  keepalive = "keep-alive is on by default",
  logformat = "moongate writes the combined format plus request time and upstream (or JSON)",
}

local log_levels = { emerg = "error", alert = "error", crit = "error", error = "error", warn = "warn",
  notice = "notice", info = "info", debug = "debug" }

-- Scopes: the main server, each <VirtualHost>, each <Location> in them. A scope holds what
-- applies to the requests it covers; routes take the merge of main → virtual host →
-- locations, in the order Apache merges them.
local function new_scope(parent, kind)
  return { parent = parent, kind = kind, env = {}, setenvif = {}, opts = {}, deny = nil, locations = {} }
end

function T:resolve_path(p)
  if is_abs(p) or p:match("^%a+:") or p:sub(1, 1) == "|" then return p end
  return (self.server_root or self.root_dir) .. "/" .. p
end

-- ProxyPass URL: what moongate's route target becomes, or nil and why not.
local function backend_url(url)
  local path = url:match("^unix:(/[^|]*)|scgi://")
  if path then return "unix:" .. path .. "|scgi://" end
  local hostport = url:match("^[Ss][Cc][Gg][Ii]://([^/]+)")
  if hostport then return "scgi://" .. hostport .. "/" end
  local b = url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
  if b then return "balancer://" .. b .. "/", b end
  return nil
end

local connection_tuning = { keepalive = true, disablereuse = true, enablereuse = true, flushpackets = true,
  flushwait = true, ping = true, min = true, max = true, smax = true, ttl = true, acquire = true,
  iobuffersize = true, receivebuffersize = true, responsefieldsize = true, addressttl = true,
  ["secret"] = false }

local balancer_params = { lbmethod = true, stickysession = true, maxattempts = true, nofailover = true,
  scolonpathdelim = true, stickysessionsep = true, timeout = false, growth = true, forcerecovery = true,
  failonstatus = true, failontimeout = true, stickysessionsep = true }

-- key=value parameters of a balancer (ProxySet, or on a ProxyPass to balancer://).
function T:balancer_param(node, b, k, v)
  if k == "lbmethod" then
    local m = v:lower()
    if m == "byrequests" or m == "bytraffic" or m == "bybusyness" then b.method = { value = m, src = self:where(node) }
    else self:untranslated(node, "lbmethod " .. v .. " has no counterpart (byrequests, bytraffic, bybusyness)") end
  elseif k == "stickysession" then
    local first, second = v:match("^([^|]+)|(.+)$")
    first = first or v
    if not first:match("^[%w%-_%.]+$") then self:untranslated(node, "stickysession name " .. v) return end
    local note
    if second and second ~= first then
      note = fmt("Apache reads the cookie %s and the parameter %s; moongate reads %s as both", first, second, first)
    end
    b.sticky = { value = first, src = self:where(node), note = note }
  elseif k == "maxattempts" then
    local n = num(v)
    if not n then self:untranslated(node, "maxattempts is not a number") return end
    -- Apache counts failover attempts after the first try; moongate counts every try.
    b.maxattempts = { value = n + 1, src = self:where(node), note = "Apache's maxattempts=" .. v .. " failovers = " .. (n + 1) .. " tries" }
  elseif k == "nofailover" then
    if v:lower() == "on" then self:untranslated(node, "nofailover=On (moongate always fails over before anything is sent)") end
  elseif k == "growth" or k == "forcerecovery" then
    b.notes[#b.notes + 1] = "-- " .. self:where(node) .. " -- no counterpart needed"
  elseif k == "timeout" then
    b.notes[#b.notes + 1] = "-- " .. self:where(node) .. " -- moongate never queues for a busy member"
  else
    self:untranslated(node, "balancer parameter " .. k)
  end
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

local function split_kv(a)
  local k, v = a:match("^([%w_]+)=(.*)$")
  return k and k:lower(), v
end

function T:member(node, bname, url, params)
  local target = backend_url(url)
  if not target or target:find("^balancer:") then
    self:untranslated(node, "a balancer member must be scgi:// or unix:...|scgi://")
    return
  end
  local m = { url = target:gsub("/$", ""), src = self:where(node), opts = {}, notes = {} }
  for _, a in ipairs(params) do
    local k, v = split_kv(a)
    if not k then self:untranslated(node, "parameter " .. a) return end
    if k == "loadfactor" then
      local n = num(v)
      if not n or n < 1 or n > 100 then self:untranslated(node, "loadfactor " .. v) return end
      m.opts[#m.opts + 1] = "lbfactor = " .. math.floor(n)
    elseif k == "route" then
      m.opts[#m.opts + 1] = "route = " .. q(v)
    elseif k == "status" then
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
      if bad then self:untranslated(node, "member status flag " .. bad) return end
      if #flags > 0 then m.opts[#m.opts + 1] = "status = " .. q("+" .. table.concat(flags)) end
    elseif k == "retry" then
      local t = time_value(v)
      if not t then self:untranslated(node, "retry " .. v) return end
      m.opts[#m.opts + 1] = "retry = " .. t
    elseif k == "connectiontimeout" then
      local t = time_value(v)
      if not t then self:untranslated(node, "connectiontimeout " .. v) return end
      m.opts[#m.opts + 1] = "connect_timeout = " .. t
    elseif k == "timeout" then
      local t = time_value(v)
      if not t then self:untranslated(node, "timeout " .. v) return end
      m.opts[#m.opts + 1] = "timeout = " .. t
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

-- ProxyPass PATH URL [key=value ...] (PATH implied inside <Location>).
function T:proxypass(node, scope, path, url, params)
  if url == "!" then
    self:untranslated(node, "exclusions (ProxyPass PATH !) have no counterpart; give that path its own route")
    return
  end
  local target, bname = backend_url(url)
  if not target then
    self:untranslated(node, "moongate speaks SCGI only (scgi://, unix:...|scgi://, balancer://)")
    return
  end
  if not path:match("^/") then self:untranslated(node, "the path must start with /") return end
  local route = { path = path, target = target, src = self:where(node), node = node, scope = scope, opts = {},
                  notes = {}, order = #self.routes + 1 }
  for _, a in ipairs(params) do
    local k, v = split_kv(a)
    if not k then
      self:untranslated(node, "flag " .. a .. " has no counterpart")
      return
    elseif k == "timeout" and not bname then
      local t = time_value(v)
      if not t then self:untranslated(node, "timeout " .. v) return end
      route.opts.timeout = { value = t, src = route.src }
    elseif k == "connectiontimeout" and not bname then
      local t = time_value(v)
      if not t then self:untranslated(node, "connectiontimeout " .. v) return end
      route.opts.connect_timeout = { value = t, src = route.src }
    elseif k == "retry" and not bname then
      route.notes[#route.notes + 1] = "retry=" .. v .. ": moongate tries a lone backend on every request"
    elseif connection_tuning[k] then
      route.notes[#route.notes + 1] = k .. "=" .. v .. ": connection tuning with no counterpart"
    elseif bname and balancer_params[k] ~= nil then
      self:balancer_param(node, self:balancer(bname), k, v)
    else
      self:untranslated(node, "parameter " .. k)
      return
    end
  end
  if bname then self:balancer(bname).used = true end
  self.routes[#self.routes + 1] = route
end

-- SetEnvIf's regular expression as a Lua pattern: literal characters, ., ^ at the start,
-- $ at the end, [classes], \d \w \s and escaped punctuation, and * + ? after one of those.
-- Anything else (groups, alternation, counted repetition) returns nil.
local function regex_to_pattern(re, nocase)
  local out, i, n = {}, 1, #re
  local function lit(c)
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
      else out[#out + 1] = lit(d) end
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
      out[#out + 1] = lit(c); last_atom = true
    end
    i = i + 1
  end
  return table.concat(out)
end

local special_attrs = {
  request_uri = "req.uri", request_method = "req.method", remote_addr = "req.remote_addr",
  request_protocol = '"HTTP/" .. req.http_version',
}

-- SetEnvIf ATTRIBUTE REGEX [!]VAR[=VALUE] ...: a condition and assignments to req.env, or nil.
function T:setenvif(node, nocase)
  local a = node.args
  if #a < 3 then self:untranslated(node, "SetEnvIf needs an attribute, a regex and a variable") return end
  local attr, re = a[1], a[2]
  local subject = special_attrs[attr:lower()]
  if not subject then
    if attr:lower() == "remote_host" or attr:lower() == "server_addr" or not attr:match("^[%w%-]+$") then
      self:untranslated(node, "attribute " .. attr .. " has no counterpart in req")
      return
    end
    subject = fmt("(req.headers[%q] or \"\")", attr)
  end
  local pat = regex_to_pattern(re, nocase)
  if not pat then
    self:untranslated(node, "regular expression " .. re .. " is beyond what the importer turns into a Lua pattern; write the hook by hand")
    return
  end
  local sets = {}
  for i = 3, #a do
    local name, value = a[i]:match("^([^=]+)=(.*)$")
    if not name then name, value = a[i], "1" end
    local unset = name:sub(1, 1) == "!"
    if unset then name = name:sub(2) end
    if value:find("%$%d") then self:untranslated(node, "back-references ($1) in values") return end
    sets[#sets + 1] = { name = name, value = (not unset) and value or nil }
  end
  -- A regex every URI matches that only sets proxy-scgi-pathinfo is `pathinfo = true`.
  local all = { ["."] = true, ["^"] = true, [".*"] = true, ["^/"] = true, ["/"] = true, ["^.*$"] = true }
  if attr:lower() == "request_uri" and all[re] and #sets == 1 and sets[1].name == "proxy-scgi-pathinfo" and sets[1].value then
    return { pathinfo = true, src = self:where(node) }
  end
  return { subject = subject, pattern = pat, sets = sets, src = self:where(node) }
end

-- Walks the nodes of one scope.
function T:walk(nodes, scope)
  for _, node in ipairs(nodes) do self:directive(node, scope) end
end

function T:section(node, scope)
  local n = node.name
  if n == "ifmodule" then
    if (node.args[1] or ""):sub(1, 1) == "!" then
      self:comment(node, "skipped: moongate takes every module as loaded")
    else
      self:walk(node.children, scope)
    end
  elseif n == "ifdefine" then
    if (node.args[1] or ""):sub(1, 1) == "!" then self:walk(node.children, scope)
    else self:comment(node, "skipped: no -D parameter is defined") end
  elseif n == "ifversion" or n == "ifdirective" or n == "ifsection" then
    self:walk(node.children, scope)
  elseif n == "virtualhost" then
    if scope.kind ~= "main" then syntax(node.file, node.line, "<VirtualHost> inside <%s>", scope.kind) end
    local vh = new_scope(scope, "virtualhost")
    vh.node = node
    vh.names = {}
    vh.index = #self.vhosts + 1
    self.vhosts[#self.vhosts + 1] = vh
    self:walk(node.children, vh)
  elseif n == "location" then
    local path = node.args[1]
    if not path or path == "~" then
      self:untranslated(node, "regular-expression locations have no counterpart")
      return
    end
    local loc = new_scope(scope, "location")
    loc.path, loc.node, loc.order = path, node, self.nlocations
    self.nlocations = self.nlocations + 1
    scope.locations[#scope.locations + 1] = loc
    self:walk(node.children, loc)
  elseif n == "proxy" then
    local url = node.args[1] or ""
    local bname = url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
    if bname then
      local b = self:balancer(bname)
      b.src = b.src or self:where(node)
      for _, c in ipairs(node.children) do
        if c.name == "balancermember" then
          self:member(c, bname, c.args[1] or "", { unpack(c.args, 2) })
        elseif c.name == "proxyset" then
          for _, a in ipairs(c.args) do
            local k, v = split_kv(a)
            if k then self:balancer_param(c, b, k, v) else self:untranslated(c, "ProxySet " .. a) end
          end
        elseif c.name == "require" and (c.args[1] or ""):lower() == "all" and (c.args[2] or ""):lower() == "granted" then
          self:comment(c, "everything is allowed unless a hook says otherwise")
        else
          self:directive(c, scope)
        end
      end
    else
      for _, c in ipairs(node.children) do
        if c.name == "require" and (c.args[1] or ""):lower() == "all" and (c.args[2] or ""):lower() == "granted" then
          self:comment(c, "everything is allowed unless a hook says otherwise")
        elseif c.name == "order" or c.name == "allow" then
          self:comment(c, "everything is allowed unless a hook says otherwise")
        else
          self:untranslated(c, "inside <Proxy " .. url .. ">")
        end
      end
    end
  elseif n == "directory" or n == "directorymatch" or n == "files" or n == "filesmatch" then
    self:comment(node, "file-system rules: moongate serves no document root (" .. #node.children .. " directives inside)")
  elseif n == "locationmatch" or n == "if" or n == "elseif" or n == "else" or n == "limit" or n == "limitexcept" then
    self:untranslated(node, "<" .. node.Name .. "> sections have no counterpart; write a hook")
  else
    self:untranslated(node, "unknown section")
  end
end

function T:directive(node, scope)
  local n, a = node.name, node.args
  if node.children then return self:section(node, scope) end
  if n == "#include" then
    self.out_comments[#self.out_comments + 1] = fmt("-- %s (%s) -- read %d file(s) in place", node.text, self:src(node), #node.files)
    return
  end
  if n == "listen" then
    local addr, proto = a[1], a[2]
    if not addr then self:untranslated(node, "Listen needs an address") return end
    if proto and proto:lower() ~= "http" then
      self:untranslated(node, "protocol " .. proto .. ": give mg.listen a tls = { cert =, key = } table")
      return
    end
    if addr:match("^%d+$") then addr = "0.0.0.0:" .. addr end
    self.listens[#self.listens + 1] = { addr = addr, src = self:where(node) }
  elseif n == "servername" then
    local name = (a[1] or ""):gsub("^%a+://", ""):gsub(":%d+$", "")
    if scope.kind == "virtualhost" then scope.names[#scope.names + 1] = name:lower()
    else self:setting(node, "server_name", q(name)) end
  elseif n == "serveralias" then
    if scope.kind ~= "virtualhost" then self:untranslated(node, "ServerAlias outside <VirtualHost>") return end
    for _, x in ipairs(a) do
      if x:find("[%*%?]") then self:untranslated(node, "wildcard host names have no counterpart") return end
      scope.names[#scope.names + 1] = x:lower()
    end
  elseif n == "timeout" then
    local t = time_value(a[1] or "")
    if not t then self:untranslated(node, "not a number of seconds") return end
    self:setting(node, "client_header_timeout", t)
    self:setting(node, "client_body_timeout", t)
    if not self.proxy_timeout then self:setting(node, "timeout", t) end
  elseif n == "proxytimeout" then
    local t = time_value(a[1] or "")
    if not t then self:untranslated(node, "not a number of seconds") return end
    self.proxy_timeout = true
    self:setting(node, "timeout", t)
  elseif n == "keepalivetimeout" then
    local t = time_value(a[1] or "")
    if not t then self:untranslated(node, "not a number of seconds") return end
    self:setting(node, "keepalive_timeout", t)
  elseif n == "keepalive" and (a[1] or ""):lower() == "off" then
    self:setting(node, "keepalive_requests", 1, "one request per connection")
  elseif n == "maxkeepaliverequests" then
    local c = num(a[1] or "")
    if not c then self:untranslated(node, "not a number") return end
    if c == 0 then self:setting(node, "keepalive_requests", 1000000000, "Apache's 0 is unlimited")
    else self:setting(node, "keepalive_requests", c) end
  elseif n == "limitrequestbody" then
    local c = num(a[1] or "")
    if not c then self:untranslated(node, "not a number of bytes") return end
    if scope.kind == "location" then scope.opts.client_max_body_size = { value = c, src = self:where(node) }
    else self:setting(node, "client_max_body_size", c, c == 0 and "0: no limit" or nil) end
  elseif n == "limitrequestline" or n == "limitrequestfieldsize" or n == "limitrequestfields" then
    local c = num(a[1] or "")
    if not c then self:untranslated(node, "not a number") return end
    local key = ({ limitrequestline = "max_request_line", limitrequestfieldsize = "max_header_size",
                   limitrequestfields = "max_headers" })[n]
    self:setting(node, key, c)
  elseif n == "allowencodedslashes" then
    local v = (a[1] or ""):lower()
    if v == "on" or v == "nodecode" then
      self:setting(node, "allow_encoded_slashes", "true", v == "nodecode" and "%2F stays encoded in REQUEST_URI; the path is decoded" or nil)
    elseif v ~= "off" then self:untranslated(node, "expected On, Off or NoDecode") end
  elseif n == "user" or n == "group" then
    local v = a[1] or ""
    if v:sub(1, 1) == "#" or v:find("%${") then self:untranslated(node, "a numeric id or variable; give the name") return end
    self:setting(node, n, q(v))
  elseif n == "errorlog" then
    local p = a[1] or ""
    if p:sub(1, 1) == "|" or p:lower():sub(1, 7) == "syslog:" or p:find("%${") then
      self:comment(node, "piped, syslog or ${VAR} logs have no counterpart: moongate writes to a file or stderr")
    else
      self:setting(node, "error_log", q(self:resolve_path(p)))
    end
  elseif n == "customlog" or n == "transferlog" then
    local p = a[1] or ""
    if self.settings.access_log or p:sub(1, 1) == "|" or p:find("%${") then
      self:comment(node, "one access log, a file: this one is not carried over")
    else
      self:setting(node, "access_log", q(self:resolve_path(p)),
        (a[2] and a[2] ~= "combined") and "moongate writes the combined format (plus request time and upstream)" or nil)
    end
  elseif n == "loglevel" then
    local lvl = (a[1] or ""):lower()
    if lvl:find(":") then lvl = lvl:match(":(.*)$") end
    lvl = lvl:match("^trace") and "debug" or log_levels[lvl]
    if not lvl then self:untranslated(node, "unknown level") return end
    self:setting(node, "log_level", q(lvl))
  elseif n == "proxyrequests" then
    if (a[1] or ""):lower() == "on" then self:untranslated(node, "moongate is never a forward proxy")
    else self:comment(node, "moongate is never a forward proxy") end
  elseif n == "proxyvia" then
    if (a[1] or "off"):lower() ~= "off" then self:untranslated(node, "Via headers are not added") else self:comment(node) end
  elseif n == "proxyerroroverride" or n == "proxybadheader" then
    local v = (a[1] or ""):lower()
    if (n == "proxyerroroverride" and v == "off") or (n == "proxybadheader" and v == "iserror") then self:comment(node, "moongate's behaviour")
    else self:untranslated(node) end
  elseif n == "proxypass" then
    if scope.kind == "location" then
      self:proxypass(node, scope.parent, scope.path, a[1] or "", { unpack(a, 2) })
    else
      if #a < 2 then self:untranslated(node, "ProxyPass needs a path and a URL") return end
      self:proxypass(node, scope, a[1], a[2], { unpack(a, 3) })
    end
  elseif n == "proxypassreverse" then
    local url = scope.kind == "location" and a[1] or a[2] or ""
    if url:match("^[Ss][Cc][Gg][Ii]:") or url:match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]:") or url:match("^unix:") then
      self:comment(node, "an SCGI backend answers with local URLs: nothing to rewrite")
    else
      self:untranslated(node, "response header rewriting: use a header_filter hook")
    end
  elseif n == "balancermember" then
    local bname = (a[1] or ""):match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
    if not bname then self:untranslated(node, "outside <Proxy balancer://...> a member names its balancer first") return end
    self:member(node, bname, a[2] or "", { unpack(a, 3) })
  elseif n == "proxyset" then
    local bname = (a[1] or ""):match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
    if not bname then self:untranslated(node, "ProxySet for a single worker") return end
    for i = 2, #a do
      local k, v = split_kv(a[i])
      if k then self:balancer_param(node, self:balancer(bname), k, v) else self:untranslated(node, a[i]) end
    end
  elseif n == "proxyscgiinternalredirect" or n == "proxyscgisendfile" then
    local v = a[1]
    if not v then self:untranslated(node, "needs On, Off or a header name") return end
    local key = n == "proxyscgiinternalredirect" and "internal_redirect" or "sendfile"
    local lv = v:lower()
    local val = lv == "on" and "true" or lv == "off" and "false" or q(v)
    scope.opts[key] = { value = val, src = self:where(node) }
  elseif n == "setenv" then
    local name, value = a[1], a[2] or ""
    if not name then self:untranslated(node, "SetEnv needs a name") return end
    if name == "proxy-scgi-pathinfo" then scope.opts.pathinfo = { value = "true", src = self:where(node) }
    else scope.env[#scope.env + 1] = { name = name, value = value, src = self:where(node) } end
  elseif n == "unsetenv" then
    for _, name in ipairs(a) do scope.env[#scope.env + 1] = { name = name, value = false, src = self:where(node) } end
  elseif n == "setenvif" or n == "setenvifnocase" then
    local r = self:setenvif(node, n == "setenvifnocase")
    if r then scope.setenvif[#scope.setenvif + 1] = r end
  elseif n == "require" then
    local what = (a[1] or ""):lower()
    if what == "all" and (a[2] or ""):lower() == "granted" then
      self:comment(node, "everything is allowed unless a hook says otherwise")
    elseif what == "all" and (a[2] or ""):lower() == "denied" and scope.kind == "location" then
      scope.deny = self:where(node)
    else
      self:untranslated(node, "access rules: write an access hook (examples/access_control.lua)")
    end
  elseif meaningless[n] then
    self:comment(node, why_meaningless[n])
  else
    self:untranslated(node)
  end
end

-- ---- output ----------------------------------------------------------------------------------------

-- The chain of scopes that apply to a route, outermost first: main, virtual host, and the
-- <Location> sections (of both) whose path covers the route's path.
function T:route_scopes(route)
  local chain = { self.main }
  if route.scope.kind == "virtualhost" then chain[#chain + 1] = route.scope end
  local locs = {}
  for _, s in ipairs(chain) do
    for _, l in ipairs(s.locations) do
      if route.path:sub(1, #l.path) == l.path then locs[#locs + 1] = l end
    end
  end
  table.sort(locs, function(x, y) return x.order < y.order end)
  for _, l in ipairs(locs) do chain[#chain + 1] = l end
  return chain
end

local function lua_value(v)
  if type(v) == "string" then return q(v) end
  return tostring(v)
end

function T:emit_route(out, route, host)
  local chain = self:route_scopes(route)
  local opts, okeys, env, envkeys, sifs, deny = {}, {}, {}, {}, {}, nil
  local function set(k, v)
    if not opts[k] then okeys[#okeys + 1] = k end
    opts[k] = v
  end
  for k, v in pairs(route.opts) do set(k, v) end
  for _, s in ipairs(chain) do
    for _, k in ipairs({ "internal_redirect", "sendfile", "pathinfo", "client_max_body_size" }) do
      if s.opts[k] then set(k, s.opts[k]) end
    end
    for _, e in ipairs(s.env) do
      if env[e.name] == nil then envkeys[#envkeys + 1] = e.name end
      env[e.name] = e
    end
    for _, r in ipairs(s.setenvif) do
      if r.pathinfo then set("pathinfo", { value = "true", src = r.src })
      elseif s ~= self.main then sifs[#sifs + 1] = r end
    end
    if s.deny then deny = s.deny end
  end
  table.sort(okeys)
  local lines = {}
  if host then lines[#lines + 1] = fmt("  host = %q,", host) end
  for _, k in ipairs(okeys) do
    local o = opts[k]
    lines[#lines + 1] = fmt("  %s = %s,  -- %s", k, o.value, o.src)
    if k == "sendfile" and o.value ~= "false" then
      lines[#lines + 1] = '  sendfile_roots = { "/" },  -- Apache sends any file it can read: narrow this to where the app\'s files live'
    end
  end
  if #envkeys > 0 then
    lines[#lines + 1] = "  env = {"
    for _, name in ipairs(envkeys) do
      local e = env[name]
      lines[#lines + 1] = fmt("    [%q] = %s,  -- %s", name, lua_value(e.value), e.src)
    end
    lines[#lines + 1] = "  },"
  end
  if #sifs > 0 or deny then
    lines[#lines + 1] = "  hooks = {"
    lines[#lines + 1] = "    access = function(req)"
    if deny then
      lines[#lines + 1] = "      -- " .. deny
      lines[#lines + 1] = '      return req:exit(403, "Forbidden\\n")'
    end
    for _, r in ipairs(sifs) do self:emit_setenvif(lines, r, "      ") end
    lines[#lines + 1] = "    end,"
    lines[#lines + 1] = "  },"
  end
  out[#out + 1] = "-- " .. route.src
  for _, nte in ipairs(route.notes) do out[#out + 1] = "--   " .. nte end
  if #lines == 0 then
    out[#out + 1] = fmt("mg.route(%q, %q)", route.path, route.target)
  else
    out[#out + 1] = fmt("mg.route(%q, %q, {", route.path, route.target)
    for _, l in ipairs(lines) do out[#out + 1] = l end
    out[#out + 1] = "})"
  end
end

function T:emit_setenvif(lines, r, indent)
  lines[#lines + 1] = indent .. "-- " .. r.src
  local body = {}
  for _, s in ipairs(r.sets) do
    body[#body + 1] = fmt("req.env[%q] = %s", s.name, s.value and q(s.value) or "false")
  end
  lines[#lines + 1] = fmt("%sif string.find(%s, %q) then %s end", indent, r.subject, r.pattern, table.concat(body, "; "))
end

function T:output()
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(fmt("-- init.lua imported from %s by `moongate import-apache`.", self.root_name))
  add("-- Each line names the Apache directive it comes from (file:line). See docs/migrating-from-apache.md.")
  add('local mg = require "moongate"')
  add("")
  if #self.listens > 0 then
    add("-- Listeners")
    for _, l in ipairs(self.listens) do add(fmt("mg.listen(%q)  -- %s", l.addr, l.src)) end
    add("")
  end
  add('-- Apache\'s MPM settings do not carry over: one worker by default, mg.workers("auto") for one per core.')
  add("")
  if #self.settings_keys > 0 then
    add("-- Settings")
    add("mg.set {")
    for _, k in ipairs(self.settings_keys) do
      local s = self.settings[k]
      add(fmt("  %s = %s,  -- %s%s", k, tostring(s.value), s.src, s.note and (" -- " .. s.note) or ""))
    end
    add("}")
    add("")
  end
  if not self.settings.client_max_body_size then
    add("-- Apache's default LimitRequestBody is 1 GiB; moongate's client_max_body_size is 1m unless set.")
    add("")
  end
  if #self.balancer_order > 0 then
    add("-- Balancers")
    for _, name in ipairs(self.balancer_order) do
      local b = self.balancers[name]
      if b.src then add("-- " .. b.src) end
      for _, nte in ipairs(b.notes) do add(nte) end
      add(fmt("mg.balancer(%q, {", name))
      if b.method then add(fmt("  method = %q,  -- %s", b.method.value, b.method.src)) end
      if b.sticky then
        add(fmt("  stickysession = %q,  -- %s%s", b.sticky.value, b.sticky.src, b.sticky.note and (" -- " .. b.sticky.note) or ""))
      end
      if b.maxattempts then add(fmt("  maxattempts = %d,  -- %s -- %s", b.maxattempts.value, b.maxattempts.src, b.maxattempts.note)) end
      add("  members = {")
      for _, m in ipairs(b.members) do
        local o = #m.opts > 0 and (", " .. table.concat(m.opts, ", ")) or ""
        add(fmt("    { %q%s },  -- %s%s", m.url, o, m.src,
          #m.notes > 0 and (" -- no counterpart needed: " .. table.concat(m.notes, ", ")) or ""))
      end
      add("  },")
      add("})")
    end
    add("")
  end
  -- Routes: Apache takes the first ProxyPass that matches, moongate the longest prefix; a
  -- route that an earlier, shorter one covers was unreachable in Apache and is left out.
  local routes, shadowed = {}, {}
  for _, r in ipairs(self.routes) do
    local hidden
    for _, e in ipairs(routes) do
      if e.scope == r.scope and (r.path == e.path or (r.path:sub(1, #e.path) == e.path and
          (e.path:sub(-1) == "/" or r.path:sub(#e.path + 1, #e.path + 1) == "/"))) then hidden = e end
    end
    if hidden then shadowed[#shadowed + 1] = { r = r, by = hidden } else routes[#routes + 1] = r end
  end
  -- A <Location> deeper than its route, carrying options of its own, becomes a route of its own.
  local extra = {}
  for _, scope in ipairs({ self.main, unpack(self.vhosts) }) do
    for _, l in ipairs(scope.locations) do
      local has = next(l.opts) or #l.env > 0 or #l.setenvif > 0 or l.deny
      local exact
      for _, r in ipairs(routes) do
        if r.path == l.path then exact = true end
      end
      if has and not exact then
        local parent
        for _, r in ipairs(routes) do
          if (r.scope == scope or r.scope == self.main) and l.path:sub(1, #r.path) == r.path and (not parent or #r.path > #parent.path) then parent = r end
        end
        if parent then
          extra[#extra + 1] = { path = l.path, target = parent.target, src = self:where(l.node), scope = parent.scope,
            opts = parent.opts, notes = { "the options of this <Location> below " .. parent.path .. " make it a route of its own" },
            order = parent.order + 0.5 }
        elseif not self:covered_by_route(l.path, routes) then
          self.out_comments[#self.out_comments + 1] = "-- " .. self:where(l.node) .. " -- no proxied route under this path: its directives change nothing here"
        end
      end
    end
  end
  for _, e in ipairs(extra) do routes[#routes + 1] = e end
  if #routes > 0 then add("-- Routes (ProxyPass)") end
  for _, r in ipairs(routes) do
    if r.scope.kind == "virtualhost" then
      local names = r.scope.names
      if #names == 0 then self:emit_route(out, r, nil)
      else
        for _, h in ipairs(names) do self:emit_route(out, r, h) end
        -- The first virtual host answers requests for any other host name.
        if r.scope.index == 1 then self:emit_route(out, r, nil) end
      end
    else
      self:emit_route(out, r, nil)
    end
  end
  for _, s in ipairs(shadowed) do
    add(fmt("-- left out: %s -- unreachable in Apache, where %s comes first", s.r.src, s.by.src))
  end
  if #routes > 0 then add("") end
  -- Server-wide SetEnvIf: a rewrite hook for every request.
  local global_sifs = {}
  for _, r in ipairs(self.main.setenvif) do if not r.pathinfo then global_sifs[#global_sifs + 1] = r end end
  if #global_sifs > 0 then
    add("-- Hooks (SetEnvIf)")
    add('mg.on("rewrite", function(req)')
    local lines = {}
    for _, r in ipairs(global_sifs) do self:emit_setenvif(lines, r, "  ") end
    for _, l in ipairs(lines) do add(l) end
    add("end)")
    add("")
  end
  for name, b in pairs(self.balancers) do
    if #b.members == 0 then
      self.untranslated_n = self.untranslated_n + 1
      self.out_untranslated[#self.out_untranslated + 1] = fmt("-- not translated: balancer://%s has no members", name)
      io.stderr:write(fmt("moongate import-apache: balancer://%s has no BalancerMember\n", name))
    end
  end
  if #self.out_comments > 0 then
    add("-- No meaning for a gateway, or moongate's default:")
    for _, c in ipairs(self.out_comments) do add(c) end
    add("")
  end
  if #self.out_untranslated > 0 then
    add("-- Changes request handling and was not translated (also named on stderr):")
    for _, c in ipairs(self.out_untranslated) do add(c) end
    add("")
  end
  return table.concat(out, "\n")
end

function T:covered_by_route(path, routes)
  for _, r in ipairs(routes) do if path:sub(1, #r.path) == r.path then return true end end
  return false
end

function M.run(path, sys)
  local root_dir = dirname(path)
  local reader = setmetatable({ sys = sys, root_dir = root_dir }, Reader)
  local tree = {}
  local ok, err = pcall(function()
    local fine, e = reader:parse_file(path, tree, 0)
    if not fine then error(setmetatable({ msg = fmt("%s: %s", path, tostring(e)) }, SyntaxError), 0) end
  end)
  if not ok then
    if getmetatable(err) == SyntaxError then
      io.stderr:write("moongate import-apache: " .. err.msg .. "\n")
      return 1
    end
    error(err, 0)
  end
  local t = setmetatable({
    base = root_dir, root_dir = root_dir, server_root = reader.server_root, root_name = path:match("[^/]*$"),
    settings = {}, settings_order = {}, settings_keys = {}, listens = {}, balancers = {}, balancer_order = {},
    routes = {}, vhosts = {}, nlocations = 0, out_comments = {}, out_untranslated = {}, untranslated_n = 0,
  }, T)
  t.main = new_scope(nil, "main")
  ok, err = pcall(t.walk, t, tree, t.main)
  if not ok then
    if getmetatable(err) == SyntaxError then
      io.stderr:write("moongate import-apache: " .. err.msg .. "\n")
      return 1
    end
    error(err, 0)
  end
  local text = t:output()
  io.stdout:write(text, "\n")
  return t.untranslated_n > 0 and 3 or 0
end

return M
