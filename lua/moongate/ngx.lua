-- moongate.ngx: puts the `ngx` global together (docs/openresty.md).
--
-- One implementation behind both names: what touches the request is a C primitive of
-- src/lua/lua_ngx.c (P), which finds the request the running code serves; everything else is
-- the mg.* function of the same meaning. A name lua-nginx-module has and moongate does not
-- raises "ngx.NAME is not supported by moongate", so nothing ported is silently a no-op.
--
-- The builder runs once per configuration state (src/lua/lua_api.c) and returns the table.

return function(mg, P)
  local error, type, pairs, ipairs, rawget, rawset, select, tostring, setmetatable, pcall =
      error, type, pairs, ipairs, rawget, rawset, select, tostring, setmetatable, pcall
  local concat = table.concat

  local function unsupported(name)
    return function() error("ngx." .. name .. " is not supported by moongate", 2) end
  end

  -- A table whose missing names raise, naming the full API entry.
  local function strict(prefix, t)
    return setmetatable(t, { __index = function(_, k)
      error("ngx." .. prefix .. tostring(k) .. " is not supported by moongate", 2)
    end })
  end

  -- A table filled from a mg.* table another unit provides (mg.timer, mg.worker, mg.re,
  -- mg.socket), looked up on first use and kept.
  local function from_mg(prefix, getter, names)
    local t = {}
    return setmetatable(t, { __index = function(_, k)
      local src = getter()
      local v = src and src[names and names[k] or k]
      if v == nil then error("ngx." .. prefix .. tostring(k) .. " is not supported by moongate", 2) end
      rawset(t, k, v)
      return v
    end })
  end

  local ngx = {}

  -- ---- constants (lua-nginx-module's values) ---------------------------------------------------
  ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5
  local methods = {
    GET = 2, HEAD = 4, POST = 8, PUT = 16, DELETE = 32, MKCOL = 64, COPY = 128, MOVE = 256,
    OPTIONS = 512, PROPFIND = 1024, PROPPATCH = 2048, LOCK = 4096, UNLOCK = 8192, PATCH = 16384,
    TRACE = 32768,
  }
  local method_names = {}
  for name, n in pairs(methods) do
    ngx["HTTP_" .. name] = n
    method_names[n] = name
  end
  local statuses = {
    HTTP_CONTINUE = 100, HTTP_SWITCHING_PROTOCOLS = 101, HTTP_OK = 200, HTTP_CREATED = 201,
    HTTP_ACCEPTED = 202, HTTP_NO_CONTENT = 204, HTTP_PARTIAL_CONTENT = 206,
    HTTP_SPECIAL_RESPONSE = 300, HTTP_MOVED_PERMANENTLY = 301, HTTP_MOVED_TEMPORARILY = 302,
    HTTP_SEE_OTHER = 303, HTTP_NOT_MODIFIED = 304, HTTP_TEMPORARY_REDIRECT = 307,
    HTTP_PERMANENT_REDIRECT = 308, HTTP_BAD_REQUEST = 400, HTTP_UNAUTHORIZED = 401,
    HTTP_PAYMENT_REQUIRED = 402, HTTP_FORBIDDEN = 403, HTTP_NOT_FOUND = 404,
    HTTP_NOT_ALLOWED = 405, HTTP_NOT_ACCEPTABLE = 406, HTTP_REQUEST_TIMEOUT = 408,
    HTTP_CONFLICT = 409, HTTP_GONE = 410, HTTP_UPGRADE_REQUIRED = 426,
    HTTP_TOO_MANY_REQUESTS = 429, HTTP_CLOSE = 444, HTTP_ILLEGAL = 451,
    HTTP_INTERNAL_SERVER_ERROR = 500, HTTP_NOT_IMPLEMENTED = 501, HTTP_METHOD_NOT_IMPLEMENTED = 501,
    HTTP_BAD_GATEWAY = 502,
    HTTP_SERVICE_UNAVAILABLE = 503, HTTP_GATEWAY_TIMEOUT = 504, HTTP_VERSION_NOT_SUPPORTED = 505,
    HTTP_INSUFFICIENT_STORAGE = 507,
  }
  for k, v in pairs(statuses) do ngx[k] = v end
  local levels = { "STDERR", "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG" }
  for i, name in ipairs(levels) do ngx[name] = i - 1 end
  ngx.null = P.null

  -- ---- output and flow ---------------------------------------------------------------------------
  ngx.say, ngx.print, ngx.flush, ngx.eof = P.say, P.print, P.flush, P.eof
  ngx.send_headers, ngx.exit, ngx.redirect = P.send_headers, P.exit, P.redirect
  local exec = P.exec
  ngx.exec = function(uri, args)
    if type(args) == "table" then args = mg.encode_args(args) end
    return exec(uri, args)
  end
  ngx.get_phase = P.get_phase

  -- ---- log: C (src/lua/lua_ngx.c), with OpenResty's argument checks and messages -------------------
  ngx.log = P.log
  local ngx_print_log = P.print_log

  -- ---- time and string helpers: the mg.* functions -------------------------------------------------
  for _, k in ipairs({ "now", "time", "update_time", "today", "localtime", "utctime", "http_time",
                      "cookie_time", "parse_http_time", "md5", "md5_bin", "sha1_bin", "hmac_sha1",
                      "crc32_short", "crc32_long", "encode_base64", "decode_base64", "decode_base64mime",
                      "escape_uri", "unescape_uri", "encode_args", "decode_args", "quote_sql_str", "sleep" }) do
    ngx[k] = mg[k]
  end

  -- ---- ngx.var, ngx.header ------------------------------------------------------------------------
  ngx.var = setmetatable({}, { __index = P.var_get, __newindex = P.var_set })
  ngx.header = setmetatable({}, { __index = P.header_get, __newindex = P.header_set })
  ngx.arg = setmetatable({}, { __index = P.arg_get, __newindex = P.arg_set })
  ngx.resp = strict("resp.", { get_headers = P.resp_get_headers })

  -- ---- ngx.req --------------------------------------------------------------------------------------
  local req_of = P.req
  local function the_req()
    local r = req_of()
    if not r then error("no request found", 3) end
    return r
  end
  local decode_args, encode_args = mg.decode_args, mg.encode_args
  local get_query, set_query = P.get_query, P.set_query
  local R = {
    get_headers = P.get_headers, set_header = P.set_header, clear_header = P.clear_header,
    get_method = P.get_method, http_version = P.http_version, raw_header = P.raw_header,
    start_time = P.start_time, is_internal = P.is_internal,
  }
  R.set_method = function(m)
    local name = method_names[m]
    if not name then error("bad argument #1 to 'set_method' (unsupported HTTP method: " .. tostring(m) .. ")", 2) end
    P.set_method_name(name)
  end
  R.get_uri_args = function(max)
    local q = get_query()
    if not q then return {} end
    return decode_args(q, max or 100)
  end
  R.set_uri_args = function(args)
    if type(args) == "table" then args = encode_args(args)
    elseif type(args) ~= "string" then
      error("bad argument #1 to 'set_uri_args' (string or table expected, got " .. type(args) .. ")", 2)
    end
    set_query(args)
  end
  R.set_uri = function(uri, jump)
    if jump then return ngx.exec(uri) end
    P.set_uri(uri)
  end
  R.read_body = function()
    local r = the_req()
    local ok, err = r:read_body()
    if not ok and err then error("ngx.req.read_body: " .. err, 2) end
  end
  R.get_body_data = function()
    local b = the_req():body()
    return b
  end
  R.get_post_args = function(max)
    local r = the_req()
    local b, err = r:body()
    if b == nil and err and err:find("not read", 1, true) then
      return nil, "request body not read yet"
    end
    if b == nil then return {} end
    return decode_args(b, max or 100)
  end
  -- The body moongate spools to a file has no name (the file is unlinked at once): nil, as
  -- OpenResty's when the body is in memory.
  R.get_body_file = function() the_req() return nil end
  R.set_body_data = function(s) the_req():set_body(s) end
  R.discard_body = function()
    local r = the_req()
    local ok, err = r:read_body()
    if not ok and err then return end
    r:set_body("")
  end
  R.socket = unsupported("req.socket")
  R.set_body_file = unsupported("req.set_body_file")
  R.init_body = unsupported("req.init_body")
  R.append_body = unsupported("req.append_body")
  R.finish_body = unsupported("req.finish_body")
  ngx.req = strict("req.", R)

  -- ---- subrequests ---------------------------------------------------------------------------------
  local capture_options = { method = true, args = true, body = true }
  local function capture(uri, opts)
    local r = the_req()
    local o = {}
    if opts then
      for k in pairs(opts) do
        if not capture_options[k] then
          error("ngx.location.capture: option " .. tostring(k) .. " is not supported by moongate", 3)
        end
      end
      if opts.method then
        o.method = method_names[opts.method]
        if not o.method then error("ngx.location.capture: unsupported HTTP method: " .. tostring(opts.method), 3) end
      end
      if opts.body then o.body = opts.body end
      local args = opts.args
      if type(args) == "table" then args = encode_args(args) end
      if args and args ~= "" then
        if uri:find("?", 1, true) then uri = uri .. "&" .. args else uri = uri .. "?" .. args end
      end
    end
    local path, query = uri:match("^([^?]*)%??(.*)$")
    if query ~= "" then o.query = query end
    local res, err = r:subrequest(path, o)
    if not res then
      -- OpenResty gives a 500 result for a subrequest that failed; the cause goes to the log.
      mg.log("error", "ngx.location.capture(" .. uri .. "): " .. tostring(err))
      return { status = 500, header = {}, body = "", truncated = err == "body too large" }
    end
    return { status = res.status, header = res.header, body = res.body, truncated = false }
  end
  ngx.location = strict("location.", {
    capture = capture,
    capture_multi = function(list)
      local spawn, wait = mg.spawn, mg.wait
      local threads = {}
      for i, item in ipairs(list) do threads[i] = spawn(capture, item[1], item[2]) end
      local out = {}
      for i, t in ipairs(threads) do
        local ok, res = wait(t)
        if not ok then error(res, 2) end
        out[i] = res
      end
      return unpack(out, 1, #list)
    end,
  })

  -- ---- threads, timers, workers, sockets, regex, shared dicts ----------------------------------------
  ngx.thread = strict("thread.", { spawn = mg.spawn, wait = mg.wait, kill = mg.kill })
  ngx.timer = from_mg("timer.", function() return mg.timer end)
  ngx.worker = from_mg("worker.", function() return mg.worker end)
  ngx.re = from_mg("re.", function() return mg.re end)
  ngx.socket = from_mg("socket.", function() return mg.socket end, { stream = "tcp" })
  -- ngx.shared.NAME: the dictionary declared with mg.shared(NAME, size), found once and kept;
  -- nil for a name init.lua did not declare, as OpenResty's for one nginx.conf did not.
  ngx.shared = setmetatable({}, { __index = function(t, name)
    local ok, d = pcall(mg.shared, name)
    if not ok then return nil end
    rawset(t, name, d)
    return d
  end })

  -- ---- ngx.config -----------------------------------------------------------------------------------
  local prefix = package.path:match("^(.-)/%?%.lua;") or "."
  ngx.config = strict("config.", {
    subsystem = "http",
    -- The lua-nginx-module this API follows (Debian's, 0.10.23): libraries test it.
    ngx_lua_version = 10023,
    nginx_version = 1022001,
    debug = false,
    is_console = false,
    prefix = function() return prefix .. "/" end,
    nginx_configure = function() return "" end,
  })

  -- ---- the per-request fields: ngx.status, ngx.ctx, ngx.headers_sent, ngx.is_subrequest -------------
  local get_status, set_status, headers_sent, is_subrequest = P.get_status, P.set_status, P.headers_sent, P.is_subrequest
  local dynamic = {
    status = get_status,
    headers_sent = headers_sent,
    is_subrequest = is_subrequest,
    ctx = P.ctx,
  }
  setmetatable(ngx, {
    __index = function(_, k)
      local f = dynamic[k]
      if f then return f() end
      error("ngx." .. tostring(k) .. " is not supported by moongate", 2)
    end,
    __newindex = function(t, k, v)
      if k == "status" then return set_status(v) end
      if k == "ctx" then error("assigning ngx.ctx is not supported by moongate: set fields of ngx.ctx instead", 2) end
      if dynamic[k] then error("ngx." .. k .. " cannot be assigned", 2) end
      rawset(t, k, v)
    end,
  })

  -- ---- require "resty.X" ------------------------------------------------------------------------
  -- Debian installs the lua-resty libraries as nginx.X (lua-nginx-redis: nginx/redis.lua); code
  -- written for OpenResty requires resty.X. After the usual searchers, resty.X finds nginx.X
  -- (loaded once, under both names); resty.http is moongate.http when no lua-resty-http is
  -- installed. resty.core's API (the FFI versions of ngx.*) is built into this ngx: requiring it
  -- gives a table saying so rather than loading lua-resty-core, whose FFI calls need nginx.
  package.preload["resty.core"] = function()
    return { version = ngx.config.ngx_lua_version, built_in = "moongate" }
  end
  -- lua-resty-core's modules that drive nginx itself through the FFI: requiring one says so
  -- instead of failing on a missing nginx symbol.
  for _, m in ipairs({ "ngx.semaphore", "ngx.balancer", "ngx.ssl", "ngx.ocsp" }) do
    package.preload[m] = function() error(m .. " is not supported by moongate", 2) end
  end
  -- ndk.set_var.NAME, the nginx development kit's directives: there are no nginx modules.
  rawset(_G, "ndk", { set_var = setmetatable({}, { __index = function(_, k)
    error("ndk.set_var." .. tostring(k) .. " is not supported by moongate", 2)
  end }) })
  local searchpath = package.searchpath
  package.loaders[#package.loaders + 1] = function(name)
    local rest = name:match("^resty%.(.+)$")
    if not rest then return nil end
    local target = "nginx." .. rest
    if rest == "http" then target = "moongate.http" end
    if package.preload[target] or searchpath(target, package.path) or searchpath(target, package.cpath) then
      return function()
        local m = require(target)
        package.loaded[name] = m
        return m
      end
    end
    return "\n\tno module '" .. target .. "' (resty." .. rest .. " as Debian installs it)"
  end

  return ngx, ngx_print_log
end
