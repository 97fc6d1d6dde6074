-- moongate.lua: the Lua half of the configuration API (docs/reference.md, "init.lua").
--
-- init.lua calls these functions; each one validates its arguments at once and records a
-- declaration in `M._state`, which the C loader (src/config_load.c) turns into the runtime
-- configuration. Every mistake raises an error naming the init.lua file and line of the call,
-- so nothing is ever silently defaulted. Sizes and times are converted here to bytes and
-- milliseconds, so C only ever sees numbers.

local M = {}

local state = {
  listens = {},
  settings = {},
  routes = {},
  balancers = {},
  balancer_order = {},
  hooks = { rewrite = {}, access = {}, balancer = {}, header_filter = {}, body_filter = {}, log = {}, init_worker = {} },
  timers = {},
  workers = 1,
}
M._state = state

-- "file:line" of the init.lua statement that called into this module.
local function caller(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info then return "?" end
  local src = info.source
  if src:sub(1, 1) == "@" then src = src:sub(2) else src = info.short_src end
  return src .. ":" .. (info.currentline or 0)
end

local function fail(at, fmt, ...)
  error(at .. ": " .. string.format(fmt, ...), 0)
end

local function parse_size(at, key, v)
  if type(v) == "number" then
    if v < 0 or v ~= math.floor(v) then fail(at, "%s: size must be a whole number of bytes, got %s", key, tostring(v)) end
    return v
  end
  if type(v) ~= "string" then fail(at, "%s: size must be a number or a string like \"64k\", got %s", key, type(v)) end
  local n, unit = v:match("^%s*(%d+)%s*([kKmMgG]?)%s*$")
  if not n then fail(at, "%s: cannot read size %q (use \"512\", \"64k\", \"10m\", \"1g\")", key, v) end
  local mul = ({ [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 })[unit:lower()]
  return tonumber(n) * mul
end

-- The longest time any setting takes: 2^31 - 1 ms (24.8 days), what the C side's timers hold.
local MAX_TIME_MS = 2147483647

local function parse_time(at, key, v)
  local ms
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then fail(at, "%s: time must be a finite number of seconds, got %s", key, tostring(v)) end
    if v < 0 then fail(at, "%s: time must not be negative", key) end
    ms = math.floor(v * 1000 + 0.5)
  else
    if type(v) ~= "string" then fail(at, "%s: time must be seconds or a string like \"250ms\", got %s", key, type(v)) end
    local n, unit = v:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
    local mul = unit and ({ [""] = 1000, s = 1000, ms = 1, m = 60000, h = 3600000 })[unit]
    if not n or not mul then fail(at, "%s: cannot read time %q (use 5, \"5s\", \"250ms\", \"2m\")", key, v) end
    ms = math.floor(tonumber(n) * mul + 0.5)
  end
  if ms > MAX_TIME_MS then fail(at, "%s: time %s is longer than the longest a timer holds (24.8 days)", key, tostring(v)) end
  return ms
end

local function parse_bool(at, key, v)
  if type(v) ~= "boolean" then fail(at, "%s: expected true or false, got %s", key, type(v)) end
  return v
end

-- Every setting of mg.set{}: its parser and default. Defaults live here, in one place.
local settings = {
  server_name = { "string", false },
  client_header_timeout = { "time", 60 },
  client_body_timeout = { "time", 60 },
  keepalive_timeout = { "time", 75 },
  keepalive_requests = { "count", 1000 },
  max_request_line = { "size", 8192 },
  max_header_size = { "size", 8192 },
  max_headers = { "count", 100 },
  client_max_body_size = { "size", "1m" },
  max_connections = { "count", 10000 },
  connect_timeout = { "time", 5 },
  timeout = { "time", 60 },
  internal_redirect_limit = { "count", 10 },
  max_backend_header_size = { "size", "64k" },
  shutdown_timeout = { "time", 30 },
  access_log = { "string", "off" },
  error_log = { "string", false },
  log_level = { "level", "info" },
  access_log_format = { "format", "combined" },
  user = { "user", false },
  group = { "group", false },
  pass_authorization = { "bool", true },
  allow_encoded_slashes = { "bool", false },
  watch = { "bool", false },
  pid = { "string", false },
  sendfile_missing = { "status", 500 },
  subrequest_max_body = { "size", "1m" },
  subrequest_limit = { "count", 1000 },
  subrequest_max_total_body = { "size", "16m" },
  lua_body_max = { "size", "1m" },
  lua_max_run_time = { "time_off", 5 },
  lua_socket_timeout = { "positive_time", 60 },
  regex_cache_max_entries = { "count", 1024 },
  lua_ssl_trusted_certificate = { "string", "/etc/ssl/certs/ca-certificates.crt" },
  lua_ssl_verify_depth = { "count", 1 },
  lua_max_pending_timers = { "count", 1024 },
  lua_max_running_timers = { "count", 256 },
  -- SPEC 18: HTTP/2 limits, and the send timeout of HTTP/2 streams.
  http2_max_concurrent_streams = { "streams", 128 },
  http2_max_header_list_size = { "size", "16k" },
  http2_initial_window_size = { "window", "64k" },
  send_timeout = { "positive_time", 60 },
  -- SPEC 19: shielding SCGI workers from slow clients (also per route).
  request_buffering = { "bool", true },
  response_buffering = { "bool", true },
  response_buffer_size = { "size", "256k" },
  response_temp_max = { "size", "1g" },
  -- SPEC 19: response compression, off unless set (as nginx's gzip).
  compress = { "compress", false },
  -- SPEC 19: error pages (also per route), and the backend's errors replaced by them.
  error_pages = { "error_pages", false },
  intercept_errors = { "bool", false },
  -- SPEC 19: the real client address (nginx's realip), also in mg.listen's options.
  real_ip_from = { "cidrs", false },
  real_ip_header = { "realip_header", "X-Real-IP" },
  real_ip_recursive = { "bool", false },
  -- SPEC 20: metrics and tracing.
  histogram_buckets = { "buckets", { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 } },
  tracing = { "bool", true },
  -- SPEC 20: balancer members given by host name, looked up again (handler/resolve.c).
  resolve_every = { "positive_time", 30 },
  resolver = { "resolvers", false },
}
M._settings = settings

local levels = { debug = true, info = true, notice = true, warn = true, error = true }

local function parse_setting(at, key, kind, v)
  if kind == "time" then return parse_time(at, key, v)
  elseif kind == "time_off" then
    -- 0, false or "off": no limit.
    if v == false or v == "off" then return 0 end
    return parse_time(at, key, v)
  elseif kind == "positive_time" then
    local ms = parse_time(at, key, v)
    if ms < 1 then fail(at, "%s: time must be positive, got %s", key, tostring(v)) end
    return ms
  elseif kind == "size" then return parse_size(at, key, v)
  elseif kind == "window" then
    local n = parse_size(at, key, v)
    if n > 2147483647 then fail(at, "%s: an HTTP/2 window is at most 2147483647 bytes, got %s", key, tostring(v)) end
    return n
  elseif kind == "streams" then
    if type(v) ~= "number" or v < 1 or v ~= math.floor(v) or v > 2147483647 then
      fail(at, "%s: expected a whole number from 1, got %s", key, tostring(v))
    end
    return v
  elseif kind == "bool" then return parse_bool(at, key, v)
  elseif kind == "count" then
    if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then fail(at, "%s: expected a whole number, got %s", key, tostring(v)) end
    return v
  elseif kind == "string" then
    if type(v) ~= "string" then fail(at, "%s: expected a string, got %s", key, type(v)) end
    return v
  elseif kind == "level" then
    if not levels[v] then fail(at, "%s: expected one of debug, info, notice, warn, error; got %s", key, tostring(v)) end
    return v
  elseif kind == "user" or kind == "group" then
    if type(v) ~= "string" or v == "" then fail(at, "%s: expected a %s name, got %s", key, kind, tostring(v)) end
    -- M._lookup is set by the C side (lua_api.c): the name must exist when the config loads.
    if not M._lookup(kind, v) then fail(at, "%s: no %s named %q on this system", key, kind, v) end
    return v
  elseif kind == "format" then
    if v ~= "combined" and v ~= "json" then fail(at, "%s: expected \"combined\" or \"json\", got %s", key, tostring(v)) end
    return v
  elseif kind == "status" then
    if v ~= 404 and v ~= 500 then fail(at, "%s: expected 404 or 500, got %s", key, tostring(v)) end
    return v
  elseif kind == "resolvers" then
    -- DNS servers as "ip" or "ip:port" ("[::1]:53" for IPv6 with a port).
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" or #v == 0 then fail(at, "%s: expected a list of DNS servers like { \"127.0.0.1:53\" }, got %s", key, type(v)) end
    for i, a in ipairs(v) do
      local ok = type(a) == "string" and (a:match("^%d+%.%d+%.%d+%.%d+$") or a:match("^%d+%.%d+%.%d+%.%d+:%d+$")
        or a:match("^%[[%x:]+%]:%d+$") or a:match("^[%x:]+$"))
      if not ok then fail(at, "%s[%d]: expected an IP address with an optional port like \"127.0.0.1:53\" or \"[::1]:53\", got %s", key, i, tostring(a)) end
    end
    return v
  elseif kind == "compress" then return M._parse_compress(at, key, v)
  elseif kind == "error_pages" then return M._parse_error_pages(at, key, v)
  elseif kind == "cidrs" then
    -- A string or a list of them; M._cidr (lua_api.c, base/cidr.c) reads each as nginx would.
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" then fail(at, "%s: expected a list of addresses or CIDRs like { \"10.0.0.0/8\", \"::1\", \"unix:\" }, got %s", key, type(v)) end
    local list = {}
    for i, c in ipairs(v) do
      if type(c) ~= "string" or not M._cidr(c) then
        fail(at, "%s[%d]: cannot read %s as an address or CIDR (use \"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\" or \"unix:\")", key, i, type(c) == "string" and string.format("%q", c) or type(c))
      end
      list[i] = c
    end
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then fail(at, "%s: expected a list, got a table with key %s", key, tostring(k)) end
    end
    return list
  elseif kind == "buckets" then
    -- Prometheus histogram upper bounds in seconds; +Inf is always added.
    if type(v) ~= "table" or #v == 0 or #v > 32 then
      fail(at, "%s: expected a list of 1 to 32 upper bounds in seconds like { 0.01, 0.1, 1 }, got %s", key, type(v) == "table" and (#v .. " bounds") or type(v))
    end
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then fail(at, "%s: expected a list, got a table with key %s", key, tostring(k)) end
    end
    for i, b in ipairs(v) do
      if type(b) ~= "number" or b ~= b or b <= 0 or b == math.huge then
        fail(at, "%s[%d]: expected a positive number of seconds, got %s", key, i, tostring(b))
      end
      if i > 1 and b <= v[i - 1] then fail(at, "%s[%d]: the bounds must increase, but %s follows %s", key, i, tostring(b), tostring(v[i - 1])) end
    end
    local list = {}
    for i, b in ipairs(v) do list[i] = b end
    return list
  elseif kind == "realip_header" then
    if type(v) ~= "string" or not v:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      fail(at, "%s: expected a header name (\"X-Real-IP\", \"X-Forwarded-For\", \"Forwarded\" or another), got %s", key, tostring(v))
    end
    if v:lower() == "proxy_protocol" then
      fail(at, "%s: \"proxy_protocol\" is not a header here: with mg.listen(addr, { proxy_protocol = true }) the PROXY header's source already is the peer address", key)
    end
    return v
  end
end

-- SPEC 19: error_pages = { [404] = "/errors/404.html", [502] = function(req, status) ... end } or false.
-- Normalised to false or { at = "file:line", { status = 404, uri = "/..." }, { status = 502, fn = f }, ... }
-- in status order, for config_load.c.
function M._parse_error_pages(at, key, v)
  if v == false then return false end
  if type(v) ~= "table" then fail(at, "%s: expected a table { [status] = \"/local/uri\" or function }, got %s", key, type(v)) end
  local r = { at = at }
  for status, page in pairs(v) do
    if type(status) ~= "number" or status ~= math.floor(status) or status < 300 or status > 599 then
      fail(at, "%s: the keys are statuses from 300 to 599, got %s", key, tostring(status))
    end
    if type(page) == "string" then
      if page:sub(1, 1) ~= "/" or page:sub(1, 2) == "//" or page:find("[%z%s]") then
        fail(at, "%s[%d]: expected a local URI starting with / (or a function), got %q", key, status, page)
      end
      r[#r + 1] = { status = status, uri = page }
    elseif type(page) == "function" then
      r[#r + 1] = { status = status, fn = page }
    else
      fail(at, "%s[%d]: expected a local URI or a function(req, status), got %s", key, status, type(page))
    end
  end
  table.sort(r, function(a, b) return a.status < b.status end)
  return r
end

-- SPEC 19: compress = true | false | { types = {...} or "*", min_length = N, levels = { gzip, br, zstd } }.
-- Normalised to false or { types = ",a,b," or "*", min_length, gzip, br, zstd } for config_load.c.
local compress_types = { "text/html", "text/css", "text/plain", "text/javascript", "text/xml", "text/markdown",
  "text/csv", "application/javascript", "application/json", "application/xml", "application/xhtml+xml",
  "application/rss+xml", "application/atom+xml", "application/manifest+json", "application/wasm", "image/svg+xml",
  "image/x-icon", "font/ttf", "font/otf" }
local compress_levels = { gzip = { 1, 1, 9 }, br = { 4, 0, 11 }, zstd = { 3, 1, 19 } }
function M._parse_compress(at, key, v)
  if v == false then return false end
  if v == true then v = {} end
  if type(v) ~= "table" then fail(at, "%s: expected true, false or a table { types, min_length, levels }, got %s", key, type(v)) end
  for k in pairs(v) do
    if k ~= "types" and k ~= "min_length" and k ~= "levels" then fail(at, "%s: unknown option %q (types, min_length, levels)", key, tostring(k)) end
  end
  local r = { min_length = 256 }
  local types = v.types or compress_types
  if types == "*" then r.types = "*"
  else
    if type(types) ~= "table" or #types == 0 then fail(at, "%s.types: expected a list of MIME types or \"*\"", key) end
    local list = {}
    for i, t in ipairs(types) do
      if type(t) ~= "string" or not t:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+$") and t ~= "*" then
        fail(at, "%s.types[%d]: expected a MIME type like \"text/html\", got %s", key, i, tostring(t))
      end
      if t == "*" then r.types = "*" end
      list[#list + 1] = t:lower()
    end
    r.types = r.types or ("," .. table.concat(list, ",") .. ",")
  end
  if v.min_length ~= nil then r.min_length = parse_size(at, key .. ".min_length", v.min_length) end
  local lv = v.levels or {}
  if type(lv) ~= "table" then fail(at, "%s.levels: expected a table { gzip = N, br = N, zstd = N }", key) end
  for k in pairs(lv) do
    if not compress_levels[k] then fail(at, "%s.levels: unknown encoding %q (gzip, br, zstd)", key, tostring(k)) end
  end
  for name, d in pairs(compress_levels) do
    local n = lv[name]
    if n == nil then n = d[1] end
    if type(n) ~= "number" or n ~= math.floor(n) or n < d[2] or n > d[3] then
      fail(at, "%s.levels.%s: expected a whole number from %d to %d, got %s", key, name, d[2], d[3], tostring(n))
    end
    r[name] = n
  end
  return r
end

for key, def in pairs(settings) do
  local d = def[2]
  if d ~= false then state.settings[key] = parse_setting("default", key, def[1], d) end
end

function M.set(t)
  local at = caller(2)
  if type(t) ~= "table" then fail(at, "mg.set: expected a table of settings, got %s", type(t)) end
  for k, v in pairs(t) do
    local def = settings[k]
    if not def then fail(at, "mg.set: unknown setting %q", tostring(k)) end
    state.settings[k] = parse_setting(at, k, def[1], v)
  end
end

-- The realip settings a listener may override (SPEC 19).
local listen_realip = { real_ip_from = true, real_ip_header = true, real_ip_recursive = true }

function M.listen(addr, opts)
  local at = caller(2)
  local tls
  if opts ~= nil then
    if type(opts) ~= "table" then fail(at, "mg.listen: argument #2 must be a table of options, got %s", type(opts)) end
    for k in pairs(opts) do
      if k ~= "tls" and k ~= "http2" and k ~= "proxy_protocol" and not listen_realip[k] then
        fail(at, "mg.listen: unknown option %q (tls, http2, proxy_protocol, real_ip_from, real_ip_header, real_ip_recursive)", tostring(k))
      end
    end
    if opts.proxy_protocol ~= nil and type(opts.proxy_protocol) ~= "boolean" then
      fail(at, "mg.listen: proxy_protocol must be true or false, got %s", type(opts.proxy_protocol))
    end
    if opts.http2 ~= nil and type(opts.http2) ~= "boolean" then
      fail(at, "mg.listen: http2 must be true or false, got %s", type(opts.http2))
    end
    if opts.tls ~= nil then
      local t = opts.tls
      if type(t) ~= "table" then fail(at, "mg.listen: tls must be { cert = FILE, key = FILE } or { certs = { ... } }") end
      for k in pairs(t) do
        if k ~= "cert" and k ~= "key" and k ~= "certs" then fail(at, "mg.listen: unknown tls option %q (cert, key, certs)", tostring(k)) end
      end
      local list = t.certs or { { cert = t.cert, key = t.key } }
      if t.certs and (t.cert or t.key) then fail(at, "mg.listen: tls takes cert/key or certs, not both") end
      if type(list) ~= "table" or #list == 0 then fail(at, "mg.listen: tls.certs must be a list of { cert = FILE, key = FILE }") end
      tls = {}
      for i, c in ipairs(list) do
        if type(c) ~= "table" or type(c.cert) ~= "string" or type(c.key) ~= "string" then
          fail(at, "mg.listen: tls certificate #%d needs cert = FILE and key = FILE (PEM)", i)
        end
        tls[i] = { cert = c.cert, key = c.key }
      end
    end
  end
  if type(addr) == "number" then addr = "0.0.0.0:" .. addr end
  if type(addr) ~= "string" then fail(at, "mg.listen: expected \"host:port\", \"[::1]:port\" or \"unix:/path\", got %s", type(addr)) end
  local l
  if addr:sub(1, 5) == "unix:" then
    local path = addr:sub(6)
    if path == "" then fail(at, "mg.listen: unix socket path is empty in %q", addr) end
    l = { kind = "unix", path = path }
  else
    local host, port = addr:match("^%[([%x:]+)%]:(%d+)$")
    if not host then host, port = addr:match("^([^:]+):(%d+)$") end
    if not host then
      port = addr:match("^(%d+)$")
      host = port and "0.0.0.0"
    end
    if not host then fail(at, "mg.listen: cannot read address %q (use \"127.0.0.1:8080\", \"[::1]:8080\" or \"unix:/path\")", addr) end
    port = tonumber(port)
    if port < 1 or port > 65535 then fail(at, "mg.listen: port %d out of range in %q", port, addr) end
    l = { kind = "tcp", host = host, port = port }
  end
  l.text = addr
  l.at = at
  l.tls = tls
  if opts then
    l.http2 = opts.http2
    l.proxy_protocol = opts.proxy_protocol
    for k in pairs(listen_realip) do
      if opts[k] ~= nil then l[k] = parse_setting(at, "mg.listen: " .. k, settings[k][1], opts[k]) end
    end
  end
  state.listens[#state.listens + 1] = l
end

function M.workers(n)
  local at = caller(2)
  if n == "auto" then state.workers = 0; return end
  if type(n) ~= "number" or n < 1 or n > 256 or n ~= math.floor(n) then
    fail(at, "mg.workers: expected a number from 1 to 256 or \"auto\", got %s", tostring(n))
  end
  state.workers = n
end

-- Backend URL forms: scgi://host[:port][/], unix:/path|scgi://[/]
local function parse_backend(at, what, url)
  if type(url) ~= "string" then fail(at, "%s: expected an scgi:// or unix:/path|scgi:// URL, got %s", what, type(url)) end
  local path = url:match("^unix:(/[^|]*)|scgi://?$")
  if path then return { kind = "unix", path = path, url = url } end
  local rest = url:match("^scgi://(.*)$")
  if not rest then fail(at, "%s: bad backend URL %q (use scgi://host:port/ or unix:/path|scgi://)", what, url) end
  rest = rest:gsub("/$", "")
  local host, port = rest:match("^%[([%x:]+)%]:?(%d*)$")
  if not host then host, port = rest:match("^([%w%.%-_]+):?(%d*)$") end
  if not host then fail(at, "%s: bad host in backend URL %q", what, url) end
  port = tonumber(port ~= "" and port or "4000")
  if port < 1 or port > 65535 then fail(at, "%s: port out of range in %q", what, url) end
  return { kind = "tcp", host = host, port = port, url = url }
end

local function header_option(at, key, v, default_header)
  if v == nil or v == false or v == "Off" or v == "off" then return nil end
  if v == true or v == "On" or v == "on" then return default_header end
  if type(v) == "string" and v:match("^[%w!#$%%&'*+.^_`|~-]+$") then return v end
  fail(at, "%s: expected true/\"On\", false/\"Off\" or a header name, got %s", key, tostring(v))
end

local phases = { rewrite = true, access = true, balancer = true, header_filter = true, body_filter = true, log = true }

local route_keys = {
  host = true, internal_redirect = true, sendfile = true, sendfile_roots = true, sendfile_missing = true,
  pathinfo = true, env = true, hooks = true, connect_timeout = true, timeout = true,
  client_max_body_size = true, pass_authorization = true, internal = true,
  -- SPEC 19: buffering
  request_buffering = true, response_buffering = true, response_buffer_size = true, response_temp_max = true,
  compress = true, -- SPEC 19
  error_pages = true, intercept_errors = true, -- SPEC 19
}

-- SPEC 19: the options of a static route ({ root = DIR, ... }).
local static_keys = { root = true, precompressed = true, expires = true, cache_control = true, index = true, fallback = true }

-- nginx's `expires` time: "30s", "10m", "1h 30m", "1y 2d"... Units y (365 days), M (30 days), w,
-- d, h, m, s, each at most once and from the largest down, spaces between them optional; a
-- last number without a unit is seconds; a leading "-" puts the time in the past.
local expires_units = { y = 31536000, M = 2592000, w = 604800, d = 86400, h = 3600, m = 60, s = 1 }
local expires_order = "yMwdhms"

local function parse_expires(at, v)
  local bad = "expires: expected seconds, a time like \"30s\", \"10m\", \"1h 30m\", \"7d\", \"1y\" (units y M w d h m s, largest first), or \"epoch\", \"max\", \"off\"; got %s"
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge or v ~= math.floor(v) then fail(at, bad, tostring(v)) end
    return "after", v
  end
  if type(v) ~= "string" then fail(at, bad, type(v)) end
  if v == "off" then return nil end
  if v == "epoch" or v == "max" then return v, 0 end
  local sign, rest = v:match("^(%-?)(.+)$")
  local total, last, pos = 0, 0, 1
  while pos <= #rest do
    local n, unit, stop = rest:match("^(%d+)(%a?)()", pos)
    if not n then fail(at, bad, string.format("%q", v)) end
    if unit == "" then
      if stop <= #rest then fail(at, bad, string.format("%q", v)) end
      unit = "s"
    end
    local rank = expires_order:find(unit, 1, true)
    if not rank or not expires_units[unit] or rank <= last then fail(at, bad, string.format("%q", v)) end
    total, last = total + tonumber(n) * expires_units[unit], rank
    pos = stop
    if rest:sub(pos, pos) == " " then
      pos = pos + 1
      if pos > #rest then fail(at, bad, string.format("%q", v)) end
    end
  end
  if total > 2 ^ 53 then fail(at, "expires: %q is too long", v) end
  return "after", sign == "-" and -total or total
end

local function parse_static_options(at, r, target)
  if target.expires ~= nil then r.expires_mode, r.expires = parse_expires(at, target.expires) end
  if target.cache_control ~= nil then
    local cc = target.cache_control
    if type(cc) ~= "string" or cc == "" then
      fail(at, "cache_control: expected a header value such as \"public, max-age=3600\", got %s", type(cc) == "string" and "\"\"" or type(cc))
    end
    if cc:find("[%z\1-\8\10-\31\127]") then fail(at, "cache_control: the value holds a control character (a line break?)") end
    r.cache_control = cc
  end
  if target.index ~= nil then
    local list = target.index
    if list == false then list = {} elseif type(list) == "string" then list = { list } end
    if type(list) ~= "table" then fail(at, "index: expected a file name or a list of them, got %s", type(target.index)) end
    r.index = {}
    for i, name in ipairs(list) do
      if type(name) ~= "string" or name == "" or name:find("/", 1, true) or name == "." or name == ".." or name:find("%z") then
        fail(at, "index[%d]: expected a file name (no \"/\"), got %s", i, type(name) == "string" and string.format("%q", name) or type(name))
      end
      r.index[i] = name
    end
    for k in pairs(list) do
      if type(k) ~= "number" or k > #list then fail(at, "index: expected a list of file names") end
    end
  end
  if target.fallback ~= nil then
    if type(target.fallback) ~= "string" or target.fallback:sub(1, 1) ~= "/" then
      fail(at, "fallback: expected the path of another route, such as \"/app/\", got %s", tostring(target.fallback))
    end
    r.fallback = target.fallback
  end
end

local status_marker = {}

-- SPEC 20: mg.manager_handler{ auth = fn } (lua/moongate/manager.lua): a content handler,
-- remembered here so that mg.route can tell it apart and _finish can check its listeners.
local managers = setmetatable({}, { __mode = "k" })

function M.manager_handler(opts)
  local at = caller(2)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then fail(at, "mg.manager_handler: expected a table { auth = function(req) ... end }, got %s", type(opts)) end
  for k in pairs(opts) do
    if k ~= "auth" then fail(at, "mg.manager_handler: unknown option %q (auth)", tostring(k)) end
  end
  if opts.auth ~= nil and type(opts.auth) ~= "function" then
    fail(at, "mg.manager_handler: auth must be a function(req) returning true, got %s", type(opts.auth))
  end
  local fn = require("moongate.manager").handler(opts.auth)
  managers[fn] = { auth = opts.auth ~= nil, at = at }
  return fn
end

function M.status_handler()
  return status_marker
end

function M.route(match, target, opts)
  local at = caller(2)
  local spec = match
  if type(match) ~= "string" or match == "" then fail(at, "mg.route: argument #1 must be a path prefix, \"=/exact\" or \"~regex\", got %s", tostring(match)) end
  local exact, regex, caseless = false, false, false
  if match:sub(1, 2) == "~*" then regex, caseless = true, true; match = match:sub(3)
  elseif match:sub(1, 1) == "~" then regex = true; match = match:sub(2)
  elseif match:sub(1, 1) == "=" then exact = true; match = match:sub(2) end
  if regex then
    -- checked by PCRE2 when the configuration loads (config_load.c), which names this line
    if match == "" then fail(at, "mg.route: empty regular expression") end
    if match:find("%z") then fail(at, "mg.route: the regular expression holds a NUL byte") end
  elseif match:sub(1, 1) ~= "/" then fail(at, "mg.route: path %q must start with /", match) end
  local r = { match = match, spec = spec, exact = exact, regex = regex, caseless = caseless, at = at, internal_redirect = "Location" }
  if type(target) == "string" then
    local bname = target:match("^balancer://([%w%-_%.]+)/?$")
    if bname then
      r.kind = "balancer"; r.balancer = bname
    else
      r.kind = "scgi"; r.backend = parse_backend(at, "mg.route", target)
    end
  elseif type(target) == "function" then
    r.kind = "lua"; r.handler = target
    if managers[target] then r.manager = managers[target] end
  elseif target == status_marker then
    r.kind = "status"
  elseif type(target) == "table" then
    if type(target.root) ~= "string" then fail(at, "mg.route: a table target must be { root = \"/dir\" }") end
    for k in pairs(target) do
      if not static_keys[k] then fail(at, "mg.route: unknown static option %q (root, precompressed, expires, cache_control, index, fallback)", tostring(k)) end
    end
    r.kind = "static"; r.root = target.root
    -- SPEC 19: file.br, file.zst, file.gz served when the client accepts them.
    if target.precompressed ~= nil then r.precompressed = parse_bool(at, "precompressed", target.precompressed) end
    parse_static_options(at, r, target)
  else
    fail(at, "mg.route: argument #2 must be a backend URL, balancer://name/, { root = DIR }, a function or mg.status_handler(), got %s", type(target))
  end
  if opts ~= nil and type(opts) ~= "table" then fail(at, "mg.route: argument #3 must be a table of options, got %s", type(opts)) end
  opts = opts or {}
  for k, v in pairs(opts) do
    if not route_keys[k] then fail(at, "mg.route: unknown option %q", tostring(k)) end
  end
  if opts.host ~= nil then
    if type(opts.host) ~= "string" or opts.host == "" then fail(at, "host: expected a host name") end
    r.host = opts.host:lower()
  end
  if opts.internal_redirect ~= nil then
    r.internal_redirect = header_option(at, "internal_redirect", opts.internal_redirect, "Location")
  end
  r.sendfile = header_option(at, "sendfile", opts.sendfile, "X-Sendfile")
  if opts.sendfile_roots ~= nil then
    if type(opts.sendfile_roots) ~= "table" or #opts.sendfile_roots == 0 then fail(at, "sendfile_roots: expected a list of directories") end
    r.sendfile_roots = {}
    for i, d in ipairs(opts.sendfile_roots) do
      if type(d) ~= "string" or d == "" then fail(at, "sendfile_roots[%d]: expected a directory path", i) end
      r.sendfile_roots[i] = d
    end
  end
  if r.sendfile and not r.sendfile_roots then
    fail(at, "sendfile is on but sendfile_roots is not set: name the directories the backend may send files from")
  end
  if opts.sendfile_missing ~= nil then r.sendfile_missing = parse_setting(at, "sendfile_missing", "status", opts.sendfile_missing) end
  if opts.pathinfo ~= nil then r.pathinfo = parse_bool(at, "pathinfo", opts.pathinfo) end
  if opts.internal ~= nil then r.internal = parse_bool(at, "internal", opts.internal) end
  if opts.pass_authorization ~= nil then r.pass_authorization = parse_bool(at, "pass_authorization", opts.pass_authorization) end
  if opts.connect_timeout ~= nil then r.connect_timeout = parse_time(at, "connect_timeout", opts.connect_timeout) end
  if opts.timeout ~= nil then r.timeout = parse_time(at, "timeout", opts.timeout) end
  if opts.compress ~= nil then r.compress = M._parse_compress(at, "compress", opts.compress) end -- SPEC 19
  if opts.error_pages ~= nil then r.error_pages = M._parse_error_pages(at, "error_pages", opts.error_pages) end
  if opts.intercept_errors ~= nil then r.intercept_errors = parse_bool(at, "intercept_errors", opts.intercept_errors) end
  if opts.client_max_body_size ~= nil then r.client_max_body_size = parse_size(at, "client_max_body_size", opts.client_max_body_size) end
  -- SPEC 19: buffering
  for _, k in ipairs({ "request_buffering", "response_buffering" }) do
    if opts[k] ~= nil then r[k] = parse_bool(at, k, opts[k]) end
  end
  for _, k in ipairs({ "response_buffer_size", "response_temp_max" }) do
    if opts[k] ~= nil then r[k] = parse_size(at, k, opts[k]) end
  end
  if opts.env ~= nil then
    if type(opts.env) ~= "table" then fail(at, "env: expected a table of NAME = value") end
    r.env = {}
    for k, v in pairs(opts.env) do
      if type(k) ~= "string" or k == "" then fail(at, "env: variable names must be strings") end
      if k == "CONTENT_LENGTH" or k == "SCGI" then fail(at, "env: %s cannot be overridden", k) end
      if v == false then r.env[#r.env + 1] = { k, false }
      elseif type(v) == "string" or type(v) == "number" then
        local s = tostring(v)
        if s:find("%z") then fail(at, "env: value of %s holds a NUL byte", k) end
        r.env[#r.env + 1] = { k, s }
      else fail(at, "env: value of %s must be a string, a number or false", k) end
    end
    table.sort(r.env, function(a, b) return a[1] < b[1] end)
  end
  if opts.hooks ~= nil then
    if type(opts.hooks) ~= "table" then fail(at, "hooks: expected a table of phase = function") end
    r.hooks = {}
    for phase, fn in pairs(opts.hooks) do
      if not phases[phase] then fail(at, "hooks: unknown phase %q (access, balancer, header_filter, body_filter, log)", tostring(phase)) end
      if phase == "rewrite" then fail(at, "hooks: a route cannot have a rewrite hook, rewrite runs before routing; use mg.on(\"rewrite\", fn)") end
      if type(fn) ~= "function" then fail(at, "hooks.%s: expected a function, got %s", phase, type(fn)) end
      r.hooks[phase] = fn
    end
    if r.hooks.balancer and r.kind ~= "balancer" then fail(at, "hooks.balancer: only a balancer:// route has a balancer phase") end
  end
  state.routes[#state.routes + 1] = r
end

local member_keys = { lbfactor = true, route = true, status = true, retry = true, connect_timeout = true, timeout = true, max_conns = true,
  resolve = true, max_addresses = true }
local methods = { byrequests = true, bytraffic = true, bybusyness = true }
local balancer_keys = { method = true, stickysession = true, members = true, maxattempts = true, health = true, queue = true,
  passive = true, retries = true }
local queue_keys = { size = true, timeout = true }
local health_keys = { uri = true, interval = true, timeout = true, fails = true, passes = true, expect = true }

-- A member's whole-number option from lo to hi, or nil when not given.
local function member_count(at, what, key, n, lo, hi, lo_note)
  if n == nil then return nil end
  if type(n) ~= "number" or n < lo or n > hi or n ~= math.floor(n) then
    fail(at, "%s: %s must be a whole number from %d%s to %d, got %s", what, key, lo, lo_note, hi, tostring(n))
  end
  return n
end

function M.balancer(name, spec)
  local at = caller(2)
  if type(name) ~= "string" or not name:match("^[%w%-_%.]+$") then fail(at, "mg.balancer: argument #1 must be a name of letters, digits, -, _ or ., got %s", tostring(name)) end
  if state.balancers[name] then fail(at, "mg.balancer: balancer %q is already defined at %s", name, state.balancers[name].at) end
  if type(spec) ~= "table" then fail(at, "mg.balancer: argument #2 must be a table") end
  for k in pairs(spec) do if not balancer_keys[k] then fail(at, "mg.balancer: unknown option %q", tostring(k)) end end
  local b = { name = name, at = at, method = spec.method or "byrequests", members = {} }
  if type(b.method) == "function" then
    b.method_fn = b.method; b.method = "lua"
  elseif not methods[b.method] then
    fail(at, "mg.balancer: method must be byrequests, bytraffic, bybusyness or a function, got %s", tostring(b.method))
  end
  if spec.stickysession ~= nil then
    if type(spec.stickysession) ~= "string" or not spec.stickysession:match("^[%w%-_%.]+$") then fail(at, "stickysession: expected a cookie or parameter name") end
    b.stickysession = spec.stickysession
  end
  if type(spec.members) ~= "table" or #spec.members == 0 then fail(at, "mg.balancer: members must be a non-empty list") end
  local seen = {}
  for i, m in ipairs(spec.members) do
    local what = string.format("members[%d]", i)
    if type(m) == "string" then m = { m } end
    if type(m) ~= "table" then fail(at, "%s: expected { \"scgi://host:port\", lbfactor = n, ... }", what) end
    for k in pairs(m) do if k ~= 1 and not member_keys[k] then fail(at, "%s: unknown option %q", what, tostring(k)) end end
    local be = parse_backend(at, what, m[1])
    if seen[be.url] then fail(at, "%s: member %s is listed twice", what, be.url) end
    seen[be.url] = true
    be.lbfactor = m.lbfactor or 1
    if type(be.lbfactor) ~= "number" or be.lbfactor < 1 or be.lbfactor > 100 or be.lbfactor ~= math.floor(be.lbfactor) then fail(at, "%s: lbfactor must be a whole number from 1 to 100", what) end
    if m.route ~= nil then
      if type(m.route) ~= "string" or not m.route:match("^[%w%-_]+$") then fail(at, "%s: route must be a word", what) end
      be.route = m.route
    end
    be.status = ""
    if m.status ~= nil then
      if type(m.status) ~= "string" or not m.status:match("^[%+%-][DHSNdhsn]+$") then fail(at, "%s: status must be flags like \"+H\", \"+D\", \"+S\", \"+N\"", what) end
      if m.status:sub(1, 1) == "+" then be.status = m.status:sub(2):upper() end
    end
    be.retry = parse_time(at, what .. ".retry", m.retry or 60)
    if m.connect_timeout ~= nil then be.connect_timeout = parse_time(at, what .. ".connect_timeout", m.connect_timeout) end
    if m.timeout ~= nil then be.timeout = parse_time(at, what .. ".timeout", m.timeout) end
    -- SPEC 20: the most requests in flight on this member, summed over the workers
    be.max_conns = member_count(at, what, "max_conns", m.max_conns, 0, 1000000, " (no limit)")
    -- SPEC 20: a host name's addresses (handler/resolve.c)
    if m.resolve ~= nil then be.resolve = parse_bool(at, what .. ".resolve", m.resolve) end
    be.max_addresses = member_count(at, what, "max_addresses", m.max_addresses, 1, 64, "")
    b.members[i] = be
  end
  if spec.maxattempts ~= nil then
    if type(spec.maxattempts) ~= "number" or spec.maxattempts < 1 then fail(at, "maxattempts: expected a positive number") end
    b.maxattempts = spec.maxattempts
  end
  if spec.health ~= nil then
    local h = spec.health
    if type(h) ~= "table" then fail(at, "health: expected a table") end
    for k in pairs(h) do if not health_keys[k] then fail(at, "health: unknown option %q", tostring(k)) end end
    b.health = {
      uri = h.uri or "/",
      interval = parse_time(at, "health.interval", h.interval or 5),
      timeout = parse_time(at, "health.timeout", h.timeout or 1),
      fails = h.fails or 3, passes = h.passes or 2, expect = h.expect or 200,
    }
    if type(b.health.uri) ~= "string" or b.health.uri:sub(1, 1) ~= "/" then fail(at, "health.uri: expected a path starting with /") end
  end
  if spec.queue ~= nil then
    -- SPEC 20: requests wait here for a member under its max_conns
    local q = spec.queue
    if type(q) ~= "table" then fail(at, "queue: expected a table like { size = 100, timeout = \"5s\" }, got %s", type(q)) end
    for k in pairs(q) do if not queue_keys[k] then fail(at, "queue: unknown option %q (size, timeout)", tostring(k)) end end
    local size = q.size == nil and 100 or q.size
    if type(size) ~= "number" or size < 0 or size > 1000000 or size ~= math.floor(size) then fail(at, "queue.size: expected a whole number from 0 to 1000000, got %s", tostring(size)) end
    local timeout = parse_time(at, "queue.timeout", q.timeout == nil and 5 or q.timeout)
    if timeout < 1 then fail(at, "queue.timeout: must be at least 1ms") end
    local capped = false
    for _, be in ipairs(b.members) do if (be.max_conns or 0) > 0 then capped = true end end
    if not capped then fail(at, "queue: no member of balancer %q has max_conns, so nothing would ever wait (give members max_conns = N)", name) end
    b.queue_size, b.queue_timeout = size, timeout
  end
  -- SPEC 20: passive health and retries (lua/_passive.lua).
  if spec.passive ~= nil and spec.passive ~= false then b.passive = require("_passive").passive(at, spec.passive, parse_time) end
  if spec.retries ~= nil and spec.retries ~= false then b.retries = require("_passive").retries(at, spec.retries) end
  state.balancers[name] = b
  state.balancer_order[#state.balancer_order + 1] = name
end

function M.on(phase, fn)
  local at = caller(2)
  if not phases[phase] and phase ~= "init_worker" then
    fail(at, "mg.on: unknown phase %q (rewrite, access, balancer, header_filter, body_filter, log, init_worker)", tostring(phase))
  end
  if type(fn) ~= "function" then fail(at, "mg.on: argument #2 must be a function, got %s", type(fn)) end
  local list = state.hooks[phase]
  list[#list + 1] = fn
end

-- mg.timer(seconds, fn) declares, in init.lua, a periodic timer of every worker. mg.timer is
-- also the table of the run-time timers (mg.timer.at, .every, .running_count, .pending_count,
-- filled in by src/lua/lua_timer.c), so it is a table called through __call.
M.timer = setmetatable({}, { __call = function(_, seconds, fn)
  local at = caller(2) -- __call adds no frame of its own
  if state.loaded then
    fail(at, "mg.timer(seconds, fn) declares a periodic timer in init.lua only; at run time use mg.timer.every(seconds, fn) or mg.timer.at(delay, fn)")
  end
  local ms = parse_time(at, "mg.timer", seconds)
  if ms < 1 then fail(at, "mg.timer: interval must be positive") end
  if type(fn) ~= "function" then fail(at, "mg.timer: argument #2 must be a function, got %s", type(fn)) end
  state.timers[#state.timers + 1] = { ms = ms, fn = fn, at = at }
end })

-- SPEC 19: a static route's `fallback` names a route by the first argument of its mg.route
-- call: one of the same host if there is one, else one for every host. The chain of fallbacks
-- must end (a static route falling back to one that falls back to it would never answer).
local function resolve_fallbacks()
  local routes = state.routes
  for _, r in ipairs(routes) do
    if r.fallback then
      local pick, any -- the first declared of the same host, else the first for every host
      for i, t in ipairs(routes) do
        if t.spec == r.fallback then
          if r.host and t.host == r.host then pick = pick or i end
          if not t.host then any = any or i end
        end
      end
      pick = pick or any
      if not pick then fail(r.at, "fallback: no route %q is declared (the fallback names a route by its mg.route path)", r.fallback) end
      if routes[pick] == r then fail(r.at, "fallback: the route %q cannot fall back to itself", r.spec) end
      r.fallback_index = pick
    end
  end
  for _, r in ipairs(routes) do
    local seen, chain, t = { [r] = true }, { r.spec }, r
    while t.fallback_index do
      t = routes[t.fallback_index]
      chain[#chain + 1] = t.spec
      if seen[t] then fail(r.at, "fallback: the chain of fallbacks loops (%s)", table.concat(chain, " -> ")) end
      seen[t] = true
    end
  end
end

-- Checked after init.lua has run, when every name is known.
function M._finish(file)
  for _, r in ipairs(state.routes) do
    if r.kind == "balancer" and not state.balancers[r.balancer] then
      fail(r.at, "mg.route: unknown balancer %q (declare it with mg.balancer before or after the route)", r.balancer)
    end
  end
  resolve_fallbacks()
  -- SPEC 20: a manager without auth only where nobody but this machine reaches it.
  for _, r in ipairs(state.routes) do
    if r.manager and not r.manager.auth then
      for _, l in ipairs(state.listens) do
        local local_only = l.kind == "unix" or l.host == "localhost" or l.host == "::1" or l.host:match("^127%.")
        if not local_only then
          fail(r.at, "mg.route: a manager_handler without auth on listener %s (%s), which other machines can reach: give it auth = function(req) ... end, or listen on loopback only", l.text, l.at)
        end
      end
    end
  end
  if #state.listens == 0 then fail(file or "init.lua", "no listener: call mg.listen(\"127.0.0.1:8080\")") end
  state.loaded = true -- mg.timer(seconds, fn) is for init.lua only
  return state
end

return M
