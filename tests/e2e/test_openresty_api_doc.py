"""docs/openresty.md's status column, measured.

The tables of docs/openresty.md are parsed; for every entry of the "Nginx API for Lua" table a
probe runs in a moongate content handler (a body_filter hook for ngx.arg) and checks the status:
  supported, difference: the name exists (not nil, nothing raised), and a few calls of it work;
  refused: reading or calling it raises exactly "NAME is not supported by moongate";
  missing: it is nil (neither there nor refused: listed so that adding it updates the page).
For the "Directives" table, every mg.set{...} / mg.on(...) / mg.shared(...) the moongate
column names must load with `moongate -t`. The constants are also compared with OpenResty's."""
import os
import re
import subprocess

import pytest

from conftest import MOONGATE, ROOT, Gateway, free_port, request
from openresty import start_openresty, stop_openresty

DOC = os.path.join(ROOT, "docs", "openresty.md")
STATUSES = ("supported", "difference", "refused", "missing")


def table(section):
    """The rows of the table under '## section': [(entry, status, moongate, difference)]."""
    text = open(DOC).read()
    start = text.index("\n## %s\n" % section)
    end = text.find("\n## ", start + 1)
    rows = []
    for line in text[start:end if end > 0 else None].splitlines():
        m = re.match(r"^\| `([^`]+)` \| (\w+) \|(.*)\|(.*)\|$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3).strip(), m.group(4).strip()))
    return rows


API = table("Nginx API for Lua")
DIRECTIVES = table("Directives")

# Placeholders of the README's entries, replaced by a real name for the probe.
CONCRETE = {"VARIABLE": "uri", "DICT": "d", "DIRECTIVE": "set_quote_sql_str"}

CONSTANTS = {
    "Core constants": {"OK": 0, "ERROR": -1, "AGAIN": -2, "DONE": -4, "DECLINED": -5},
    "HTTP method constants": {
        "HTTP_GET": 2, "HTTP_HEAD": 4, "HTTP_POST": 8, "HTTP_PUT": 16, "HTTP_DELETE": 32, "HTTP_MKCOL": 64,
        "HTTP_COPY": 128, "HTTP_MOVE": 256, "HTTP_OPTIONS": 512, "HTTP_PROPFIND": 1024, "HTTP_PROPPATCH": 2048,
        "HTTP_LOCK": 4096, "HTTP_UNLOCK": 8192, "HTTP_PATCH": 16384, "HTTP_TRACE": 32768},
    "HTTP status constants": {
        "HTTP_CONTINUE": 100, "HTTP_SWITCHING_PROTOCOLS": 101, "HTTP_OK": 200, "HTTP_CREATED": 201,
        "HTTP_ACCEPTED": 202, "HTTP_NO_CONTENT": 204, "HTTP_PARTIAL_CONTENT": 206, "HTTP_SPECIAL_RESPONSE": 300,
        "HTTP_MOVED_PERMANENTLY": 301, "HTTP_MOVED_TEMPORARILY": 302, "HTTP_SEE_OTHER": 303,
        "HTTP_NOT_MODIFIED": 304, "HTTP_TEMPORARY_REDIRECT": 307, "HTTP_PERMANENT_REDIRECT": 308,
        "HTTP_BAD_REQUEST": 400, "HTTP_UNAUTHORIZED": 401, "HTTP_PAYMENT_REQUIRED": 402, "HTTP_FORBIDDEN": 403,
        "HTTP_NOT_FOUND": 404, "HTTP_NOT_ALLOWED": 405, "HTTP_NOT_ACCEPTABLE": 406, "HTTP_REQUEST_TIMEOUT": 408,
        "HTTP_CONFLICT": 409, "HTTP_GONE": 410, "HTTP_UPGRADE_REQUIRED": 426, "HTTP_TOO_MANY_REQUESTS": 429,
        "HTTP_CLOSE": 444, "HTTP_ILLEGAL": 451, "HTTP_INTERNAL_SERVER_ERROR": 500, "HTTP_NOT_IMPLEMENTED": 501,
        "HTTP_METHOD_NOT_IMPLEMENTED": 501, "HTTP_BAD_GATEWAY": 502, "HTTP_SERVICE_UNAVAILABLE": 503,
        "HTTP_GATEWAY_TIMEOUT": 504, "HTTP_VERSION_NOT_SUPPORTED": 505, "HTTP_INSUFFICIENT_STORAGE": 507},
    "Nginx log level constants": {
        "STDERR": 0, "EMERG": 1, "ALERT": 2, "CRIT": 3, "ERR": 4, "WARN": 5, "NOTICE": 6, "INFO": 7, "DEBUG": 8},
}

# Calls made after the existence check of a supported entry: each must run without raising.
CALLS = {
    "ngx.var.VARIABLE": 'assert(ngx.var.uri == ngx.var.document_uri and ngx.var.uri:sub(1, 3) == "/p/")',
    "Core constants": "assert(ngx.null ~= nil)",
    "print": 'print("openresty api doc probe")',
    "ngx.ctx": "ngx.ctx.probe = 1 assert(ngx.ctx.probe == 1)",
    "ngx.status": "ngx.status = 201 assert(ngx.status == 201) ngx.status = 200",
    "ngx.req.is_internal": "assert(ngx.req.is_internal() == false)",
    "ngx.req.start_time": 'assert(type(ngx.req.start_time()) == "number")',
    "ngx.req.http_version": "assert(ngx.req.http_version() == 1.1)",
    "ngx.req.raw_header": 'assert(ngx.req.raw_header():find("^GET /p/"))',
    "ngx.req.get_method": 'assert(ngx.req.get_method() == "GET")',
    "ngx.req.set_method": 'ngx.req.set_method(ngx.HTTP_GET) assert(ngx.req.get_method() == "GET")',
    "ngx.req.set_uri_args": 'ngx.req.set_uri_args({ a = "1" }) assert(ngx.var.args == "a=1")',
    "ngx.req.get_uri_args": 'ngx.req.set_uri_args("x=2") assert(ngx.req.get_uri_args().x == "2")',
    "ngx.req.get_headers": 'assert(ngx.req.get_headers()["x-probe"] == "1")',
    "ngx.req.set_header": 'ngx.req.set_header("X-Set", "v") assert(ngx.req.get_headers()["x-set"] == "v")',
    "ngx.req.clear_header": 'ngx.req.clear_header("X-Probe") assert(ngx.req.get_headers()["x-probe"] == nil)',
    "ngx.req.read_body": "ngx.req.read_body()",
    "ngx.req.get_body_data": "ngx.req.read_body() assert(ngx.req.get_body_data() == nil)",
    "ngx.req.get_post_args": "ngx.req.read_body() assert(next(ngx.req.get_post_args()) == nil)",
    "ngx.req.get_body_file": "ngx.req.read_body() assert(ngx.req.get_body_file() == nil)",
    "ngx.headers_sent": "assert(ngx.headers_sent == false)",
    "ngx.is_subrequest": "assert(ngx.is_subrequest == false)",
    "ngx.get_phase": 'assert(ngx.get_phase() == "content")',
    "ngx.escape_uri": 'assert(ngx.escape_uri("a b") == "a%20b")',
    "ngx.unescape_uri": 'assert(ngx.unescape_uri("a%20b+c") == "a b c")',
    "ngx.encode_args": 'assert(ngx.encode_args({ a = "b c" }) == "a=b%20c")',
    "ngx.decode_args": 'assert(ngx.decode_args("a=b%20c").a == "b c")',
    "ngx.encode_base64": 'assert(ngx.encode_base64("foo") == "Zm9v")',
    "ngx.decode_base64": 'assert(ngx.decode_base64("Zm9v") == "foo")',
    "ngx.crc32_short": 'assert(ngx.crc32_short("hello") == 907060870)',
    "ngx.crc32_long": 'assert(ngx.crc32_long("hello") == 907060870)',
    "ngx.hmac_sha1": 'assert(#ngx.hmac_sha1("k", "v") == 20)',
    "ngx.md5": 'assert(ngx.md5("") == "d41d8cd98f00b204e9800998ecf8427e")',
    "ngx.md5_bin": 'assert(#ngx.md5_bin("") == 16)',
    "ngx.sha1_bin": 'assert(#ngx.sha1_bin("") == 20)',
    "ngx.quote_sql_str": r'''assert(ngx.quote_sql_str("a'b") == [['a\'b']])''',
    "ngx.today": 'assert(ngx.today():match("^%d%d%d%d%-%d%d%-%d%d$"))',
    "ngx.time": 'assert(ngx.time() > 1e9)',
    "ngx.now": 'assert(ngx.now() > 1e9)',
    "ngx.update_time": "ngx.update_time()",
    "ngx.localtime": 'assert(#ngx.localtime() == 19)',
    "ngx.utctime": 'assert(#ngx.utctime() == 19)',
    "ngx.cookie_time": 'assert(ngx.cookie_time(0) == "Thu, 01-Jan-70 00:00:00 GMT")',
    "ngx.http_time": 'assert(ngx.http_time(0) == "Thu, 01 Jan 1970 00:00:00 GMT")',
    "ngx.parse_http_time": 'assert(ngx.parse_http_time("Thu, 01 Jan 1970 00:00:00 GMT") == 0)',
    "ngx.sleep": "ngx.sleep(0)",
    "ngx.re.match": 'assert(ngx.re.match("abc", "b(c)")[1] == "c")',
    "ngx.re.find": 'assert(ngx.re.find("abc", "c") == 3)',
    "ngx.re.gmatch": 'local it = ngx.re.gmatch("a1b2", "[0-9]") assert(it()[0] == "1")',
    "ngx.re.sub": 'assert(ngx.re.sub("aa", "a", "b") == "ba")',
    "ngx.re.gsub": 'assert(ngx.re.gsub("aa", "a", "b") == "bb")',
    "ngx.shared.DICT": 'assert(ngx.shared.d and ngx.shared.nope == nil)',
    "ngx.shared.DICT.set": 'assert(ngx.shared.d:set("k", 1) == true)',
    "ngx.shared.DICT.get": 'ngx.shared.d:set("k", 1) assert(ngx.shared.d:get("k") == 1)',
    "ngx.shared.DICT.incr": 'assert(ngx.shared.d:incr("n", 1, 0) >= 1)',
    "ngx.shared.DICT.capacity": 'assert(ngx.shared.d:capacity() == 1048576)',
    "ngx.shared.DICT.get_keys": 'assert(type(ngx.shared.d:get_keys()) == "table")',
    "ngx.socket.tcp": 'assert(ngx.socket.tcp())',
    "ngx.socket.stream": 'assert(ngx.socket.stream())',
    "ngx.socket.udp": 'assert(ngx.socket.udp())',
    "ngx.socket.connect": """local s, err = ngx.socket.connect("127.0.0.1", 1)
        assert(s == nil and err == "connection refused", err)""",
    "tcpsock:settimeout": "ngx.socket.tcp():settimeout(10)",
    "tcpsock:settimeouts": "ngx.socket.tcp():settimeouts(10, 10, 10)",
    "tcpsock:connect": """local s = ngx.socket.tcp() s:settimeout(500)
        local ok, err = s:connect("127.0.0.1", 1) assert(ok == nil and err == "connection refused", err)""",
    "ngx.thread.spawn": "local t = ngx.thread.spawn(function() return 7 end) assert(select(2, ngx.thread.wait(t)) == 7)",
    "ngx.timer.at": "assert(ngx.timer.at(0, function() end))",
    "ngx.timer.running_count": 'assert(type(ngx.timer.running_count()) == "number")',
    "ngx.timer.pending_count": 'assert(type(ngx.timer.pending_count()) == "number")',
    "ngx.config.subsystem": 'assert(ngx.config.subsystem == "http")',
    "ngx.config.debug": "assert(ngx.config.debug == false)",
    "ngx.config.prefix": 'assert(ngx.config.prefix():sub(-1) == "/")',
    "ngx.config.nginx_version": "assert(ngx.config.nginx_version == 1022001)",
    "ngx.config.ngx_lua_version": "assert(ngx.config.ngx_lua_version == 10023)",
    "ngx.config.nginx_configure": 'assert(ngx.config.nginx_configure() == "")',
    "ngx.worker.exiting": "assert(ngx.worker.exiting() == false)",
    "ngx.worker.pid": 'assert(type(ngx.worker.pid()) == "number")',
    "ngx.worker.count": "assert(ngx.worker.count() == 1)",
    "ngx.worker.id": "assert(ngx.worker.id() == 0)",
    # The named difference: a coroutine the script made runs, but cannot wait.
    "coroutine.create": """local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
        assert(select(2, coroutine.resume(co, 1)) == 2 and select(2, coroutine.resume(co, 5)) == 10)
        local ok, err = coroutine.resume(coroutine.create(function() ngx.sleep(0) end))
        assert(not ok and err:find("cannot wait inside a coroutine the script created itself", 1, true), err)""",
    "coroutine.wrap": 'assert(coroutine.wrap(function() coroutine.yield(3) end)() == 3)',
    "coroutine.running": "assert(coroutine.running())",
    "coroutine.status": 'assert(coroutine.status(coroutine.create(function() end)) == "suspended")',
}


def getter(entry):
    """Lua code returning the entry's value (it may raise: that is what refusal is)."""
    if entry in CONSTANTS:
        checks = " ".join('if ngx.%s ~= %d then error("ngx.%s is " .. tostring(ngx.%s)) end' % (k, v, k, k)
                          for k, v in sorted(CONSTANTS[entry].items()))
        return checks + " return true"
    if entry == "print":
        return "return print"
    if entry == "ngx.header.HEADER":
        return 'ngx.header.X_Probe = "1" return ngx.header["X-Probe"]'
    if entry in ("ngx.semaphore", "ngx.balancer", "ngx.ssl", "ngx.ocsp"):
        return 'return require "%s"' % entry
    m = re.match(r"^(tcp|udp)sock:(\w+)$", entry)
    if m:
        return "local s = ngx.socket.%s() return s.%s" % m.groups()
    for k, v in CONCRETE.items():
        entry = entry.replace("." + k, "." + v)
    assert re.match(r"^[a-z_0-9]+(\.[a-z_0-9]+)*$", entry), entry
    return "return " + entry


def refused_name(entry):
    for k, v in CONCRETE.items():
        entry = entry.replace("." + k, "." + v)
    return entry


LUA_CHECK = r'''
local function probe_check(status, name, get, call)
  local ok, v = pcall(get)
  if status == "refused" then
    local err = v
    if ok then
      if type(v) ~= "function" then return "FAIL: " .. name .. " gives a " .. type(v) .. ", not a refusal" end
      local ok2, e2 = pcall(v)
      if ok2 then return "FAIL: calling " .. name .. " did not raise" end
      err = e2
    end
    err = tostring(err):gsub("^[^\n]-:%d+: ", "")
    if err ~= name .. " is not supported by moongate" then return "FAIL: raised " .. err end
    return "ok"
  elseif status == "missing" then
    if not ok then return "FAIL: raised " .. tostring(v) end
    if v ~= nil then return "FAIL: " .. name .. " is there now (a " .. type(v) .. "): update docs/openresty.md" end
    return "ok"
  end
  if not ok then return "FAIL: raised " .. tostring(v) end
  if v == nil then return "FAIL: nil" end
  if call then
    local ok3, e3 = pcall(call)
    if not ok3 then return "FAIL: the call raised " .. tostring(e3) end
  end
  return "ok"
end
'''


def route_of(i):
    return "/p/%d" % i


def moongate_config():
    out = ['mg.shared("d", "1m")\n', LUA_CHECK]
    for i, (entry, status, _, _) in enumerate(API):
        call = CALLS.get(entry) if status in ("supported", "difference") else None
        args = "%r, %r, function() %s end, %s" % (
            status, refused_name(entry), getter(entry), "function() %s end" % call if call else "nil")
        if entry == "ngx.arg":
            # ngx.arg is the body_filter's: the probe's verdict replaces the body.
            out.append('mg.route("=%s", function(req) return 200, "x" end, { hooks = { body_filter = function()\n'
                       '  local verdict = probe_check(%s)\n'
                       '  ngx.arg[1] = ngx.arg[2] and verdict or ""\nend } })\n' % (route_of(i), args.replace(
                           "function() return ngx.arg end",
                           'function() assert(type(ngx.arg[1]) == "string" and type(ngx.arg[2]) == "boolean") return ngx.arg end')))
        else:
            out.append('mg.route("=%s", function(req)\n  return 200, probe_check(%s)\nend)\n' % (route_of(i), args))
    return "".join(out)


@pytest.fixture(scope="module")
def gateway_api(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("apidoc"), moongate_config())
    yield g
    g.stop()


def test_the_tables_are_complete():
    names = [e for e, _, _, _ in API]
    assert len(names) == len(set(names)), "an entry is listed twice"
    assert len(names) >= 159 and len(DIRECTIVES) >= 88, (len(names), len(DIRECTIVES))
    for entry, status, _, _ in API + DIRECTIVES:
        assert status in STATUSES, (entry, status)
    for entry, status, _, _ in DIRECTIVES:
        assert status != "missing", entry


@pytest.mark.parametrize("i", range(len(API)), ids=[e for e, _, _, _ in API])
def test_api_entry_status(gateway_api, i):
    entry, status, _, _ = API[i]
    r = request(gateway_api.port, path=route_of(i), headers=[("X-Probe", "1")])
    body = r.body.decode("latin-1")
    assert r.status == 200 and body == "ok", "%s (%s): %d %s\n%s" % (entry, status, r.status, body, gateway_api.log()[-2000:])


def snippets():
    found = set()
    for _, _, moongate, _ in DIRECTIVES:
        for code in re.findall(r"`([^`]+)`", moongate):
            if re.match(r"^mg\.(set\{|on\(|shared\()", code):
                found.add(code)
    return sorted(found)


@pytest.mark.parametrize("code", snippets())
def test_directive_equivalent_loads(tmp_path, code):
    config = tmp_path / "init.lua"
    config.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:%d")\nlocal fn = function() end\n%s\n'
                      % (free_port(), code))
    p = subprocess.run([MOONGATE, "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


CONSTANTS_LUA = r'''
local names = {}
for k, v in pairs(ngx) do
  if type(k) == "string" and k:match("^[A-Z_]+$") and type(v) == "number" then names[#names + 1] = k end
end
table.sort(names)
for _, k in ipairs(names) do ngx.say(k, "=", ngx[k]) end
'''


def test_constants_are_openresty_s(tmp_path):
    """Every upper-case number constant of ngx, names and values, as lua-nginx-module's."""
    p, nginx_port = start_openresty(tmp_path / "openresty", {"/t": CONSTANTS_LUA})
    try:
        theirs = request(nginx_port, path="/t").body.decode()
    finally:
        stop_openresty(p)
    (tmp_path / "moongate").mkdir()
    g = Gateway(tmp_path / "moongate", 'mg.route("=/t", function(req)\n%s\nend)\n' % CONSTANTS_LUA)
    try:
        ours = request(g.port, path="/t").body.decode()
    finally:
        g.stop()
    assert ours == theirs
    assert "HTTP_NOT_IMPLEMENTED=501" in ours
