"""Gateway core: the HTTP/1.1 front end and SCGI proxying, end to end.

Each case is data: a config, a request, and what the client and the backend must see.
"""
import os
import socket
import subprocess
import time

import pytest

from conftest import MOONGATE, raw, read_all, read_response, request, scgi_vars

BASIC = 'mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n'


def vars_of(resp):
    return dict(scgi_vars(resp.body))


def test_simple_get(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    r = request(g.port, path="/hello")
    assert r.status == 200
    assert r.body == b"hello world\n"
    assert r.header("Content-Length") == "12"
    assert r.header("Server").startswith("moongate/")
    assert r.header("Date")


def test_scgi_variables_order_and_mapping(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    r = request(g.port, path="/vars/x?a=1&b=2", headers=[
        ("X-Foo", "one"), ("x-foo", "two"), ("Cookie", "a=1"), ("Cookie", "b=2"),
        ("X_Forwarded_For", "spoofed"), ("X-Forwarded-For", "10.0.0.1"), ("Proxy", "http://evil/"),
        ("Content-Type", "text/plain")], body=b"data")
    v = scgi_vars(r.body)
    names = [k for k, _ in v]
    assert names[:2] == ["CONTENT_LENGTH", "SCGI"]
    d = dict(v)
    assert d["CONTENT_LENGTH"] == "4" and d["SCGI"] == "1"
    assert names[2:7] == ["REQUEST_METHOD", "REQUEST_URI", "QUERY_STRING", "SCRIPT_NAME", "SERVER_PROTOCOL"]
    assert d["REQUEST_METHOD"] == "GET"
    assert d["REQUEST_URI"] == "/vars/x?a=1&b=2"
    assert d["QUERY_STRING"] == "a=1&b=2"
    assert d["SCRIPT_NAME"] == "/vars/x" and "PATH_INFO" not in d
    assert d["HTTP_X_FOO"] == "one, two"
    assert d["HTTP_COOKIE"] == "a=1; b=2"
    assert d["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert d["CONTENT_TYPE"] == "text/plain"
    assert d["SERVER_SOFTWARE"].startswith("moongate/")
    assert d["REMOTE_ADDR"] == "127.0.0.1" and d["REQUEST_SCHEME"] == "http"
    assert d["SERVER_PORT"] == str(g.port)
    for never in ("HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "PATH", "HOME", "proxy-scgi-pathinfo"):
        assert never not in d, never
    assert len(names) == len(set(names)), "duplicate variable names"
    assert r.body.endswith(b"BODY=data")


@pytest.mark.parametrize("route_opts,path,script_name,path_info", [
    ("", "/pi/a%20b/c", "/pi/a b/c", None),
    ("{ pathinfo = true }", "/pi/a%20b/c", "/pi", "/a b/c"),
    ("{ pathinfo = true }", "/pi/", "/pi", "/"),
    ("{ pathinfo = true }", "/pi/caf%C3%A9/x+y", "/pi", "/café/x+y"),
])
def test_script_name_and_path_info(gateway, demo_backend, route_opts, path, script_name, path_info):
    opts = (", " + route_opts) if route_opts else ""
    g = gateway('mg.route("/pi/", "scgi://127.0.0.1:{BACKEND}/"%s)\n' % opts, demo_backend)
    d = vars_of(request(g.port, path=path))
    assert d["SCRIPT_NAME"] == script_name
    if path_info is None:
        assert "PATH_INFO" not in d
    else:
        assert d["PATH_INFO"] == path_info


def test_route_env_and_authorization(gateway, echo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { env = { APP_ENV = "prod", SERVER_NAME = "override", REMOTE_PORT = false }, pass_authorization = false })\n', echo_backend)
    d = vars_of(request(g.port, path="/vars", headers=[("Authorization", "Basic xyz")]))
    assert d["APP_ENV"] == "prod"
    assert d["SERVER_NAME"] == "override"
    assert "REMOTE_PORT" not in d
    assert "HTTP_AUTHORIZATION" not in d


def test_post_body_streamed_large(gateway, echo_backend):
    g = gateway('mg.set { client_max_body_size = "20m" }\n' + BASIC, echo_backend)
    body = os.urandom(3 * 1024 * 1024)
    r = request(g.port, method="POST", path="/vars", body=body)
    assert r.status == 200
    assert vars_of(r)["CONTENT_LENGTH"] == str(len(body))
    assert r.body.endswith(body)


@pytest.mark.parametrize("size", [10, 200 * 1024])
def test_chunked_request_body_spooled_with_exact_length(gateway, echo_backend, size):
    g = gateway(BASIC, echo_backend)
    payload = os.urandom(size)
    chunks = b""
    for i in range(0, size, 7000):
        part = payload[i:i + 7000]
        chunks += b"%x\r\n" % len(part) + part + b"\r\n"
    chunks += b"0\r\n\r\n"
    r = request(g.port, method="POST", path="/vars", headers=[("Transfer-Encoding", "chunked")], body=chunks)
    assert r.status == 200
    assert vars_of(r)["CONTENT_LENGTH"] == str(size)
    assert r.body.endswith(payload)


@pytest.mark.parametrize("req,status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
    (b"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
])
def test_limits_and_refusals(gateway, echo_backend, req, status):
    g = gateway(BASIC, echo_backend)
    t0 = time.monotonic()
    out = raw(g.port, req)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert b"Content-Length:" in out
    if status != 404:
        # A refused request ends its connection at once, as nginx's and Apache's do (raw()
        # reads until the server closes, or 5 s).
        assert b"Connection: close" in out and time.monotonic() - t0 < 3, out[:200]
    # The server goes on serving.
    assert request(g.port).status == 200


def test_chunked_body_over_limit_is_413(gateway, echo_backend):
    g = gateway('mg.set { client_max_body_size = "100k" }\n' + BASIC, echo_backend)
    part = b"x" * 60000
    body = (b"%x\r\n" % len(part) + part + b"\r\n") * 3 + b"0\r\n\r\n"
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 413 ")


def test_path_normalization(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    for path, want in [("/a/../vars/./x//y", "/vars/x/y"), ("/%76ars/%7Euser", "/vars/~user"), ("/vars/%2e%2e/vars/z", "/vars/z")]:
        d = vars_of(request(g.port, path=path))
        assert d["SCRIPT_NAME"] == want, path
        assert d["REQUEST_URI"] == path


def test_absolute_form_is_served_locally(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET http://evil.example/vars?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"SCRIPT_NAME=/vars\n" in out and b"QUERY_STRING=q=1\n" in out


def test_keepalive_and_pipelining(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    f = s.makefile("rb")
    s.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(f).body == b"xxxxx"
    # Three pipelined requests in one write: answered in order on the same connection.
    s.sendall(b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /stream/2 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    r1, r2, r3 = read_response(f), read_response(f), read_response(f)
    assert r1.body == b"x" and r2.body == b"yy" and r2.header("Transfer-Encoding") == "chunked"
    assert r3.body.endswith(b"BODY=abc")
    s.close()


def test_http10(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET /stream/10 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"y" * 10
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    f = s.makefile("rb")
    for _ in range(2):
        s.sendall(b"GET /bytes/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = read_response(f)
        assert r.body == b"xxx" and r.header("Connection") == "keep-alive"
    s.close()


def test_expect_100_continue(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(100)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"body")
    r = read_response(s.makefile("rb"))
    assert r.status == 200 and r.body.endswith(b"BODY=body")
    s.close()


def test_head_has_no_body(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"HEAD /bytes/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 100" in head and body == b""


@pytest.mark.parametrize("path,status,log", [
    ("/garbage", 502, "header line without a colon"),
    ("/crlf", 502, "control character"),
    ("/bigheader", 502, "max_backend_header_size"),
    ("/hang", 504, "timed out"),
    ("/close", 502, "closed the connection before a complete response header"),
    ("/status/418", 418, None),
])
def test_backend_errors(gateway, demo_backend, path, status, log):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { timeout = "500ms" })\n', demo_backend)
    r = request(g.port, path=path)
    assert r.status == status
    if log:
        assert r.body.startswith(b"%d " % status)
        g.wait_log(log)
        assert "127.0.0.1:%d" % demo_backend in g.log()
    else:
        assert r.raw_head.startswith(b"HTTP/1.1 418")
        assert r.header("Status") is None


def test_response_head_in_several_reads(gateway, demo_backend):
    g = gateway(BASIC, demo_backend)
    r = request(g.port, path="/splithead")
    assert r.status == 201 and r.header("X-Part") == "1" and r.body == b"0123456789"


def test_connect_refused_is_503(gateway):
    from conftest import free_port
    dead = free_port()
    g = gateway('mg.route("/", "scgi://127.0.0.1:%d/")\n' % dead)
    r = request(g.port, path="/x")
    assert r.status == 503
    g.wait_log("connect() to 127.0.0.1:%d failed" % dead)


def test_truncated_body_is_not_passed_off_as_whole(gateway, demo_backend):
    g = gateway(BASIC, demo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"GET /truncate HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(EOFError):
        read_response(s.makefile("rb"))


def test_unix_socket_backend_and_listener(gateway, tmp_path):
    from conftest import Process, DEMO_APP
    import sys
    sock = str(tmp_path / "app.sock")
    p = Process([sys.executable, DEMO_APP, "unix:" + sock])
    for _ in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    try:
        g = gateway('mg.route("/", "unix:%s|scgi://")\n' % sock)
        r = request(g.port, path="/vars")
        assert r.status == 200 and b"SCRIPT_NAME=/vars" in r.body
    finally:
        p.stop()


def test_host_routes_and_exact_match(gateway, echo_backend):
    g = gateway(BASIC + 'mg.route("/", function(req) return 200, "vhost\\n" end, { host = "a.example" })\n'
                'mg.route("=/exact", function(req) return 201, "exact\\n" end)\n', echo_backend)
    assert request(g.port, path="/x", headers=[]).body == b"hello world\n"
    out = raw(g.port, b"GET /x HTTP/1.1\r\nHost: A.example:80\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"vhost\n")
    assert request(g.port, path="/exact").status == 201
    assert request(g.port, path="/exact/more").body == b"hello world\n"


def test_access_log_format(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    request(g.port, path="/hello?x=1", headers=[("User-Agent", "tester/1"), ("Referer", "http://r/")])
    deadline = time.time() + 5
    while "GET /hello" not in g.access_log() and time.time() < deadline:
        time.sleep(0.05)
    line = g.access_log().strip().splitlines()[-1]
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /hello?x=1 HTTP/1.1" 200 12 "http://r/" "tester/1" ' in line
    usec, upstream = line.split()[-2:]
    assert usec.isdigit() and upstream == "127.0.0.1:%d" % echo_backend


@pytest.mark.parametrize("lua,message", [
    ('mg.set { no_such_key = 1 }', 'init.lua:2: mg.set: unknown setting "no_such_key"'),
    ('mg.route("/", "http://x/")', 'init.lua:2: mg.route: bad backend URL'),
    ('mg.route("/", "balancer://nope/")', 'init.lua:2: mg.route: unknown balancer "nope"'),
    ('mg.set { client_max_body_size = "ten" }', 'init.lua:2: client_max_body_size: cannot read size'),
    ('mg.route("/", "scgi://127.0.0.1:1/", { timeot = 5 })', 'init.lua:2: mg.route: unknown option "timeot"'),
    ('mg.route("/s/", "scgi://127.0.0.1:1/", { sendfile = true })', 'init.lua:2: sendfile is on but sendfile_roots is not set'),
    ('mg.listen("127.0.0.1:2", { tls = { cert = "c.pem", key = "k.pem" } })', 'init.lua:2: mg.listen: bad certificate'),
    ('mg.listen("127.0.0.1:2", { tls = { cert = "c.pem" } })', 'init.lua:2: mg.listen: tls certificate #1 needs cert = FILE and key = FILE'),
    ('mg.listen("127.0.0.1:2", { backlog = 5 })', 'init.lua:2: mg.listen: unknown option "backlog"'),
    ('mg.listen("127.0.0.1:2", "tls")', 'init.lua:2: mg.listen: argument #2 must be a table'),
    ('mg.shared("d", "1k")', 'init.lua:2: mg.shared: size of "d" must be at least 64k'),
    ('mg.limit_req("l", { rate = "fast" })', 'init.lua:2: mg.limit_req: rate must be like'),
    ('mg.route("/", "scgi://127.0.0.1:1/", { hooks = { body_filtr = print } })', 'init.lua:2: hooks: unknown phase "body_filtr"'),
    ('mg.timer(0/0, function() end)', 'init.lua:2: mg.timer: time must be a finite number of seconds, got nan'),
    ('mg.timer(1/0, function() end)', 'init.lua:2: mg.timer: time must be a finite number of seconds, got inf'),
    ('mg.timer(-1/0, function() end)', 'init.lua:2: mg.timer: time must be a finite number of seconds, got -inf'),
    ('mg.timer(-1, function() end)', 'init.lua:2: mg.timer: time must not be negative'),
    ('mg.timer(0, function() end)', 'init.lua:2: mg.timer: interval must be positive'),
    ('mg.timer(1e300, function() end)', 'init.lua:2: mg.timer: time 1e+300 is longer than the longest a timer holds'),
    ('mg.rout("/", "x")', 'init.lua:2:'),
    ('local x = = 1', 'init.lua:2:'),
])
def test_config_errors_name_file_and_line(tmp_path, lua, message):
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\n%s\nmg.listen("127.0.0.1:1")\n' % lua)
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 1
    assert message in p.stderr, p.stderr


def test_config_check_ok(tmp_path):
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.route("/", "scgi://127.0.0.1:4000/")\n')
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "moongate: configuration ok"


# ---- clients that end their side, descriptors running out ---------------------------------------

def test_half_close_after_a_proxied_request_still_gets_the_response(gateway, demo_backend):
    """A FIN after a complete request (HTTP/1.0 clients may do it) is a half-close: the
    response goes out, then the connection closes."""
    g = gateway(BASIC, demo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"5\r\nslow\n\r\n0\r\n\r\n") and b"Connection: close" in out


def test_client_leaving_abandons_a_waiting_lua_handler(gateway, echo_backend):
    """A client's FIN while a content handler waits ends that coroutine (docs/lua-api.md: a
    client that goes away abandons it): 30 such clients used to hold 30 descriptors for the
    handler's whole wait."""
    g = gateway('mg.route("=/wait", function(req) mg.sleep(30) return 200, "late\\n" end)\n' + BASIC, echo_backend)
    pid = g.workers()[0]
    start = len(os.listdir("/proc/%d/fd" % pid))
    socks = []
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        socks.append(s)
    for s in socks:
        assert read_all(s) == b"", "the gateway closes without an answer"
    deadline = time.time() + 5
    while len(os.listdir("/proc/%d/fd" % pid)) > start and time.time() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/%d/fd" % pid)) <= start
    g.wait_log("closed the connection while Lua code waited: abandoned")
    assert request(g.port, path="/vars").status == 200


def test_running_out_of_descriptors_is_logged(gateway, echo_backend):
    """EMFILE at accept used to reset connections with no log line at all."""
    g = gateway('mg.set { keepalive_timeout = 30 }\n' + BASIC, echo_backend)
    pid = g.workers()[0]
    used = len(os.listdir("/proc/%d/fd" % pid))
    limit = used + 8
    subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%d" % (limit, limit)], check=True)
    held = []
    try:
        for _ in range(20):  # idle connections: each holds a descriptor in the worker
            held.append(socket.create_connection(("127.0.0.1", g.port), timeout=5))
        g.wait_log("cannot accept connections on port %d: too many open files (this worker's limit is %d descriptors"
                   % (g.port, limit))
    finally:
        for s in held:
            s.close()
    # Descriptors freed: the worker accepts again.
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            if request(g.port, path="/vars").status == 200:
                break
        except OSError:
            time.sleep(0.1)
    assert request(g.port, path="/vars").status == 200
