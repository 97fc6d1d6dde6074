-- moongate.http: an HTTP/1.1 client over moongate's cosockets with lua-resty-http's interface
-- and results (docs/lua-api.md, "HTTP client: moongate.http"), so Lua written for
-- require "resty.http" runs on it.
--
-- The connection is a cosocket (mg.socket.tcp()), so every call that does I/O waits without
-- blocking the worker and returns nil, err on failure ("timeout", "closed", "connection
-- refused", ...); the keep-alive pool is the cosockets' pool. The response head is read line by
-- line in bounded pieces and parsed in C by llhttp (mg._http_head, src/lua/lua_http_head.c);
-- the body readers are closures holding their state, not coroutines, because a cosocket cannot
-- wait inside a coroutine the script made (lua-resty-http's coroutine.wrap readers would raise).
--
-- Where this module differs from lua-resty-http 0.17 it says so at the place, and
-- docs/lua-api.md lists every difference: an iterator body without a length is sent chunked
-- (lua-resty-http refuses it), header names and values with CR, LF or NUL are refused, interim
-- 1xx responses are skipped, trailers are read whenever they come, a close-delimited body ends
-- without an error, a response whose body was not read to its end is never pooled, and header
-- lookups also accept "_" for "-".
local mg = require "moongate"

local http_head = mg._http_head
local encode_args = mg.encode_args
local mg_log = mg.log

local byte, find, format, gsub, lower, match, sub, upper =
  string.byte, string.find, string.format, string.gsub, string.lower, string.match, string.sub,
  string.upper
local concat = table.concat
local ipairs, next, pairs, pcall, rawget, rawset, setmetatable, tonumber, tostring, type =
  ipairs, next, pairs, pcall, rawget, rawset, setmetatable, tonumber, tostring, type
local unpack = unpack

local _M = { _VERSION = "0.17.2" }
_M._USER_AGENT = "moongate.http/" .. _M._VERSION .. " (Lua; lua-resty-http compatible)"

local mt = { __index = _M }

-- A response head longer than this is refused ("response head too large"): lua-resty-http has
-- no bound, and a peer that streams header lines for ever would otherwise grow the worker.
local MAX_HEAD = 256 * 1024
-- Interim responses (1xx other than 101) skipped before the final one.
local MAX_INTERIM = 20
-- The pieces in which lines are read (a longer line takes several).
local LINE_PIECE = 4096

local EXPECTING_BODY = { POST = true, PUT = true, PATCH = true }

local DEBUG = false

-- ---- header tables -------------------------------------------------------------------------

-- A header table read and written case-insensitively, as lua-resty-http's http_headers: a
-- field keeps the case it was first set in, and setting it in another case replaces its value.
-- Reading also takes "_" for "-" (res.headers.content_type), as ngx.req.get_headers does;
-- a name really spelt with "_" is found first.
local function headers_mt(names)
  return {
    __index = function(t, k)
      if type(k) ~= "string" then return nil end
      local lk = lower(k)
      local key = names[lk]
      if key == nil and find(lk, "_", 1, true) then key = names[(gsub(lk, "_", "-"))] end
      if key ~= nil then return rawget(t, key) end
      return nil
    end,
    __newindex = function(t, k, v)
      local lk = lower(tostring(k))
      local key = names[lk]
      if key == nil then
        names[lk] = k
        rawset(t, k, v)
      else
        rawset(t, key, v)
      end
    end,
  }
end

local function headers_new()
  return setmetatable({}, headers_mt({}))
end

-- Makes a plain table of fields (as mg._http_head returns it) case-insensitive in place.
local function headers_wrap(t)
  local names = {}
  for k in pairs(t) do names[lower(k)] = k end
  return setmetatable(t, headers_mt(names))
end

_M.headers_new = headers_new -- what require "resty.http_headers".new() gives

-- ---- reading lines and heads ---------------------------------------------------------------

-- One line without its LF (and without one CR before it), read in pieces through the
-- connection's receiveuntil("\n") iterator, at most `limit` bytes. Returns the line, or
-- nil, err[, partial].
local function read_line(self, limit)
  local it = self.line_it
  local piece, err, partial = it(LINE_PIECE)
  if not piece then
    if err then return nil, err, partial end
    return ""
  end
  local parts, total = { piece }, #piece
  if total > limit then return nil, "too long" end
  while true do
    local p, e, part = it(LINE_PIECE)
    if not p then
      if e then return nil, e, concat(parts) .. (part or "") end
      break
    end
    total = total + #p
    if total > limit then return nil, "too long" end
    parts[#parts + 1] = p
  end
  local line = #parts == 1 and piece or concat(parts)
  if byte(line, -1) == 13 then line = sub(line, 1, -2) end
  return line
end

-- Reads the lines of one head up to its empty line and parses them. `first` is what precedes
-- the lines (nothing for a response head; a made-up status line for trailers). Returns what
-- mg._http_head returns, or nil, err. Empty lines before a status line are skipped, a few of
-- them (RFC 9112 2.2 lets a client ignore them; lua-resty-http reads one as the status line).
local function read_head(self, first)
  local lines, total, blank = { first }, #first, 0
  while true do
    local line, err = read_line(self, MAX_HEAD - total)
    if line == "" and #lines == 1 and first == "" and blank < 8 then
      blank = blank + 1
    elseif line == "" then
      break
    else
      if line then total = total + #line + 2 end
      if err == "too long" or total > MAX_HEAD then
        return nil, "response head too large (more than " .. MAX_HEAD .. " bytes)"
      end
      if not line then return nil, err end
      lines[#lines + 1] = line .. "\r\n"
    end
  end
  lines[#lines + 1] = "\r\n"
  return http_head(concat(lines))
end

-- ---- connecting ----------------------------------------------------------------------------

function _M.new()
  local sock, err = mg.socket.tcp()
  if not sock then return nil, err end
  return setmetatable({ sock = sock, keepalive = true, line_it = sock:receiveuntil("\n") }, mt)
end

function _M.debug(d)
  DEBUG = (d == true)
end

function _M.set_timeout(self, timeout)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  return sock:settimeout(timeout)
end

function _M.set_timeouts(self, connect_timeout, send_timeout, read_timeout)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  return sock:settimeouts(connect_timeout, send_timeout, read_timeout)
end

-- The deprecated form: connect(host, port[, opts]) or connect("unix:/path"[, opts]).
function _M.tcp_only_connect(self, host, port, ...)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  self.host = host
  self.port = type(port) == "number" and port or nil
  self.keepalive = true
  self.ssl = false
  self.body_pending = nil
  return sock:connect(host, port, ...)
end

-- The hosts of a no_proxy list that match `host`: the host itself or a domain it is in
-- (curl's rule; a leading "." of an entry is ignored). "*" matches every host.
local function no_proxy_matches(no_proxy, host)
  if no_proxy == "*" then return true end
  local set = {}
  for entry in (no_proxy .. ","):gmatch("([^,]*),") do
    entry = match(entry, "^%s*%.?(.-)%s*$")
    if entry ~= "" then set[entry] = true end
  end
  for _ = 1, 128 do
    if set[host] then return true end
    local rest = match(host, "^[^.]+%.(.+)$")
    if not rest or not find(rest, ".", 1, true) then return false end
    host = rest
  end
  return false
end

local function connect_opts(self, options)
  local sock = self.sock
  if not sock then return nil, "not initialized" end

  local scheme, host, port = options.scheme, options.host, options.port
  if scheme and not port then
    port = scheme == "https" and 443 or 80
  elseif port and not scheme then
    return nil, "'scheme' is required when providing a port"
  end
  if type(host) ~= "string" or host == "" then
    return nil, "moongate.http: connect needs a host (a name, an address or unix:/path)"
  end

  local ssl, ssl_verify, ssl_server_name = scheme == "https", nil, nil
  if ssl then
    ssl_verify = options.ssl_verify ~= false
    ssl_server_name = options.ssl_server_name
    if options.ssl_client_cert or options.ssl_client_priv_key then
      if type(sock.setclientcert) ~= "function" then
        return nil, "moongate.http: ssl_client_cert and ssl_client_priv_key (mTLS) are not supported by moongate"
      end
    end
  end

  -- The proxy, from the options or set_proxy_options, unless no_proxy names the host.
  local proxy, proxy_uri, proxy_auth, path_prefix = options.proxy_opts or self.proxy_opts, nil, nil, nil
  if proxy then
    if ssl then
      proxy_uri, proxy_auth = proxy.https_proxy, proxy.https_proxy_authorization
    else
      proxy_uri, proxy_auth = proxy.http_proxy, proxy.http_proxy_authorization
      path_prefix = "http://" .. host .. (port == 80 and "" or (":" .. port))
    end
    if not proxy_uri or (proxy.no_proxy and no_proxy_matches(proxy.no_proxy, host)) then
      proxy, proxy_uri, proxy_auth, path_prefix = nil, nil, nil, nil
    end
  end
  local proxy_host, proxy_port
  if proxy then
    local u, err = self:parse_uri(proxy_uri)
    if not u then return nil, "uri parse error: " .. err end
    if u[1] ~= "http" then
      return nil, "protocol " .. tostring(u[1]) .. " not supported for proxy connections"
    end
    proxy_host, proxy_port = u[2], u[3]
  end

  -- A pool name that keeps apart connections that must not be mixed (TLS or not, another
  -- server name or verification, another proxy), as lua-resty-http names them.
  local pool = options.pool
  if not pool then
    pool = (scheme or "") .. ":" .. host .. ":" .. tostring(port) .. ":" .. tostring(ssl)
      .. ":" .. (ssl_server_name or "") .. ":" .. tostring(ssl_verify)
      .. ":" .. (proxy_uri or "") .. ":" .. (ssl and proxy_auth or "") .. ":"
  end
  if options.pool_debug == true then mg_log("debug", "poolname: ", pool) end
  local tcp_opts = { pool = pool, pool_size = options.pool_size, backlog = options.backlog }

  local ok, err
  self.body_pending = nil
  self.keepalive = true
  if proxy then
    ok, err = sock:connect(proxy_host, proxy_port, tcp_opts)
    if not ok then
      return nil, "failed to connect to: " .. (proxy_host or "") .. ":" .. (proxy_port or "") .. ": " .. err
    end
    if ssl and sock:getreusedtimes() == 0 then
      -- A tunnel through the proxy (RFC 9110 9.3.6): CONNECT in authority form.
      local dest = host .. ":" .. port
      self.host, self.port, self.ssl, self.path_prefix, self.http_proxy_auth = host, port, false, nil, nil
      local res
      res, err = self:request({
        method = "CONNECT", path = dest,
        headers = { ["Host"] = dest, ["Proxy-Authorization"] = proxy_auth },
      })
      if not res then return nil, "failed to issue CONNECT to proxy: " .. err end
      if res.status < 200 or res.status > 299 then
        return nil, "failed to establish a tunnel through a proxy: " .. res.status
      end
      self.body_pending = nil
    end
  elseif not port then
    ok, err = sock:connect(host, tcp_opts)
    if not ok then return nil, err end
  else
    ok, err = sock:connect(host, port, tcp_opts)
    if not ok then return nil, err end
  end

  local session
  if ssl and sock:getreusedtimes() == 0 then
    if type(sock.sslhandshake) ~= "function" then
      sock:close()
      return nil, "moongate.http: https needs sock:sslhandshake, which this moongate's cosockets do not have"
    end
    if options.ssl_client_cert and options.ssl_client_priv_key then
      ok, err = sock:setclientcert(options.ssl_client_cert, options.ssl_client_priv_key)
      if not ok then return nil, "could not set client certificate: " .. tostring(err) end
    end
    session, err = sock:sslhandshake(options.ssl_reused_session, ssl_server_name, ssl_verify,
      options.ssl_send_status_req)
    if not session then
      self:close()
      return nil, err
    end
  end

  self.host, self.port, self.keepalive, self.ssl = host, port, true, ssl
  self.http_proxy_auth = not ssl and proxy_auth or nil
  self.path_prefix = path_prefix
  return true, nil, session
end

-- connect(options) (the recommended form), connect(host, port[, opts]),
-- connect("unix:/path"[, opts]).
function _M.connect(self, options, ...)
  if type(options) == "table" then return connect_opts(self, options) end
  return self:tcp_only_connect(options, ...)
end

-- Pools the connection when the last response allows it; otherwise closes it and returns
-- 2, "connection must be closed" (lua-resty-http's result). A response whose body was not read
-- to its end is closed too: its rest would be read as the next request's answer (lua-resty-http
-- pools it and leaves that to the caller).
function _M.set_keepalive(self, ...)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  if self.keepalive == true and not self.body_pending then
    return sock:setkeepalive(...)
  end
  local ok, err = sock:close()
  if ok then return 2, "connection must be closed" end
  return ok, err
end

function _M.get_reused_times(self)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  return sock:getreusedtimes()
end

function _M.close(self)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  return sock:close()
end

-- ---- parse_uri -----------------------------------------------------------------------------

-- { scheme, host, port, path, query } as lua-resty-http's regular expression
-- ^(?:(http[s]?):)?//((?:[^\[\]:/\?]+)|(?:\[.+\]))(?::(\d+))?([^\?]*)\??(.*) splits it: an
-- IPv6 host keeps its brackets, the port defaults by scheme, an empty path is "/", and with
-- query_in_path (the default) the query stays in the path.
function _M.parse_uri(_, uri, query_in_path)
  if query_in_path == nil then query_in_path = true end
  if type(uri) == "number" then uri = tostring(uri) end
  if type(uri) ~= "string" then return nil, "bad uri: " .. tostring(uri) end
  local scheme, rest = match(uri, "^(https?):(.*)$")
  if not scheme then rest = uri end
  if sub(rest, 1, 2) ~= "//" then return nil, "bad uri: " .. uri end
  local host, pos
  if sub(rest, 3, 3) == "[" then
    -- \[.+\] is greedy: the host ends at the last "]" (at least one byte after "[").
    local close, from = nil, 5
    while true do
      local j = find(rest, "]", from, true)
      if not j then break end
      close, from = j, j + 1
    end
    if close then host, pos = sub(rest, 3, close), close + 1 end
  end
  if not host then
    host = match(rest, "^[^%[%]:/%?]+", 3)
    if not host then return nil, "bad uri: " .. uri end
    pos = 3 + #host
  end
  local port = match(rest, "^:(%d+)", pos)
  if port then pos = pos + 1 + #port end
  local path = match(rest, "^[^%?]*", pos)
  pos = pos + #path
  if sub(rest, pos, pos) == "?" then pos = pos + 1 end
  local query = sub(rest, pos)
  -- like PCRE without the s option, "." stops at a newline
  local nl = find(query, "\n", 1, true)
  if nl then query = sub(query, 1, nl - 1) end

  if not scheme then
    -- A schemaless URI takes the scheme of the request being served, where there is one.
    local ngx = rawget(_G, "ngx")
    local ok, s = false, nil
    if type(ngx) == "table" then ok, s = pcall(function() return ngx.var.scheme end) end
    if ok and (s == "http" or s == "https") then
      scheme = s
    else
      return nil, "schemaless URIs require a request context: " .. uri
    end
  end
  port = port and tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  if query_in_path and query ~= "" then
    path = path .. "?" .. query
    query = nil
  end
  return { scheme, host, port, path, query }, nil
end

-- ---- sending -------------------------------------------------------------------------------

local function transfer_encoding_is_chunked(headers)
  local te = headers["Transfer-Encoding"]
  if not te then return false end
  if type(te) ~= "string" then te = concat(te, ",") end
  return find(lower(te), "chunked", 1, true) ~= nil
end
_M.transfer_encoding_is_chunked = transfer_encoding_is_chunked

-- Nothing that would end a line may go into the head: a CR or LF in a name, a value, the
-- method or the target would let the caller's data start a header or a request of its own.
local function bad_in_head(s)
  return find(s, "[\r\n%z]") ~= nil
end

-- The request head, or nil, err.
local function format_request(self, params, headers)
  local query = params.query or ""
  if type(query) == "table" then query = encode_args(query) end
  query = tostring(query)
  if query ~= "" and sub(query, 1, 1) ~= "?" then query = "?" .. query end
  local method = upper(tostring(params.method))
  local target = (self.path_prefix or "") .. tostring(params.path) .. query
  if bad_in_head(method) or find(method, " ", 1, true) then
    return nil, "moongate.http: bad method " .. format("%q", method)
  end
  if bad_in_head(target) or find(target, "[ \t]") then
    return nil, "moongate.http: bad request target " .. format("%q", target) .. " (spaces and line breaks must be escaped)"
  end
  local version = params.version == 1.0 and "1.0" or "1.1"
  local out, n = { method, " ", target, " HTTP/", version, "\r\n" }, 6
  for key, values in pairs(headers) do
    key = tostring(key)
    if key == "" or bad_in_head(key) or find(key, "[ \t:]") then
      return nil, "moongate.http: bad header name " .. format("%q", key)
    end
    if type(values) ~= "table" then values = { values } end
    for _, v in pairs(values) do
      v = tostring(v)
      if bad_in_head(v) then
        return nil, "moongate.http: bad value for header " .. key .. ": it holds a CR, LF or NUL byte"
      end
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = key, ": ", v, "\r\n"
      n = n + 4
    end
  end
  out[n + 1] = "\r\n"
  return concat(out)
end

-- Sends the body: a string, a list of strings, or an iterator returning pieces until nil
-- (nil, err stops with that error). `chunk_it` frames each piece of an iterator as a chunk.
local function send_body(sock, body, chunk_it)
  if type(body) == "function" then
    while true do
      local piece, err, partial = body()
      if piece == nil then
        if err ~= nil then return nil, err, partial end
        break
      end
      piece = tostring(piece)
      local ok, serr
      if chunk_it then
        if #piece > 0 then ok, serr = sock:send({ format("%x\r\n", #piece), piece, "\r\n" }) else ok = 1 end
      else
        ok, serr = sock:send(piece)
      end
      if not ok then return nil, serr end
    end
    if chunk_it then
      local ok, err = sock:send("0\r\n\r\n")
      if not ok then return nil, err end
    end
  elseif body ~= nil then
    if type(body) ~= "table" then body = tostring(body) end
    local ok, err = sock:send(body)
    if not ok then return nil, err end
  end
  return true
end

local function expects_continue(headers)
  local e = headers["Expect"]
  return type(e) == "string" and lower(e) == "100-continue"
end

function _M.send_request(self, params)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  if params.method == nil then params.method = "GET" end
  if params.path == nil then params.path = "/" end
  if params.version == nil then params.version = 1.1 end
  local body = params.body
  local headers = headers_new()
  for k, v in pairs(params.headers or {}) do headers[k] = v end
  if not headers["Proxy-Authorization"] then headers["Proxy-Authorization"] = self.http_proxy_auth end

  local method = upper(tostring(params.method))
  local chunk_it = false
  if transfer_encoding_is_chunked(headers) then
    -- Both would frame the body twice (RFC 9112 6.3): the length goes.
    headers["Content-Length"] = nil
  elseif not headers["Content-Length"] then
    local bt = type(body)
    if bt == "function" then
      if params.version == 1.0 then
        return nil, "Request body is a function but a length or chunked encoding is not specified"
      end
      -- lua-resty-http refuses this; here the pieces are sent as chunks.
      headers["Transfer-Encoding"] = "chunked"
      chunk_it = true
    elseif bt == "table" then
      local length = 0
      for _, v in ipairs(body) do length = length + #tostring(v) end
      headers["Content-Length"] = length
    elseif body == nil and EXPECTING_BODY[method] then
      return nil, "Request body is nil but " .. method
        .. " method expects a body. Use an empty string \"\" if you want to send an empty body."
    elseif body ~= nil then
      headers["Content-Length"] = #tostring(body)
    end
  end

  if not headers["Host"] then
    local host = tostring(self.host or "")
    if sub(host, 1, 5) == "unix:" then
      return nil, "Unable to generate a useful Host header for a unix domain socket. Please provide one."
    end
    if self.port and self.port ~= (self.ssl and 443 or 80) then
      headers["Host"] = host .. ":" .. self.port
    else
      headers["Host"] = host
    end
  end
  if not headers["User-Agent"] then headers["User-Agent"] = _M._USER_AGENT end
  if params.version == 1.0 and not headers["Connection"] then headers["Connection"] = "Keep-Alive" end

  local head, err = format_request(self, params, headers)
  if not head then return nil, err end
  if DEBUG then mg_log("debug", "\n", head) end
  params.headers = headers
  params.chunk_it = chunk_it
  local bytes
  bytes, err = sock:send(head)
  if not bytes then return nil, err end
  -- With Expect: 100-continue the body waits for the server's 100 (read_response).
  if not expects_continue(headers) then
    local ok, serr, partial = send_body(sock, body, chunk_it)
    if not ok then return nil, serr, partial end
  end
  return true
end

-- ---- response bodies -----------------------------------------------------------------------

-- Marks the response's body as read to its end (the connection may be pooled) or broken.
local function body_done(self, ok)
  self.body_pending = nil
  if not ok then self.keepalive = false end
end

-- A body of `length` bytes. reader() returns the rest at once, reader(size) pieces of at most
-- size bytes; then nil.
local function length_reader(self, length)
  local left = length
  if left == 0 then body_done(self, true) end
  return function(size)
    if left <= 0 then return nil end
    size = tonumber(size)
    local n = (size and size > 0 and size < left) and size or left
    local data, err, partial = self.sock:receive(n)
    if not data then
      body_done(self, false)
      left = 0
      return nil, err, partial
    end
    left = left - n
    if left == 0 then body_done(self, true) end
    return data
  end
end

-- A body that ends when the server closes. reader() returns all of it, reader(size) pieces;
-- then nil. (lua-resty-http's streaming reader returns the last piece with the error "closed";
-- here the close is the body's normal end.)
local function close_reader(self)
  self.keepalive = false
  local ended = false
  return function(size)
    if ended then return nil end
    size = tonumber(size)
    local sock = self.sock
    if not size or size <= 0 then
      ended = true
      local data, err, partial = sock:receive("*a")
      body_done(self, data ~= nil)
      if not data then return nil, err, partial end
      return data
    end
    local data, err, partial = sock:receive(size)
    if data then return data end
    ended = true
    if err == "closed" then
      body_done(self, true)
      if partial and partial ~= "" then return partial end
      return nil
    end
    body_done(self, false)
    return nil, err, partial
  end
end

-- A chunked body. reader() returns each chunk as it comes, reader(size) pieces of at most size
-- bytes of it; then nil. The trailer fields after the last chunk are read (so the connection
-- is clean for the next request) and kept for res:read_trailers().
local function chunked_reader(self, res)
  local left = 0 -- bytes of the current chunk not yet returned
  local ended = false
  local function fail(err, partial)
    ended = true
    body_done(self, false)
    return nil, err, partial
  end
  return function(size)
    if ended then return nil end
    size = tonumber(size)
    if size and size <= 0 then size = nil end
    local sock = self.sock
    if left == 0 then
      local line, err = read_line(self, LINE_PIECE)
      if not line then
        if err == "too long" then return fail("unable to read chunksize") end
        return fail(err)
      end
      -- chunk-size [ ; chunk-ext ] (RFC 9112 7.1); at most 15 hex digits, so the size is exact
      local hex, ext = match(line, "^(%x+)[ \t]*(.*)$")
      local length = hex and #hex <= 15 and (ext == "" or byte(ext) == 59) and tonumber(hex, 16)
      if not length then return fail("unable to read chunksize") end
      if length == 0 then
        ended = true
        local status, terr, _, trailers = read_head(self, "HTTP/1.1 200 OK\r\n")
        if not status then
          body_done(self, false)
          return nil, "bad trailer after the last chunk: " .. tostring(terr)
        end
        if next(trailers) ~= nil then res.trailers = headers_wrap(trailers) end
        body_done(self, true)
        return nil
      end
      left = length
    end
    local n = (size and size < left) and size or left
    local data, err, partial = sock:receive(n)
    if not data then return fail(err, partial) end
    left = left - n
    if left == 0 then
      local crlf
      crlf, err = read_line(self, 2)
      if crlf ~= "" then
        if not crlf then return fail(err) end
        return fail("bad chunk: no CRLF after its data")
      end
    end
    return data
  end
end

local function no_body_reader()
  return nil
end

local function read_body(res)
  local reader = res.body_reader
  if not reader then return nil, "no body to be read" end
  local chunks, n = {}, 0
  -- A bounded loop would bound the body; each turn returns data or ends, and data comes from
  -- the peer within the read timeout.
  while true do
    local chunk, err = reader()
    if err then return nil, err, concat(chunks) end
    if not chunk then break end
    n = n + 1
    chunks[n] = chunk
  end
  return concat(chunks)
end

-- Merges the trailers under res.headers: a trailer shows where no header of that name is.
local function read_trailers(res)
  local trailers = res.trailers
  if not trailers then return nil, "no trailers" end
  for k, v in pairs(trailers) do
    if res.headers[k] == nil then res.headers[k] = v end
  end
end

-- ---- reading the response ------------------------------------------------------------------

local function should_receive_body(method, status)
  if method == "HEAD" then return false end
  if status == 204 or status == 304 then return false end
  if status >= 100 and status < 200 then return false end
  return true
end

function _M.read_response(self, params)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  if self.body_pending then
    return nil, "moongate.http: the body of the previous response on this connection was not read to its end"
  end
  local headers = params.headers or {}
  local continue_pending = expects_continue(headers)
  local status, reason, version, res_headers
  for _ = 1, MAX_INTERIM + 1 do
    local err
    status, reason, version, res_headers = read_head(self, "")
    if not status then
      err = reason
      self.keepalive = false
      return nil, err
    end
    if status == 100 and continue_pending then
      continue_pending = false
      local ok, serr = send_body(sock, params.body, params.chunk_it)
      if not ok then
        self.keepalive = false
        return nil, serr
      end
    elseif status < 100 or status >= 200 or status == 101 then
      break
    end
    -- An interim response (100 unasked, 102, 103, ...): the final one follows. lua-resty-http
    -- returns it as the response.
  end
  if status >= 100 and status < 200 and status ~= 101 then
    self.keepalive = false
    return nil, "more than " .. MAX_INTERIM .. " interim (1xx) responses"
  end
  if continue_pending then
    -- The server answered without asking for the body, which was never sent: the connection
    -- cannot carry another request (the server may still read it as this one's body).
    self.keepalive = false
  end
  headers_wrap(res_headers)

  local connection = res_headers["Connection"]
  if type(connection) ~= "string" then
    if version == 1.0 then self.keepalive = false end
  else
    connection = lower(connection)
    if (version == 1.1 and find(connection, "close", 1, true))
      or (version == 1.0 and not find(connection, "keep-alive", 1, true)) then
      self.keepalive = false
    end
  end

  local res = {
    status = status,
    reason = reason,
    headers = res_headers,
    has_body = false,
    body_reader = no_body_reader,
    read_body = read_body,
    read_trailers = read_trailers,
  }
  local method = upper(tostring(params.method or "GET"))
  if should_receive_body(method, status) and not (method == "CONNECT" and status >= 200 and status < 300) then
    res.has_body = true
    self.body_pending = true
    if version == 1.1 and transfer_encoding_is_chunked(res_headers) then
      res.body_reader = chunked_reader(self, res)
    else
      local length = tonumber(res_headers["Content-Length"])
      if length and length >= 0 then
        res.body_reader = length_reader(self, length)
      else
        res.body_reader = close_reader(self)
      end
    end
  end
  return res
end

-- ---- the request calls ---------------------------------------------------------------------

-- A copy, nested tables included, so a call never changes the caller's params.
local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[copy(k)] = copy(x) end
  return t
end

function _M.request(self, params)
  params = copy(params or {})
  local ok, err = self:send_request(params)
  if not ok then return nil, err end
  return self:read_response(params)
end

function _M.request_pipeline(self, requests)
  requests = copy(requests)
  for _, params in ipairs(requests) do
    if params.headers and expects_continue(headers_wrap(params.headers)) then
      return nil, "Cannot pipeline request specifying Expect: 100-continue"
    end
    local ok, err = self:send_request(params)
    if not ok then return nil, err end
  end
  local responses = {}
  for i, params in ipairs(requests) do
    -- Each response is read when one of its fields is first used, in order.
    responses[i] = setmetatable({ params = params, response_read = false }, {
      __index = function(t, k)
        if rawget(t, "response_read") == false then
          rawset(t, "response_read", true)
          local res, err = self:read_response(rawget(t, "params"))
          if not res then
            mg_log("error", "moongate.http: ", err)
          else
            for rk, rv in pairs(res) do rawset(t, rk, rv) end
          end
        end
        return rawget(t, k)
      end,
    })
  end
  return responses
end

function _M.request_uri(self, uri, params)
  params = copy(params or {})
  if self.proxy_opts then params.proxy_opts = copy(self.proxy_opts) end
  local parsed, err = self:parse_uri(uri, false)
  if not parsed then return nil, err end
  local path, query
  params.scheme, params.host, params.port, path, query = unpack(parsed)
  params.path = params.path or path
  params.query = params.query or query
  params.ssl_server_name = params.ssl_server_name or params.host

  local proxy_auth = params.headers and headers_wrap(copy(params.headers))["Proxy-Authorization"]
  if proxy_auth and params.proxy_opts then
    params.proxy_opts.https_proxy_authorization = proxy_auth
    params.proxy_opts.http_proxy_authorization = proxy_auth
  end

  local ok
  ok, err = self:connect(params)
  if not ok then return nil, err end
  local res
  res, err = self:request(params)
  if not res then
    self:close()
    return nil, err
  end
  local body
  body, err = res:read_body()
  if not body then
    self:close()
    return nil, err
  end
  res.body = body
  if params.keepalive == false then
    local cok, cerr = self:close()
    if not cok then mg_log("error", "moongate.http: ", cerr) end
  else
    local kok, kerr = self:set_keepalive(params.keepalive_timeout, params.keepalive_pool)
    if not kok then mg_log("error", "moongate.http: ", kerr) end
  end
  return res, nil
end

-- ---- proxies -------------------------------------------------------------------------------

function _M.set_proxy_options(self, opts)
  self.proxy_opts = copy(opts)
end

-- The proxy URI for scheme and host, or nil when none applies.
function _M.get_proxy_uri(self, scheme, host)
  local p = self.proxy_opts
  if not p then return nil end
  if p.no_proxy and no_proxy_matches(p.no_proxy, host) then return nil end
  if scheme == "http" and p.http_proxy then return p.http_proxy end
  if scheme == "https" and p.https_proxy then return p.https_proxy end
  return nil
end

-- Deprecated in lua-resty-http; kept as it keeps them.
function _M.ssl_handshake(self, ...)
  local sock = self.sock
  if not sock then return nil, "not initialized" end
  if type(sock.sslhandshake) ~= "function" then
    return nil, "moongate.http: https needs sock:sslhandshake, which this moongate's cosockets do not have"
  end
  self.ssl = true
  return sock:sslhandshake(...)
end

function _M.connect_proxy(self, proxy_uri, scheme, host, port, proxy_authorization)
  local u, err = self:parse_uri(proxy_uri, false)
  if not u then return nil, err end
  if u[1] ~= "http" then return nil, "protocol " .. tostring(u[1]) .. " not supported for proxy connections" end
  local c
  c, err = self:tcp_only_connect(u[2], u[3])
  if not c then return nil, err end
  if scheme == "https" then
    local dest = host .. ":" .. port
    local res
    res, err = self:request({ method = "CONNECT", path = dest,
      headers = { ["Host"] = dest, ["Proxy-Authorization"] = proxy_authorization } })
    if not res then return nil, err end
    if res.status < 200 or res.status > 299 then
      return nil, "failed to establish a tunnel through a proxy: " .. res.status
    end
    self.body_pending = nil
  end
  return c, nil
end

-- What reads or writes the client's own request and response (ngx.req.socket, ngx.header,
-- ngx.print) has no counterpart here yet: refused rather than half done.
local function unsupported(name)
  return function()
    error("moongate.http: " .. name .. " is not supported by moongate", 2)
  end
end
_M.get_client_body_reader = unsupported("get_client_body_reader")
_M.proxy_request = unsupported("proxy_request")
_M.proxy_response = unsupported("proxy_response")

return _M
