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
-- run(path, sys) writes the init.lua with sys.out and returns the exit status: 0 when
-- everything that changes request handling was translated and the output passes moongate's
-- own checks (those of `moongate -t`), 3 when something was not or the output needs a hand
-- (each such directive is kept as a `-- not translated:` comment and named on stderr with
-- file:line), 1 on a syntax or read error (file:line on stderr, nothing on stdout).
--
-- The output is Lua source made from text an attacker may have written: the configuration and
-- the names of the files it includes. Every piece of such text reaches the output through one
-- of three functions of the section "what reaches the output" below -- lit() for a string
-- literal, num() for a number, note() for comment text -- and nothing else builds code from it.
-- Before anything is printed, the output is run in an environment holding only
-- `require "moongate"`: a read or write of any other global is a bug of this file and prints
-- nothing (exit 1).
--
-- The C side (import_apache.c) passes `sys` with glob(pattern) -> sorted list, isdir(path),
-- exists(path), read(path, limit) -> text | nil, why | false (over the limit; a FIFO, device
-- or socket is refused without being read), lookup("user"|"group", name) and
-- out(text) / err(text), the two output streams.
local M = {}

local fmt = string.format
local unpack = table.unpack or unpack

-- What a hostile or broken configuration may cost: a FIFO or /dev/zero is never read, no more
-- than MAX_BYTES are read in all, an Include (a folder's included recursively) names no more
-- than MAX_FILES files and folders in all, and sections and includes nest only so deep, so the
-- importer cannot hang, exhaust its memory or overflow its stack.
local MAX_BYTES = 16 * 1024 * 1024
local MAX_FILES = 4096
local MAX_INCLUDE_DEPTH = 32
local MAX_SECTION_DEPTH = 64
local INT_MAX = 2147483647

-- ---- what reaches the output ---------------------------------------------------------------
--
-- lit(s) is a Lua string literal holding exactly the bytes of s; note(s) is s as comment text
-- (and as the text of a message on stderr); num(n) is a finite number as Lua source. Their
-- results are printable ASCII (0x20-0x7e) only: every other byte is written \ddd -- CR and LF,
-- which would end a comment; NUL and the other control bytes; and bytes of 0x80 and above,
-- among which are the bidirectional controls that can make a reader see a line other than the
-- one Lua runs. In a literal `"` and `\` are escaped as well, so a literal ends only where
-- lit() ends it. No other function turns configuration text into output.

local function esc(c) return fmt("\\%03d", c:byte()) end

local function lit(s)
  assert(type(s) == "string", "lit() takes a string")
  local body = s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return esc(c)
  end)
  return '"' .. body .. '"'
end

local function note(s)
  return (tostring(s):gsub("[%c\128-\255]", esc))
end

local function num(n)
  assert(type(n) == "number" and n == n and n ~= math.huge and n ~= -math.huge, "num() takes a finite number")
  if n == math.floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return fmt("%d", n) end
  return fmt("%.17g", n)
end

-- A line of output: CODE (the importer's own words, lit() and num() results) and a comment.
local function code_line(code, comment)
  if comment then return code .. "  -- " .. note(comment) end
  return code
end

local function comment_line(indent, text) return indent .. "-- " .. note(text) end


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

-- White space off both ends, in one pass (a pattern such as "^%s*(.-)%s*$" takes quadratic
-- time on a long run of spaces).
local function trim(s)
  local i = s:find("%S")
  if not i then return "" end
  local j = #s
  while s:find("^%s", j) do j = j - 1 end
  return s:sub(i, j)
end

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function is_abs(p) return p:sub(1, 1) == "/" end

local Reader = {}
Reader.__index = Reader

-- Logical lines of one file: {text, line} with continuations joined (a backslash as the very
-- last character of a line continues it on the next; the line number is the first one's).
-- The parts of a continued line are joined once, at its end: linear in the file's size.
local function logical_lines(src)
  local out, pending, first, ln = {}, nil, nil, 0
  for raw in (src .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    if raw:sub(-1) == "\r" then raw = raw:sub(1, -2) end
    if raw:sub(-1) == "\\" then
      pending = pending or {}
      pending[#pending + 1] = raw:sub(1, -2)
      first = first or ln
    else
      if pending then
        pending[#pending + 1] = raw
        raw = table.concat(pending)
      end
      out[#out + 1] = { text = raw, line = first or ln }
      pending, first = nil, nil
    end
  end
  if pending then out[#out + 1] = { text = table.concat(pending), line = first } end
  return out
end

-- The text of `path`, counted against MAX_BYTES; nil and why when it cannot be read.
function Reader:read(path)
  local src, err = self.sys.read(path, MAX_BYTES - self.bytes)
  if src == false then
    return nil, fmt("more than %d MiB of configuration in all (the importer reads no more)", MAX_BYTES / 1048576)
  end
  if not src then return nil, err end
  self.bytes = self.bytes + #src
  return src
end

-- Parses `path` into `into` (a list of nodes). A node: { name (lower case), Name, args, file,
-- line, text, children (sections) }. Include is expanded in place. `nest` is how many sections
-- enclose the Include that names this file (0 for the main file): the depth limit counts the
-- sections of every file on the way.
function Reader:parse_file(path, into, depth, nest)
  if depth > MAX_INCLUDE_DEPTH then
    syntax(path, 1, "Include nested more than %d deep (an include loop?)", MAX_INCLUDE_DEPTH)
  end
  local src, err = self:read(path)
  if not src then return nil, err end
  -- Apache reads a line as a C string, up to a NUL byte; moongate's loader would cut a name or
  -- a path there. Neither reading is what the text says: a NUL is an error.
  local nul = src:find("%z")
  if nul then
    local _, lf = src:sub(1, nul):gsub("\n", "")
    syntax(path, lf + 1, "a NUL byte (the line cannot be read as Apache reads it)")
  end
  local stack = { { children = into, name = nil } }
  for _, l in ipairs(logical_lines(src)) do
    local t = trim(l.text)
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
        if nest + #stack > MAX_SECTION_DEPTH then
          syntax(path, l.line, "sections nested more than %d deep", MAX_SECTION_DEPTH)
        end
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
          self:include(node, top.children, depth, nest + #stack - 1)
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

-- Adds `path` to `list`, or every file below it when it is a folder; `node` is the Include.
function Reader:expand(path, list, node)
  self.entries = self.entries + 1
  if self.entries > MAX_FILES then
    syntax(node.file, node.line, "%s: more than %d files and folders to include in all", node.Name, MAX_FILES)
  end
  if self.sys.isdir(path) then
    for _, p in ipairs(self.sys.glob(path .. "/*")) do self:expand(p, list, node) end
  else
    list[#list + 1] = path
  end
end

function Reader:include(node, into, depth, nest)
  local optional = node.name == "includeoptional"
  local pat = node.args[1]
  if not pat then syntax(node.file, node.line, "%s needs a file or pattern", node.Name) end
  -- As httpd: relative to ServerRoot (once set), else to the main file's folder.
  if not is_abs(pat) then pat = (self.server_root or self.root_dir) .. "/" .. pat end
  local files = {}
  if has_wildcard(pat) then
    for _, p in ipairs(self.sys.glob(pat)) do self:expand(p, files, node) end
    if #files == 0 and not optional then
      syntax(node.file, node.line, "Include: no file matches the wildcard %s", pat)
    end
  elseif self.sys.isdir(pat) then
    self:expand(pat, files, node)
  elseif self.sys.exists(pat) then
    files[1] = pat
  elseif not optional then
    syntax(node.file, node.line, "Include: cannot open %s", pat)
  end
  into[#into + 1] = { name = "#include", Name = node.Name, args = node.args, file = node.file,
                      line = node.line, text = node.text, files = files }
  for _, p in ipairs(files) do
    local ok, err = self:parse_file(p, into, depth + 1, nest)
    if not ok then syntax(node.file, node.line, "Include: cannot read %s: %s", p, tostring(err)) end
  end
end

-- ---- translating ------------------------------------------------------------------------------

local T = {}
T.__index = T

function T:src(node)
  local file = node.file
  if file:sub(1, #self.base + 1) == self.base .. "/" then file = file:sub(#self.base + 2) end
  return fmt("%s:%d", file, node.line)
end

-- The directive as it reads (white space collapsed) and where it is: raw text, for note().
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

-- A directive that changes request handling and has no translation (or, with `label`, one
-- whose translation needs a hand before it can run).
function T:untranslated(node, why, label)
  label = label or "not translated"
  self.untranslated_n = self.untranslated_n + 1
  why = why or untranslatable[node.name] or "unknown or untranslatable directive"
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
  "defaultlanguage", "languagepriority", "forcelanguagepriority", "addcharset",
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

-- A Unix socket's path fits in sockaddr_un.sun_path with its NUL.
local MAX_UNIX_PATH = 107

-- ProxyPass URL: what moongate's route target becomes (and the balancer's name), or nil.
local function backend_url(url)
  local path = url:match("^unix:(/[^|]*)|scgi://")
  if path then
    if #path > MAX_UNIX_PATH then return nil end
    return "unix:" .. path .. "|scgi://"
  end
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
  failonstatus = true, failontimeout = true }

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
    local why
    if second and second ~= first then
      why = fmt("Apache reads the cookie %s and the parameter %s; moongate reads %s as both", first, second, first)
    end
    b.sticky = { value = first, src = self:where(node), note = why }
  elseif k == "maxattempts" then
    local n = whole(v, 0, INT_MAX - 1)
    if not n then self:untranslated(node, "maxattempts " .. v .. ": expected a whole number of failovers") return end
    -- Apache counts failover attempts after the first try; moongate counts every try.
    b.maxattempts = { value = n + 1, src = self:where(node), note = "Apache's maxattempts=" .. v .. " failovers = " .. (n + 1) .. " tries" }
  elseif k == "nofailover" then
    if v:lower() == "on" then self:untranslated(node, "nofailover=On (moongate always fails over before anything is sent)") end
  elseif k == "growth" or k == "forcerecovery" then
    b.notes[#b.notes + 1] = self:where(node) .. " -- no counterpart needed"
  elseif k == "timeout" then
    b.notes[#b.notes + 1] = self:where(node) .. " -- moongate never queues for a busy member"
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
    self:untranslated(node, "a balancer member must be scgi:// or unix:...|scgi:// (a socket path of at most " .. MAX_UNIX_PATH .. " bytes)")
    return
  end
  local m = { url = target:gsub("/$", ""), src = self:where(node), opts = {}, notes = {} }
  for _, a in ipairs(params) do
    local k, v = split_kv(a)
    if not k then self:untranslated(node, "parameter " .. a) return end
    if k == "loadfactor" then
      local n = v:match("^%d+%.?%d*$") and tonumber(v)
      if not n or n < 1 or n > 100 then self:untranslated(node, "loadfactor " .. v .. ": expected a number from 1 to 100") return end
      m.opts[#m.opts + 1] = "lbfactor = " .. num(math.floor(n))
    elseif k == "route" then
      m.opts[#m.opts + 1] = "route = " .. lit(v)
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
      if #flags > 0 then m.opts[#m.opts + 1] = "status = " .. lit("+" .. table.concat(flags)) end
    elseif k == "retry" or k == "connectiontimeout" or k == "timeout" then
      local t = time_value(v)
      if not t then self:untranslated(node, k .. " " .. v .. ": expected seconds") return end
      local key = ({ retry = "retry", connectiontimeout = "connect_timeout", timeout = "timeout" })[k]
      m.opts[#m.opts + 1] = key .. " = " .. t
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
    self:untranslated(node, "moongate speaks SCGI only (scgi://, unix:...|scgi:// with a socket path of at most " .. MAX_UNIX_PATH .. " bytes, balancer://)")
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
    elseif (k == "timeout" or k == "connectiontimeout") and not bname then
      local t = time_value(v)
      if not t then self:untranslated(node, k .. " " .. v .. ": expected seconds") return end
      route.opts[k == "timeout" and "timeout" or "connect_timeout"] = { value = t, src = route.src }
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

-- SetEnvIf attributes with a counterpart in req, as Lua source.
local special_attrs = {
  request_uri = "req.uri", request_method = "req.method", remote_addr = "req.remote_addr",
  request_protocol = '"HTTP/" .. req.http_version',
}

-- SetEnvIf ATTRIBUTE REGEX [!]VAR[=VALUE] ...: a condition and assignments to req.env, or nil.
-- `subject` is Lua source; `pattern` and the names and values are raw text, for lit().
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
    subject = "(req.headers[" .. lit(attr) .. '] or "")'
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

local function is_granted(c)
  return c.name == "require" and (c.args[1] or ""):lower() == "all" and (c.args[2] or ""):lower() == "granted"
end

-- ---- the directives and sections the importer knows -------------------------------------------
--
-- DIRECTIVES[name] and SECTIONS[name] = { fn = handler, examples = { {args...}, ... } }. An
-- example is a use of the directive as a configuration would write it, with `ctx` the section
-- it belongs in ("main" when absent, "location", "virtualhost", "proxy" for
-- <Proxy balancer://...>) and, for a section, `body`, the lines inside it.
-- M.directives() lists them, with the meaningless and untranslatable ones, for
-- tests/e2e/test_import_apache.py, which puts hostile bytes in every argument of every example.

local DIRECTIVES, SECTIONS = {}, {}

local function def(into, names, examples, fn)
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do into[n] = { fn = fn, examples = examples } end
end

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
    if not path or path == "~" then
      self:untranslated(node, "regular-expression locations have no counterpart")
      return
    end
    local loc = new_scope(scope, "location")
    loc.path, loc.node, loc.order = path, node, self.nlocations
    self.nlocations = self.nlocations + 1
    scope.locations[#scope.locations + 1] = loc
    self:walk(node.children, loc)
  end)

def(SECTIONS, "proxy", {
  { "balancer://sect", body = { "BalancerMember scgi://127.0.0.1:4001 route=a", "ProxySet lbmethod=bybusyness" } },
  { "http://backend.example/", body = { "Require all granted", "Header set X-A b" } },
}, function(self, node, scope)
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
      elseif is_granted(c) then
        self:comment(c, "everything is allowed unless a hook says otherwise")
      else
        self:directive(c, scope)
      end
    end
  else
    for _, c in ipairs(node.children) do
      if is_granted(c) or c.name == "order" or c.name == "allow" then
        self:comment(c, "everything is allowed unless a hook says otherwise")
      else
        self:untranslated(c, "inside <Proxy " .. url .. ">")
      end
    end
  end
end)

def(SECTIONS, { "directory", "directorymatch", "files", "filesmatch" }, { { "/srv/www", body = { "Require all granted" } } },
  function(self, node)
    self:comment(node, "file-system rules: moongate serves no document root (" .. #node.children .. " directives inside)")
  end)

def(SECTIONS, { "locationmatch", "if", "elseif", "else", "limit", "limitexcept" }, { { "GET", body = { "Require all denied" } } },
  function(self, node)
    self:untranslated(node, "<" .. node.Name .. "> sections have no counterpart; write a hook")
  end)

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
  else self:comment(node, why_meaningless.keepalive) end
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
  if scope.kind == "location" then scope.opts.client_max_body_size = { value = num(c), src = self:where(node) }
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

def(DIRECTIVES, { "proxyerroroverride", "proxybadheader" }, { { "Off" }, { "IsError" } }, function(self, node, scope, a)
  local v = (a[1] or ""):lower()
  if (node.name == "proxyerroroverride" and v == "off") or (node.name == "proxybadheader" and v == "iserror") then
    self:comment(node, "moongate's behaviour")
  else self:untranslated(node) end
end)

def(DIRECTIVES, "proxypass", {
  { "/app/", "scgi://127.0.0.1:4000/", "timeout=30", "connectiontimeout=5", "retry=5", "keepalive=On", "nocanon" },
  { "/bal/", "balancer://pp/", "lbmethod=byrequests", "stickysession=ROUTEID|routeid", "maxattempts=1",
    "nofailover=Off", "growth=2", "timeout=3" },
  { "/unix/", "unix:/run/app.sock|scgi://" },
  { "scgi://127.0.0.1:4000/", "timeout=5", ctx = "location" },
}, function(self, node, scope, a)
  if scope.kind == "location" then
    self:proxypass(node, scope.parent, scope.path, a[1] or "", { unpack(a, 2) })
  else
    if #a < 2 then self:untranslated(node, "ProxyPass needs a path and a URL") return end
    self:proxypass(node, scope, a[1], a[2], { unpack(a, 3) })
  end
end)

def(DIRECTIVES, "proxypassreverse", { { "/app/", "scgi://127.0.0.1:4000/" } }, function(self, node, scope, a)
  local url = scope.kind == "location" and a[1] or a[2] or ""
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
  local bname = (a[1] or ""):match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
  if not bname then self:untranslated(node, "outside <Proxy balancer://...> a member names its balancer first") return end
  self:member(node, bname, a[2] or "", { unpack(a, 3) })
end)

def(DIRECTIVES, "proxyset", {
  { "lbmethod=bytraffic", "stickysession=JSESSIONID|jsessionid", "maxattempts=2", "timeout=1", ctx = "proxy" },
  { "balancer://ps", "lbmethod=bybusyness", "maxattempts=3" },
}, function(self, node, scope, a)
  local bname = (a[1] or ""):match("^[Bb][Aa][Ll][Aa][Nn][Cc][Ee][Rr]://([^/]+)")
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
  if name == "proxy-scgi-pathinfo" then scope.opts.pathinfo = { value = "true", src = self:where(node) }
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
  local r = self:setenvif(node, node.name == "setenvifnocase")
  if r then scope.setenvif[#scope.setenvif + 1] = r end
end)

def(DIRECTIVES, "require", { { "all", "granted" }, { "all", "denied", ctx = "location" }, { "ip", "10.0.0.0/8" } },
  function(self, node, scope, a)
    local what = (a[1] or ""):lower()
    if what == "all" and (a[2] or ""):lower() == "granted" then
      self:comment(node, "everything is allowed unless a hook says otherwise")
    elseif what == "all" and (a[2] or ""):lower() == "denied" and scope.kind == "location" then
      scope.deny = self:where(node)
    else
      self:untranslated(node, "access rules: write an access hook (examples/access_control.lua)")
    end
  end)

-- Every directive and section the importer knows, for tests: { name =, section =, examples = }.
function M.directives()
  local out = {}
  for name, d in pairs(DIRECTIVES) do out[#out + 1] = { name = name, examples = d.examples } end
  for name, d in pairs(SECTIONS) do out[#out + 1] = { name = name, section = true, examples = d.examples } end
  for name in pairs(meaningless) do
    if not DIRECTIVES[name] then out[#out + 1] = { name = name, examples = { { "some", "value" } } } end
  end
  for name in pairs(untranslatable) do out[#out + 1] = { name = name, examples = { { "some", "value" } } } end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out
end

function T:directive(node, scope)
  local n = node.name
  if node.children then
    local s = SECTIONS[n]
    if s then return s.fn(self, node, scope) end
    return self:untranslated(node, "unknown section")
  end
  if n == "#include" then
    self.out_comments[#self.out_comments + 1] = fmt("%s (%s) -- read %d file(s) in place", node.text, self:src(node), #node.files)
    return
  end
  local d = DIRECTIVES[n]
  if d then return d.fn(self, node, scope, node.args) end
  if meaningless[n] then return self:comment(node, why_meaningless[n]) end
  self:untranslated(node)
end

-- ---- output ----------------------------------------------------------------------------------------

-- Appends a line of output; `src` (a where() text) names the directive it comes from, for a
-- message about that line.
function T:add(line, src)
  self.out[#self.out + 1] = line
  if src then self.srcmap[#self.out] = src end
end

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

-- ProxySCGISendfile: Apache sends any file the server can read. The importer cannot know
-- where the application's files are, and "/" would let a backend (or whoever controls its
-- X-Sendfile header) send /etc/shadow; so the route gets a commented-out sendfile_roots
-- line to fill in, the output does not pass `moongate -t` until it is ("sendfile is on but
-- sendfile_roots is not set"), and the directive is named on stderr (exit 3).
local SENDFILE_PLACEHOLDER = '  -- sendfile_roots = { "/FILL/IN/the/folder/of/the/files" },'
local SENDFILE_WHY = "name the folders the backend may send files from in sendfile_roots and uncomment it"
  .. " (Apache sends any file the server can read; moongate refuses to start without the roots)"

function T:emit_route(route, host)
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
  if host then lines[#lines + 1] = "  host = " .. lit(host) .. "," end
  for _, k in ipairs(okeys) do
    local o = opts[k]
    lines[#lines + 1] = code_line(fmt("  %s = %s,", k, o.value), o.src)
    if k == "sendfile" and o.value ~= "false" then
      lines[#lines + 1] = code_line(SENDFILE_PLACEHOLDER, "to fill in: Apache sends any file it can read")
      if o.node and not self.sendfile_named[o.node] then
        self.sendfile_named[o.node] = true
        self:untranslated(o.node, SENDFILE_WHY, "to finish by hand")
      end
    end
  end
  if #envkeys > 0 then
    lines[#lines + 1] = "  env = {"
    for _, name in ipairs(envkeys) do
      local e = env[name]
      lines[#lines + 1] = code_line(fmt("    [%s] = %s,", lit(name), e.value and lit(e.value) or "false"), e.src)
    end
    lines[#lines + 1] = "  },"
  end
  if #sifs > 0 or deny then
    lines[#lines + 1] = "  hooks = {"
    lines[#lines + 1] = "    access = function(req)"
    for _, r in ipairs(sifs) do self:emit_setenvif(lines, r, "      ") end
    -- Last: a return ends a Lua block.
    if deny then
      lines[#lines + 1] = comment_line("      ", deny)
      lines[#lines + 1] = '      return req:exit(403, "Forbidden\\n")'
    end
    lines[#lines + 1] = "    end,"
    lines[#lines + 1] = "  },"
  end
  self:add(comment_line("", route.src), route.src)
  for _, nte in ipairs(route.notes) do self:add(comment_line("", "  " .. nte), route.src) end
  if #lines == 0 then
    self:add(fmt("mg.route(%s, %s)", lit(route.path), lit(route.target)), route.src)
  else
    self:add(fmt("mg.route(%s, %s, {", lit(route.path), lit(route.target)), route.src)
    for _, l in ipairs(lines) do self:add(l, route.src) end
    self:add("})", route.src)
  end
end

function T:emit_setenvif(lines, r, indent)
  lines[#lines + 1] = comment_line(indent, r.src)
  local body = {}
  for _, s in ipairs(r.sets) do
    body[#body + 1] = fmt("req.env[%s] = %s", lit(s.name), s.value and lit(s.value) or "false")
  end
  lines[#lines + 1] = fmt("%sif string.find(%s, %s) then %s end", indent, r.subject, lit(r.pattern), table.concat(body, "; "))
end

-- Routes that an earlier, shorter one covers: Apache takes the first ProxyPass that matches,
-- moongate the longest prefix, so such a route was unreachable in Apache and is left out.
-- A route's path is looked up by its prefixes that end at a segment boundary, so this is
-- linear in the routes (not quadratic: a configuration may hold 100,000 of them).
local function split_shadowed(all)
  local routes, shadowed, seen = {}, {}, {}
  for _, r in ipairs(all) do
    local by_scope = seen[r.scope]
    if not by_scope then by_scope = {}; seen[r.scope] = by_scope end
    local hidden = by_scope[r.path]
    local i = 0
    while true do
      i = r.path:find("/", i + 1, true)
      if not i then break end
      -- A prefix ending in "/" at i, and one followed by "/" at i.
      for _, p in ipairs({ r.path:sub(1, i), r.path:sub(1, i - 1) }) do
        local e = p ~= "" and by_scope[p]
        if e and (not hidden or e.order < hidden.order) then hidden = e end
      end
    end
    if hidden then shadowed[#shadowed + 1] = { r = r, by = hidden }
    else
      routes[#routes + 1] = r
      by_scope[r.path] = r
    end
  end
  return routes, shadowed
end

function T:output()
  self.out, self.srcmap, self.sendfile_named = {}, {}, {}
  local function add(s, src) self:add(s, src) end
  add(comment_line("", "init.lua imported from " .. self.root_name .. " by `moongate import-apache`."))
  add("-- Each line names the Apache directive it comes from (file:line). See docs/migrating-from-apache.md.")
  add('local mg = require "moongate"')
  add("")
  if #self.listens > 0 then
    add("-- Listeners")
    for _, l in ipairs(self.listens) do add(code_line(fmt("mg.listen(%s)", lit(l.addr)), l.src), l.src) end
    add("")
  end
  add('-- Apache\'s MPM settings do not carry over: one worker by default, mg.workers("auto") for one per core.')
  add("")
  if #self.settings_keys > 0 then
    add("-- Settings")
    add("mg.set {")
    for _, k in ipairs(self.settings_keys) do
      local s = self.settings[k]
      add(code_line(fmt("  %s = %s,", k, s.value), s.src .. (s.note and (" -- " .. s.note) or "")), s.src)
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
      local src = b.src or (b.members[1] and b.members[1].src)
      if b.src then add(comment_line("", b.src), src) end
      for _, nte in ipairs(b.notes) do add(comment_line("", nte), src) end
      add(fmt("mg.balancer(%s, {", lit(name)), src)
      if b.method then add(code_line(fmt("  method = %s,", lit(b.method.value)), b.method.src), b.method.src) end
      if b.sticky then
        add(code_line(fmt("  stickysession = %s,", lit(b.sticky.value)), b.sticky.src .. (b.sticky.note and (" -- " .. b.sticky.note) or "")), b.sticky.src)
      end
      if b.maxattempts then
        add(code_line(fmt("  maxattempts = %s,", num(b.maxattempts.value)), b.maxattempts.src .. " -- " .. b.maxattempts.note), b.maxattempts.src)
      end
      add("  members = {", src)
      for _, m in ipairs(b.members) do
        local o = #m.opts > 0 and (", " .. table.concat(m.opts, ", ")) or ""
        add(code_line(fmt("    { %s%s },", lit(m.url), o),
          m.src .. (#m.notes > 0 and (" -- no counterpart needed: " .. table.concat(m.notes, ", ")) or "")), m.src)
      end
      add("  },", src)
      add("})", src)
    end
    add("")
  end
  local routes, shadowed = split_shadowed(self.routes)
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
          self.out_comments[#self.out_comments + 1] = self:where(l.node) .. " -- no proxied route under this path: its directives change nothing here"
        end
      end
    end
  end
  for _, e in ipairs(extra) do routes[#routes + 1] = e end
  if #routes > 0 then add("-- Routes (ProxyPass)") end
  for _, r in ipairs(routes) do
    if r.scope.kind == "virtualhost" then
      local names = r.scope.names
      if #names == 0 then self:emit_route(r, nil)
      else
        for _, h in ipairs(names) do self:emit_route(r, h) end
        -- The first virtual host answers requests for any other host name.
        if r.scope.index == 1 then self:emit_route(r, nil) end
      end
    else
      self:emit_route(r, nil)
    end
  end
  for _, s in ipairs(shadowed) do
    add(comment_line("", fmt("left out: %s -- unreachable in Apache, where %s comes first", s.r.src, s.by.src)), s.r.src)
  end
  if #routes > 0 then add("") end
  -- Server-wide SetEnvIf: a rewrite hook for every request.
  local global_sifs = {}
  for _, r in ipairs(self.main.setenvif) do if not r.pathinfo then global_sifs[#global_sifs + 1] = r end end
  if #global_sifs > 0 then
    add("-- Hooks (SetEnvIf)")
    add('mg.on("rewrite", function(req)', global_sifs[1].src)
    local lines = {}
    for _, r in ipairs(global_sifs) do self:emit_setenvif(lines, r, "  ") end
    for _, l in ipairs(lines) do add(l, global_sifs[1].src) end
    add("end)", global_sifs[1].src)
    add("")
  end
  for _, name in ipairs(self.balancer_order) do
    if #self.balancers[name].members == 0 then
      self.untranslated_n = self.untranslated_n + 1
      self.out_untranslated[#self.out_untranslated + 1] = fmt("not translated: balancer://%s has no members", name)
      self.warn(fmt("balancer://%s has no BalancerMember", name))
    end
  end
  if #self.out_comments > 0 then
    add("-- No meaning for a gateway, or moongate's default:")
    for _, c in ipairs(self.out_comments) do add(comment_line("", c)) end
    add("")
  end
  if #self.out_untranslated > 0 then
    add("-- Changes request handling and was not translated (also named on stderr):")
    for _, c in ipairs(self.out_untranslated) do add(comment_line("", c)) end
    add("")
  end
  return table.concat(self.out, "\n")
end

function T:covered_by_route(path, routes)
  for _, r in ipairs(routes) do if path:sub(1, #r.path) == r.path then return true end end
  return false
end

-- The directive an output line comes from: the nearest line at or above it that has one.
function T:src_of_line(n)
  for i = math.min(n, #self.out), 1, -1 do
    if self.srcmap[i] then return self.srcmap[i] end
  end
  return nil
end

-- ---- checking the output ---------------------------------------------------------------------------
--
-- The output is run twice, each time in an environment holding only `require`, which gives a
-- moongate module and nothing else: first with a stand-in whose every function accepts
-- anything, so that every statement runs; then as `moongate -t` runs an init.lua, with a
-- fresh copy of the real module, whose checks are -t's. Hooks are not called (they run at
-- request time). Returns nil when it passes; "code", why when the output reads or writes any
-- other global or requires any other module (it would run code of its own: a bug here);
-- "fails", message when moongate's checks refuse it.

local Trap = {}

local function trap(what) error(setmetatable({ msg = what }, Trap), 0) end

local function run_output(chunk, mg)
  setfenv(chunk, setmetatable({}, {
    __index = function(_, k)
      if k == "require" then
        return function(name)
          if name ~= "moongate" then trap("it requires " .. tostring(name)) end
          return mg
        end
      end
      trap("it reads the global " .. tostring(k))
    end,
    __newindex = function(_, k) trap("it sets the global " .. tostring(k)) end,
  }))
  return pcall(chunk)
end

local function check_output(text, sys)
  local chunk, perr = loadstring(text, "=init.lua")
  if not chunk then return "code", "it does not parse: " .. tostring(perr) end
  local stand_in = setmetatable({}, { __index = function() return function() end end })
  local ok, err = run_output(chunk, stand_in)
  if not ok then return "code", getmetatable(err) == Trap and err.msg or tostring(err) end
  package.loaded.moongate = nil
  local mg = require "moongate"
  mg._lookup = sys.lookup
  ok, err = run_output(chunk, mg)
  if ok and mg._finish then ok, err = pcall(mg._finish) end
  package.loaded.moongate = nil
  if ok then return nil end
  if getmetatable(err) == Trap then return "code", err.msg end
  return "fails", tostring(err)
end

-- ---- the command ------------------------------------------------------------------------------------

function M.run(path, sys)
  local function warn(msg) sys.err("moongate import-apache: " .. note(msg) .. "\n") end
  local root_dir = dirname(path)
  local reader = setmetatable({ sys = sys, root_dir = root_dir, bytes = 0, entries = 0 }, Reader)
  local tree = {}
  local ok, err = pcall(function()
    local fine, e = reader:parse_file(path, tree, 0, 0)
    if not fine then error(setmetatable({ msg = fmt("%s: %s", path, tostring(e)) }, SyntaxError), 0) end
  end)
  if not ok then
    if getmetatable(err) == SyntaxError then
      warn(err.msg)
      return 1
    end
    error(err, 0)
  end
  local t = setmetatable({
    base = root_dir, root_dir = root_dir, server_root = reader.server_root, root_name = path:match("[^/]*$"),
    settings = {}, settings_order = {}, settings_keys = {}, listens = {}, balancers = {}, balancer_order = {},
    routes = {}, vhosts = {}, nlocations = 0, out_comments = {}, out_untranslated = {}, untranslated_n = 0,
    warn = warn,
  }, T)
  t.main = new_scope(nil, "main")
  ok, err = pcall(t.walk, t, tree, t.main)
  if not ok then
    if getmetatable(err) == SyntaxError then
      warn(err.msg)
      return 1
    end
    error(err, 0)
  end
  local text = t:output() .. "\n"
  local kind, why = check_output(text, sys)
  if kind == "code" then
    warn("internal error: the output would do more than configure moongate (" .. why .. "); nothing is printed")
    return 1
  end
  sys.out(text)
  if kind == "fails" then
    -- mg.set names the setting it refuses; other calls are found by their line.
    local n = tonumber(why:match("^init%.lua:(%d+):"))
    local key = why:match("^init%.lua:%d+: ([%w_]+):")
    local src = key and t.settings[key] and t.settings[key].src or n and t:src_of_line(n)
    warn(fmt("%sthe output does not pass `moongate -t` as it stands: %s", src and ("from " .. src .. ": ") or "", why))
    return 3
  end
  return t.untranslated_n > 0 and 3 or 0
end

return M
