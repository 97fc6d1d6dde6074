"""Differential: the same Lua under Debian's nginx + lua-nginx-module and under moongate, for
the results that OpenResty also has (cosocket timeouts). Only the socket
constructor and the clock are named per server; the body is one text."""
import concurrent.futures
import socket
import os
import time

import pytest

from conftest import raw, request
from openresty import start_openresty, stop_openresty

BODY = r'''
local v = ({ zero = 0, nan = 0/0, inf = 1/0, neg = -1 })[ARG]
local sock = TCP()
local okset = pcall(sock.settimeout, sock, v)
assert(sock:connect("127.0.0.1", SILENT))
local t0 = NOW()
local data, err = sock:receive(1)
local took = NOW() - t0
RESULT(tostring(okset) .. " " .. tostring(data) .. " " .. tostring(err) .. " " .. (took > 0.7 and took < 2.5 and "default" or string.format("%.1f", took)))
'''



@pytest.fixture
def silent():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def openresty(tmp_path, silent):
    body = BODY.replace("ARG", "ngx.var.arg_v").replace("TCP", "ngx.socket.tcp").replace("SILENT", str(silent)) \
        .replace("NOW()", "(function() ngx.update_time() return ngx.now() end)()").replace("RESULT", "ngx.say")
    p, port = start_openresty(tmp_path, {"/t": body}, http="lua_socket_read_timeout 1s;")
    yield port
    stop_openresty(p)


@pytest.mark.parametrize("arg", ["zero", "nan", "inf", "neg"])
def test_settimeout_results_match_openresty(gateway, openresty, silent, arg):
    body = BODY.replace("ARG", "mg.decode_args(req.query or '').v").replace("TCP", "mg.socket.tcp") \
        .replace("SILENT", str(silent)).replace("NOW", "mg.now").replace("RESULT(", "return 200, (") \
        .rstrip() + ' .. "\\n"\n'
    g = gateway('mg.set { lua_socket_timeout = 1 }\nmg.route("=/t", function(req)\n%s\nend)\n' % body)
    ours = request(g.port, path="/t?v=" + arg).body
    theirs = request(openresty, path="/t?v=" + arg).body
    assert ours == theirs, (ours, theirs)
    # 0 means the default (lua_socket_read_timeout / lua_socket_timeout); a bad value raises.
    assert theirs.split()[0] == (b"true" if arg == "zero" else b"false") and theirs.split()[-1] == b"default"


# ---- light threads: what ngx.thread.wait / mg.wait give for a thread that raised -----------------

WAIT_BODY = r'''
local t = SPAWN(function() local x = nil; error("boom " .. tostring(x)) end)
local ok, err = WAIT(t)
RESULT(tostring(ok) .. "|" .. type(err) .. "|" .. (err:gsub("^.-:%d+: ", "")) .. "|" ..
       tostring(err:find("traceback", 1, true) ~= nil) .. "\n")
'''


def test_wait_on_a_thread_that_raised_gives_the_message_as_openresty(gateway, tmp_path):
    theirs_body = WAIT_BODY.replace("SPAWN", "ngx.thread.spawn").replace("WAIT", "ngx.thread.wait") \
        .replace("RESULT", "ngx.print")
    p, port = start_openresty(tmp_path, {"/w": theirs_body})
    try:
        theirs = request(port, path="/w").body
    finally:
        stop_openresty(p)
    ours_body = WAIT_BODY.replace("SPAWN", "mg.spawn").replace("WAIT", "mg.wait").replace("RESULT(", "return 200, (")
    g = gateway('mg.route("=/w", function(req)\n%s\nend)\n' % ours_body.rstrip())
    ours = request(g.port, path="/w").body
    assert ours == theirs == b"false|string|boom nil|false\n", (ours, theirs)
    # The traceback is not lost: it is in the error log.
    g.wait_log("stack traceback")


# ---- header tables: a copy read case-insensitively, a list value as several fields -----------------

HEADERS_BODY = r'''
local h = GET_HEADERS
local multi = h["X-Multi"]
RESULT(tostring(h["User-Agent"]) .. "|" .. tostring(h.user_agent) .. "|" .. tostring(h["USER-AGENT"]) .. "|" ..
       tostring(h["user-agent"]) .. "|" .. type(multi) .. "|" .. (type(multi) == "table" and table.concat(multi, ",") or "") ..
       "|" .. tostring(h.x_missing) .. "\n")
'''


def test_header_tables_read_like_openresty(gateway, tmp_path):
    hdrs = [("User-Agent", "probe/1"), ("X-Multi", "a"), ("X-Multi", "b")]
    theirs_body = HEADERS_BODY.replace("GET_HEADERS", "ngx.req.get_headers()").replace("RESULT", "ngx.print")
    p, port = start_openresty(tmp_path, {"/h": theirs_body})
    try:
        theirs = request(port, path="/h", headers=hdrs).body
    finally:
        stop_openresty(p)
    ours_body = HEADERS_BODY.replace("GET_HEADERS", "req:headers()").replace("RESULT(", "return 200, (")
    g = gateway('mg.route("=/h", function(req)\n%s\nend)\n' % ours_body.rstrip())
    ours = request(g.port, path="/h", headers=hdrs).body
    assert ours == theirs == b"probe/1|probe/1|probe/1|probe/1|table|a,b|nil\n", (ours, theirs)


def set_cookies(resp):
    return [line.split(b":", 1)[1].strip() for line in resp.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line.lower().startswith(b"set-cookie:")]


def test_a_list_value_sends_one_field_each_like_openresty(gateway, tmp_path):
    p, port = start_openresty(tmp_path, {"/c": 'ngx.header["Set-Cookie"] = { "a=1", "b=2" } ngx.say("ok")'})
    try:
        theirs = raw(port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        stop_openresty(p)
    g = gateway('''
mg.route("=/c", function(req) return 200, "ok\\n", { ["Set-Cookie"] = { "a=1", "b=2" } } end)
mg.route("=/x", function(req) req:exit(200, "ok\\n", { ["Set-Cookie"] = { "a=1", "b=2" } }) end)
mg.route("=/f", function(req) return 200, "ok\\n" end, { hooks = { header_filter = function(req, res)
  res.headers["Set-Cookie"] = { "a=1", "b=2" }
end } })
''')
    assert set_cookies(theirs) == [b"a=1", b"b=2"]
    for path in ("/c", "/x", "/f"):
        ours = raw(g.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        assert set_cookies(ours) == set_cookies(theirs), (path, ours)


# ---- the request's version and body ---------------------------------------------------------------

VERSION_BODY = r'''
READ_BODY
local v, b = VERSION, BODY
RESULT(type(v) .. "|" .. string.format("%.1f", v) .. "|" .. tostring(v == 1.1 or v == 1.0) .. "|" .. type(b) .. "|" ..
       tostring(b) .. "\n")
'''


@pytest.mark.parametrize("method,body", [("GET", None), ("POST", b""), ("POST", b"abc")])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_version_is_a_number_and_no_body_is_nil_like_openresty(gateway, tmp_path, method, body, version):
    theirs_body = VERSION_BODY.replace("READ_BODY", "ngx.req.read_body()").replace("VERSION", "ngx.req.http_version()") \
        .replace("BODY", "ngx.req.get_body_data()").replace("RESULT", "ngx.print")
    p, port = start_openresty(tmp_path, {"/v": theirs_body})
    try:
        theirs = request(port, method, "/v", body=body, version=version).body
    finally:
        stop_openresty(p)
    ours_body = VERSION_BODY.replace("READ_BODY", "req:read_body()").replace("VERSION", "req.http_version") \
        .replace("BODY", "(req:body())").replace("RESULT(", "return 200, (")
    g = gateway('mg.route("=/v", function(req)\n%s\nend)\n' % ours_body.rstrip())
    ours = request(g.port, method, "/v", body=body, version=version).body
    assert ours == theirs, (ours, theirs)
    assert theirs.startswith(b"number|" + version.encode() + b"|true|")


# ---- receive("*l"): every CR of a line is dropped ---------------------------------------------------

LINES_BODY = r'''
local s = TCP()
assert(s:connect("127.0.0.1", PEER))
local out = {}
for i = 1, 3 do
  local line, err, partial = s:receive("*l")
  out[#out + 1] = string.format("%q %s %q", tostring(line), tostring(err), tostring(partial))
end
RESULT(table.concat(out, "|") .. "\n")
'''


@pytest.fixture
def lines_peer():
    """Sends lines with CRs inside them, then closes, to every connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = []

    def serve():
        while not stop:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(b"a\rb\r\r\nplain\nend\r")
            c.close()

    import threading
    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.append(1)
    srv.close()


def test_receive_line_drops_every_cr_like_openresty(gateway, tmp_path, lines_peer):
    body = LINES_BODY.replace("PEER", str(lines_peer))
    p, port = start_openresty(tmp_path, {"/l": body.replace("TCP", "ngx.socket.tcp").replace("RESULT", "ngx.print")})
    try:
        theirs = request(port, path="/l").body
    finally:
        stop_openresty(p)
    g = gateway('mg.route("=/l", function(req)\n%s\nend)\n' % body.replace("TCP", "mg.socket.tcp")
                .replace("RESULT(", "return 200, (").rstrip())
    ours = request(g.port, path="/l").body
    assert ours == theirs, (ours, theirs)
    assert theirs.startswith(b'"ab" nil "nil"|"plain" nil "nil"|')


# ---- which error answers end the connection --------------------------------------------------------

EXIT_CODES = [400, 403, 404, 411, 413, 414, 429, 500, 501, 502, 503, 504]


def connection_after(port, path):
    """(status line, whether the server closed the keep-alive connection after the answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    s.settimeout(1.0)
    out = b""
    closed = False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    s.close()
    return (out.split(b"\r\n", 1)[0].split(b" ")[1] if out else b""), closed


def lua_routes(locs):
    """moongate's init.lua lines for {path: Lua body}: exact routes with content functions."""
    return "".join('mg.route("=%s", function(req) %s end)\n' % (path, body) for path, body in locs.items())


def all_at_once(port, paths):
    """connection_after for every path, each on its own connection, side by side (each waits
    a second to see whether the server closes)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = {path: pool.submit(connection_after, port, path) for path in paths}
        return {path: f.result() for path, f in futures.items()}


def test_which_exit_statuses_close_the_connection_like_openresty(gateway, tmp_path):
    """ngx.exit(N) and a Lua error: nginx ends the HTTP/1.1 connection after 400, 413, 414, 500
    and 501 (its special responses) and keeps it after the others; so does moongate."""
    locs = {"/c%d" % c: "ngx.exit(%d)" % c for c in EXIT_CODES}
    locs["/err"] = 'error("on purpose")'
    p, port = start_openresty(tmp_path, locs)
    try:
        theirs = all_at_once(port, locs)
    finally:
        stop_openresty(p)
    g = gateway(lua_routes(locs))
    ours = all_at_once(g.port, locs)
    assert ours == theirs
    assert theirs["/c400"] == (b"400", True) and theirs["/c404"] == (b"404", False)
    assert theirs["/err"] == (b"500", True)


# ngx.exit(444), 408 and 499 end the request with no answer (nginx terminates it); 494-497,
# nginx's own codes, are answered as 400 and close; after a header was set, after a wait, and
# from an access hook the same.
DROP_LOCS = {
    "/c408": "ngx.exit(408)", "/c444": "ngx.exit(444)", "/c499": "ngx.exit(499)",
    "/c494": "ngx.exit(494)", "/c495": "ngx.exit(495)", "/c497": "ngx.exit(497)",
    "/h444": 'ngx.header["X-A"] = "1"; ngx.exit(444)',
    "/w444": "ngx.sleep(0.01); ngx.exit(444)",
    # A subrequest that answers nothing ends its client request the same way.
    "/sub": 'local r = ngx.location.capture("/c444"); ngx.say("went on: ", r.status)',
    "/wsub": 'local r = ngx.location.capture("/w444"); ngx.say("went on: ", r.status)',
    # After output that went out, the body is cut: its end never comes.
    "/flush": 'ngx.say("partial") ngx.flush(true) ngx.exit(444)',
}


def test_exit_444_408_499_answer_nothing_like_openresty(gateway, tmp_path):
    locs = dict(DROP_LOCS)
    locs["/a444"] = ("raw", 'access_by_lua_block { ngx.sleep(0.01) ngx.exit(444) } content_by_lua_block { ngx.say("no") }')
    p, port = start_openresty(tmp_path, locs, server="access_log %s/logs/access.log;" % tmp_path)
    try:
        theirs = all_at_once(port, locs)
        time.sleep(0.3)
        with open(os.path.join(str(tmp_path), "logs", "access.log")) as f:
            their_log = {line.split('"')[1].split()[1]: line.split('"')[2].split()[0] for line in f}
    finally:
        stop_openresty(p)
    g = gateway(lua_routes(DROP_LOCS) +
                'mg.route("=/a444", function(req) return 200, "no" end, { hooks = { access = function(req) '
                'ngx.sleep(0.01) ngx.exit(444) end } })\n')
    ours = all_at_once(g.port, locs)
    assert ours == theirs
    assert theirs["/c444"] == (b"", True) and theirs["/w444"] == (b"", True) and theirs["/a444"] == (b"", True)
    assert theirs["/c495"] == (b"400", True)
    assert theirs["/sub"] == (b"", True) and theirs["/flush"] == (b"200", True)
    flushed = raw(g.port, b"GET /flush HTTP/1.1\r\nHost: x\r\n\r\n")
    assert flushed.endswith(b"partial\n\r\n"), flushed  # no last chunk: the client sees it cut
    # Both log the status given (400 for nginx's own codes); the access log is written as the
    # connection closes.
    deadline = time.time() + 5
    while True:
        with open(g.access_path) as f:
            our_log = {line.split('"')[1].split()[1]: line.split('"')[2].split()[0] for line in f if '"' in line}
        if len(our_log) >= len(locs) or time.time() > deadline:
            break
        time.sleep(0.05)
    assert our_log == their_log
    assert their_log["/c444"] == "444" and their_log["/c495"] == "400"


# ngx.status with no status of the handler's own, ngx.exit(ngx.ERROR), and the names
# Content-Type and Content-Length however they are written.
STATUS_LOCS = {
    "/st201": "ngx.status = 201; ngx.exit(ngx.OK)",
    "/st404": "ngx.status = 404; ngx.exit(ngx.OK)",
    "/st500": "ngx.status = 500; return",
    "/st201say": "ngx.status = 201; ngx.say('x')",
    "/err": "ngx.exit(ngx.ERROR)",
}
NAME_LOCS = {
    "/ct": 'ngx.header.content_type = "application/json"; ngx.header.content_length = 3; '
           'ngx.header.cache_control = "no-cache"; ngx.header["x-Bar"] = "2"; ngx.print("{}\\n")',
}


def head_names(port, path):
    """The response's field names, as sent (Server and Date left out)."""
    out = raw(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    head = out.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return sorted(h.split(b":", 1)[0] for h in head if h.split(b":", 1)[0] not in (b"Server", b"Date", b"Connection"))


def test_ngx_status_exit_error_and_field_names_like_openresty(gateway, tmp_path):
    locs = dict(STATUS_LOCS, **NAME_LOCS)
    p, port = start_openresty(tmp_path, locs)
    try:
        theirs = all_at_once(port, STATUS_LOCS)
        their_names = head_names(port, "/ct")
    finally:
        stop_openresty(p)
    g = gateway(lua_routes(locs))
    ours = all_at_once(g.port, STATUS_LOCS)
    assert ours == theirs
    assert theirs["/st201"] == (b"201", False) and theirs["/err"] == (b"", True)
    assert head_names(g.port, "/ct") == their_names
    assert b"Content-Type" in their_names and b"cache-control" in their_names


def test_request_length_like_openresty(gateway, tmp_path):
    """ngx.var.request_length: the request line, the header fields and the body as received."""
    body = "ngx.req.read_body(); ngx.say(ngx.var.request_length)"
    p, port = start_openresty(tmp_path, {"/len": body})
    reqs = [("GET", None, [("X-A", "1"), ("Cookie", "a=b; c=d")]), ("POST", b"x" * 3000, [("Content-Type", "text/plain")])]
    try:
        theirs = [request(port, m, "/len?q=1", headers=h, body=b).body for m, b, h in reqs]
    finally:
        stop_openresty(p)
    g = gateway('mg.route("=/len", function(req) ' + body + ' end)\n')
    ours = [request(g.port, m, "/len?q=1", headers=h, body=b).body for m, b, h in reqs]
    assert ours == theirs
    assert int(theirs[1]) > 3000
