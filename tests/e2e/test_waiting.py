"""Lua that waits (docs/lua-api.md, "Waiting"): mg.sleep, cosockets and their pool, subrequests
and internal routes, mg.spawn/mg.wait, req:read_body/body/set_body, phase rules, and aborts
that leave nothing behind. Every gateway here runs one worker, so concurrency is the event loop's."""
import os
import subprocess
import socket
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import read_all, request, scgi_vars

from test_faults import rss_kib, workers_of


class LineServer:
    """A TCP server on loopback whose behaviour per connection is a function(conn)."""

    def __init__(self, behaviour):
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.connections += 1
                try:
                    behaviour(self.request)
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def line_server():
    made = []

    def start(behaviour):
        s = LineServer(behaviour)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


def slow_echo(delay):
    """Answers every line after `delay` seconds, keeping the connection."""
    def run(conn):
        f = conn.makefile("rb")
        for line in f:
            time.sleep(delay)
            conn.sendall(b"echo " + line)
    return run


def concurrently(n, fn):
    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(lambda i: fn(i), range(n)))


# ---- mg.sleep and waiting hooks: one worker serves others while a coroutine waits -------------

def test_twenty_sleeping_handlers_share_one_worker(gateway):
    g = gateway('mg.route("/nap", function(req) mg.sleep(0.5) return 200, "rested\\n" end)\n')
    t0 = time.time()
    out = concurrently(20, lambda i: request(g.port, path="/nap"))
    took = time.time() - t0
    assert all(r.status == 200 and r.body == b"rested\n" for r in out)
    assert took < 3.0, "20 x 0.5 s sleeps took %.2f s: the worker blocked" % took


@pytest.mark.parametrize("what", ["sleep", "socket timeout"])
def test_a_wait_started_after_cpu_work_lasts_its_whole_duration(gateway, line_server, what):
    """A timer started from Lua after CPU work in the same loop turn counts from the moment it
    is started, not from the loop's cached time at the start of the turn: mg.sleep(0.3) or a
    0.3 s read timeout after 0.2 s of computing returns after 0.5 s, not after 0.3 s."""
    srv = line_server(lambda conn: time.sleep(2))  # accepts, never answers
    before, wait = "", "mg.sleep(0.3)"
    if what == "socket timeout":
        # Connected first (a wait of its own), then the work, then the read that times out.
        before = 'local s = mg.socket.tcp(); s:settimeout(300); assert(s:connect("127.0.0.1", %d))' % srv.port
        wait = 'assert(select(2, s:receive("*l")) == "timeout")'
    g = gateway('''mg.route("=/t", function(req)
  %s
  local c0 = os.clock()
  while os.clock() - c0 < 0.2 do end
  %s
  return 200, "ok\\n"
end)
''' % (before, wait))
    t0 = time.monotonic()
    r = request(g.port, path="/t")
    took = time.monotonic() - t0
    assert r.status == 200 and took >= 0.48, took


def test_hooks_waiting_on_a_slow_tcp_server_share_one_worker(gateway, echo_backend, line_server):
    srv = line_server(slow_echo(0.3))
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  local s = mg.socket.tcp()
  s:settimeout(2000)
  assert(s:connect("127.0.0.1", %d))
  assert(s:send("hello " .. req.uri .. "\\n"))
  local line = assert(s:receive())
  s:close()
  req.headers["X-Answer"] = line
end } })
""" % srv.port, echo_backend)
    t0 = time.time()
    out = concurrently(10, lambda i: request(g.port, path="/vars/%d" % i))
    took = time.time() - t0
    for i, r in enumerate(out):
        assert r.status == 200
        assert dict(scgi_vars(r.body))["HTTP_X_ANSWER"] == "echo hello /vars/%d" % i
    assert took < 1.8, "10 hooks waiting 0.3 s each took %.2f s" % took


# ---- cosockets: results and errors as OpenResty's ---------------------------------------------

COSOCKET = """
mg.route("/c", function(req)
  local s = mg.socket.tcp()
  s:settimeout(300)
  local mode = req.query
  local ok, err = s:connect("127.0.0.1", %d)
  if not ok then return 200, "connect:" .. err end
  if mode == "line" then
    local line, err, partial = s:receive("*l")
    return 200, "line:" .. tostring(line) .. ":" .. tostring(err) .. ":" .. tostring(partial)
  elseif mode == "count" then
    local a = s:receive(3)
    local b, err, partial = s:receive(10)
    return 200, "count:" .. tostring(a) .. ":" .. tostring(b) .. ":" .. tostring(err) .. ":" .. tostring(partial)
  elseif mode == "all" then
    return 200, "all:" .. tostring(s:receive("*a"))
  elseif mode == "until" then
    local it = s:receiveuntil("--sep--")
    local a = it()
    local b, err, partial = it()
    return 200, "until:" .. tostring(a) .. ":" .. tostring(b) .. ":" .. tostring(err) .. ":" .. tostring(partial)
  end
end)
"""


def test_cosocket_refused(gateway):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    g = gateway(COSOCKET % port)
    assert request(g.port, path="/c?x").body == b"connect:connection refused"


def test_cosocket_read_timeout(gateway, line_server):
    srv = line_server(lambda conn: time.sleep(2))  # accepts, never answers
    g = gateway(COSOCKET % srv.port)
    t0 = time.time()
    assert request(g.port, path="/c?line").body == b"line:nil:timeout:"
    assert time.time() - t0 < 1.5


def test_cosocket_peer_closes_mid_line(gateway, line_server):
    srv = line_server(lambda conn: conn.sendall(b"first\r\nhalf a li"))
    g = gateway(COSOCKET % srv.port)
    assert request(g.port, path="/c?line").body == b"line:first:nil:nil"
    srv2 = line_server(lambda conn: conn.sendall(b"abcdefg"))
    g2 = gateway(COSOCKET % srv2.port)
    assert request(g2.port, path="/c?count").body == b"count:abc:nil:closed:defg"
    assert request(g2.port, path="/c?all").body == b"all:abcdefg"
    srv3 = line_server(lambda conn: conn.sendall(b"part one--sep--part tw"))
    g3 = gateway(COSOCKET % srv3.port)
    assert request(g3.port, path="/c?until").body == b"until:part one:nil:closed:part tw"


def test_cosocket_receives_more_than_its_buffer_holds(gateway, line_server):
    """Replies larger than the 64 KiB a socket buffers unasked: "*a" to the end, and n bytes."""
    srv = line_server(lambda conn: conn.sendall(b"z" * 300000))
    g = gateway("""
mg.route("/big", function(req)
  local s = mg.socket.tcp()
  s:settimeout(2000)
  assert(s:connect("127.0.0.1", %d))
  local first = assert(s:receive(100000))
  local rest = assert(s:receive("*a"))
  return 200, #first .. " " .. #rest
end)
""" % srv.port)
    t0 = time.time()
    assert request(g.port, path="/big").body == b"100000 200000"
    assert time.time() - t0 < 1.5


def test_cosocket_connects_by_name(gateway, line_server):
    srv = line_server(slow_echo(0))
    g = gateway("""
mg.route("/n", function(req)
  local s = mg.socket.tcp()
  s:settimeout(2000)
  local ok, err = s:connect("localhost", %d)
  if not ok then return 200, err end
  s:send("by name\\n")
  return 200, (s:receive())
end)
""" % srv.port)
    # "localhost" goes through libuv's resolver (answered from /etc/hosts: no query leaves).
    assert request(g.port, path="/n").body == b"echo by name"


def test_cosocket_over_a_unix_socket(gateway, tmp_path):
    path = str(tmp_path / "svc.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)

    def serve():
        c, _ = srv.accept()
        c.recv(100)
        c.sendall(b"over unix\n")
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    g = gateway("""
mg.route("/u", function(req)
  local s = mg.socket.tcp()
  assert(s:connect("unix:%s"))
  s:send("hi\\n")
  return 200, (s:receive())
end)
""" % path)
    assert request(g.port, path="/u").body == b"over unix"
    srv.close()


def test_keepalive_pool_reuses_one_connection(gateway, line_server):
    srv = line_server(slow_echo(0))
    g = gateway("""
mg.route("/k", function(req)
  local s = mg.socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  local reused = s:getreusedtimes()
  s:send("ping\\n")
  local line = assert(s:receive())
  assert(s:setkeepalive(1000, 4)) -- idle 1 s: the descriptor check at the end sees it closed
  return 200, line .. " reused=" .. reused
end)
""" % srv.port)
    bodies = [request(g.port, path="/k").body for _ in range(5)]
    assert bodies[0] == b"echo ping reused=0"
    assert bodies[4] == b"echo ping reused=4"
    assert srv.connections == 1, "the pool should have kept one connection, %d were made" % srv.connections
    time.sleep(1.3)  # past the idle timeout the pooled connection is closed
    assert request(g.port, path="/k").body == b"echo ping reused=0" and srv.connections == 2


# ---- subrequests and internal routes -----------------------------------------------------------

def test_internal_route_is_404_from_outside(gateway, demo_backend):
    g = gateway("""
mg.route("/_inner/", "scgi://127.0.0.1:{BACKEND}/", { internal = true })
mg.route("/outer", function(req)
  local r = assert(req:subrequest("/_inner/status/202"))
  return 200, r.status .. " " .. r.body
end)
""", demo_backend)
    assert request(g.port, path="/_inner/status/202").status == 404
    assert request(g.port, path="/outer").body == b"202 status 202\n"


def test_subrequest_to_a_balancer_and_to_static_and_lua(gateway, demo_backend, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f.txt").write_text("static file\n")
    g = gateway("""
mg.balancer("pair", { members = { { "scgi://127.0.0.1:{BACKEND}" }, { "scgi://localhost:{BACKEND}" } } })
mg.route("/b/", "balancer://pair/", { internal = true })
mg.route("/s/", { root = "%s" })
mg.route("=/l", function(req) return 201, "lua " .. tostring(req.is_subrequest), { ["X-From"] = "lua" } end)
mg.route("/all", function(req)
  local b = assert(req:subrequest("/b/vars", { method = "POST", body = "payload", query = "q=1", env = { EXTRA = "e" } }))
  local s = assert(req:subrequest("/s/f.txt"))
  local l = assert(req:subrequest("/l"))
  return 200, b.status .. "|" .. b.body .. "|" .. s.body .. "|" .. l.status .. l.headers["x-from"] .. l.body
end)
""" % (tmp_path / "www"), demo_backend)
    body = request(g.port, path="/all").body.decode()
    status, vars_, static, lua = body.split("|")
    d = dict(scgi_vars(vars_.encode()))
    assert status == "200" and d["REQUEST_METHOD"] == "POST" and d["QUERY_STRING"] == "q=1"
    assert d["CONTENT_LENGTH"] == "7" and vars_.endswith("BODY=payload") and d["EXTRA"] == "e"
    assert static == "static file\n" and lua == "201lualua true"


def test_parallel_subrequests_take_the_time_of_one(gateway, demo_backend):
    g = gateway("""
mg.route("/slow/", "scgi://127.0.0.1:{BACKEND}/", { internal = true })
mg.route("/both", function(req)
  local a = mg.spawn(function() return req:subrequest("/slow/slow?ms=600") end)
  local b = mg.spawn(function() return req:subrequest("/slow/slow?ms=600") end)
  local ok1, ra = mg.wait(a)
  local ok2, rb = mg.wait(b)
  return 200, ra.body .. rb.body
end)
""", demo_backend)
    t0 = time.time()
    r = request(g.port, path="/both")
    took = time.time() - t0
    assert r.body == b"slow\nslow\n"
    assert took < 1.0, "two 0.6 s subrequests in parallel took %.2f s" % took


def test_subrequest_body_limit(gateway, echo_backend):
    g = gateway("""
mg.set { subrequest_max_body = "1k" }
mg.route("/bytes/", "scgi://127.0.0.1:{BACKEND}/", { internal = true })
mg.route("/get", function(req)
  local r, err = req:subrequest("/bytes/" .. req.query)
  if not r then return 200, "error: " .. err end
  return 200, "got " .. #r.body
end)
""", echo_backend)
    assert request(g.port, path="/get?1000").body == b"got 1000"
    assert request(g.port, path="/get?5000").body == b"error: body too large"


def test_subrequest_timeout(gateway):
    g = gateway("""
mg.route("/stuck", function(req) mg.sleep(30) return 200, "late" end, { internal = true })
mg.route("/ask", function(req)
  local r, err = req:subrequest("/stuck", { timeout = 0.3 })
  return 200, tostring(r) .. " " .. tostring(err)
end)
""")
    t0 = time.time()
    assert request(g.port, path="/ask").body == b"nil timeout"
    assert time.time() - t0 < 1.5
    g.wait_log("subrequest to /stuck timed out")


def test_spawn_and_wait_results(gateway):
    g = gateway("""
mg.route("/t", function(req)
  local a = mg.spawn(function(x, y) mg.sleep(0.05) return x + y, "sum" end, 2, 3)
  local b = mg.spawn(function() error("boom") end)
  local ok, v, w = mg.wait(a)
  local ok2, err = mg.wait(b)
  return 200, tostring(ok) .. v .. w .. " " .. tostring(ok2) .. " " .. tostring(err:find("boom") ~= nil)
end)
""")
    assert request(g.port, path="/t").body == b"true5sum false true"
    g.wait_log("Lua error in a light thread")


# ---- the request body in Lua -------------------------------------------------------------------

BODY_HOOK = """
mg.set { client_max_body_size = "1m", lua_body_max = "%s" }
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  req:read_body()
  local b, err = req:body()
  if req.headers["X-Rewrite"] then
    req:set_body("rewritten:" .. b:upper())
  else
    req.headers["X-Body-Seen"] = b and tostring(#b) or err
  end
end } })
"""


def test_read_body_and_set_body(gateway, echo_backend):
    g = gateway(BODY_HOOK % "1m", echo_backend)
    r = request(g.port, method="POST", path="/vars", headers=[("X-Rewrite", "1")], body=b"hello")
    d = dict(scgi_vars(r.body))
    assert d["CONTENT_LENGTH"] == str(len("rewritten:HELLO")) and r.body.endswith(b"BODY=rewritten:HELLO")


def test_read_body_spools_a_large_body(gateway, echo_backend):
    g = gateway(BODY_HOOK % "64k", echo_backend)
    body = os.urandom(200 * 1024)
    r = request(g.port, method="POST", path="/vars", body=body)
    d = dict(scgi_vars(r.body))
    assert d["HTTP_X_BODY_SEEN"] == "in file"  # over lua_body_max: kept in its file
    assert d["CONTENT_LENGTH"] == str(len(body)) and r.body.split(b"BODY=", 1)[1] == body
    g2 = gateway(BODY_HOOK % "1m", echo_backend)
    r2 = request(g2.port, method="POST", path="/vars", body=body)
    assert dict(scgi_vars(r2.body))["HTTP_X_BODY_SEEN"] == str(len(body))


def test_read_body_of_a_chunked_request(gateway, echo_backend):
    g = gateway(BODY_HOOK % "1m", echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port))
    s.sendall(b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Rewrite: 1\r\nConnection: close\r\n\r\n"
              b"3\r\nabc\r\n")
    time.sleep(0.1)  # the rest arrives while the hook waits for it
    s.sendall(b"2\r\nde\r\n0\r\n\r\n")
    out = read_all(s)
    assert b"CONTENT_LENGTH=15\n" in out and b"BODY=rewritten:ABCDE" in out


def test_content_handler_that_waits_then_reads_the_body_gets_all_of_it(gateway):
    """A content handler that waits before req:read_body() gets the whole body (the body stays
    with the client's connection while it waits, as under OpenResty), one that never reads
    it answers and the body is dropped, and keep-alive goes on after both."""
    g = gateway("""
mg.route("=/late", function(req)
  mg.sleep(0.05)
  req:read_body()
  local b = req:body() or ""
  return 200, #b .. " " .. ngx.md5(b)
end)
mg.route("=/ignore", function(req) mg.sleep(0.05) return 200, "ignored" end)
""")
    from conftest import read_response
    import hashlib
    s = socket.create_connection(("127.0.0.1", g.port))
    f = s.makefile("rb")
    for i, size in enumerate((10, 100 * 1024, 300 * 1024)):
        body = os.urandom(size)
        path = b"/late" if i != 1 else b"/ignore"
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, len(body)) + body)
        r = read_response(f)
        want = b"ignored" if i == 1 else b"%d %s" % (size, hashlib.md5(body).hexdigest().encode())
        assert (r.status, r.body) == (200, want)
    s.sendall(b"GET /ignore HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(f).status == 200
    f.close()
    s.close()


def test_waiting_hook_loses_no_streamed_body_byte(gateway, echo_backend):
    """A hook that waits before the handler starts: the body the client already sent is held,
    not dropped, and streamed to the backend afterwards; keep-alive still works."""
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req) mg.sleep(0.1) end } })
""", echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port))
    f = s.makefile("rb")
    from conftest import read_response
    for i in range(3):
        body = b"x%d" % i * 1000
        s.sendall(b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = read_response(f)
        assert r.status == 200 and r.body.split(b"BODY=", 1)[1] == body
    s.sendall(b"GET /vars HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(f).status == 200
    f.close()
    s.close()


# ---- phase rules --------------------------------------------------------------------------------

def test_waiting_in_header_filter_is_refused(gateway, echo_backend):
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { header_filter = function(req, res) mg.sleep(0.1) end } })
""", echo_backend)
    assert request(g.port, path="/").status == 500
    g.wait_log("API disabled in the context of header_filter: mg.sleep")


def test_waiting_in_a_timer_and_init_worker(gateway, line_server):
    srv = line_server(slow_echo(0))
    g = gateway("""
local seen = {}
mg.on("init_worker", function()
  mg.sleep(0.05)
  local s = mg.socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("from init\\n")
  seen[#seen + 1] = s:receive()
  s:close()
end)
mg.timer(0.1, function() mg.sleep(0.01) seen.ticks = (seen.ticks or 0) + 1 end)
mg.route("/seen", function(req) return 200, tostring(seen[1]) .. " " .. tostring((seen.ticks or 0) > 0) end)
""" % srv.port)
    deadline = time.time() + 3
    while time.time() < deadline:
        body = request(g.port, path="/seen").body
        if body == b"echo from init true":
            break
        time.sleep(0.05)
    assert body == b"echo from init true"


# ---- aborts: a client gone while its coroutine waits leaves nothing behind ------------------------

def test_clients_leaving_while_coroutines_wait_leave_nothing_behind(gateway, echo_backend, line_server):
    silent = line_server(lambda conn: time.sleep(3))  # accepts, never answers
    g = gateway("""
mg.route("/_slow/", "scgi://127.0.0.1:{BACKEND}/", { internal = true })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  if req.uri == "/vars/sleep" then mg.sleep(5) end
  if req.uri == "/vars/sock" then
    local s = mg.socket.tcp()
    s:settimeout(5000)
    assert(s:connect("127.0.0.1", %d))
    s:receive()
  end
  if req.uri == "/vars/sub" then
    local t = mg.spawn(function() mg.sleep(5) end)
    req:subrequest("/_slow/vars/x", { body = string.rep("b", 100000) })
    mg.wait(t)
  end
end } })
""" % silent.port, echo_backend)
    worker = workers_of(g)[0]
    request(g.port, path="/vars/warm")
    time.sleep(0.3)
    rss_before = rss_kib(worker)

    def leave(i):
        s = socket.create_connection(("127.0.0.1", g.port))
        s.sendall(b"GET /vars/%s HTTP/1.1\r\nHost: x\r\n\r\n" % [b"sleep", b"sock", b"sub"][i % 3])
        time.sleep(0.2)
        s.close()
    for _ in range(3):
        concurrently(30, leave)
    # The worker still answers at once, and its descriptors come back (checked again at stop).
    assert request(g.port, path="/vars/after").status == 200
    g.check_descriptors()
    assert rss_kib(worker) - rss_before < 8 * 1024


# ---- timeouts that mean something ---------------------------------------------------------------

def test_zero_timeouts_mean_the_default_not_for_ever(gateway, line_server):
    """settimeout(0) meant "no timeout": a silent peer held the descriptor for good. 0 is the
    default (lua_socket_timeout, as lua-nginx-module's lua_socket_*_timeout), for requests and
    timers alike; a subrequest's timeout = 0 is the timeout setting."""
    silent = line_server(lambda conn: time.sleep(3))  # accepts, never answers
    g = gateway("""
mg.set { lua_socket_timeout = "300ms", timeout = "300ms" }
local timer_result = "not yet"
local function wait_silent(set)
  local s = mg.socket.tcp()
  set(s)
  assert(s:connect("127.0.0.1", %d))
  local line, err = s:receive()
  s:close()
  return tostring(line) .. ":" .. tostring(err)
end
mg.timer(0.05, function()
  if timer_result == "not yet" then timer_result = wait_silent(function(s) s:settimeout(0) end) end
end)
mg.route("=/stuck", function(req) mg.sleep(30) return 200, "late" end, { internal = true })
mg.route("/t", function(req)
  if req.uri == "/t/settimeout" then return 200, wait_silent(function(s) s:settimeout(0) end) end
  if req.uri == "/t/settimeouts" then return 200, wait_silent(function(s) s:settimeouts(0, 0, 0) end) end
  if req.uri == "/t/default" then return 200, wait_silent(function(s) end) end
  if req.uri == "/t/timer" then return 200, timer_result end
  local r, err = req:subrequest("/stuck", { timeout = 0 })
  return 200, tostring(r) .. ":" .. tostring(err)
end)
""" % silent.port)
    for path in ("/t/settimeout", "/t/settimeouts", "/t/default", "/t/sub"):
        t0 = time.time()
        body = request(g.port, path=path).body
        assert body in (b"nil:timeout",), (path, body)
        assert time.time() - t0 < 2.0, path
    deadline = time.time() + 3
    while request(g.port, path="/t/timer").body == b"not yet" and time.time() < deadline:
        time.sleep(0.05)
    assert request(g.port, path="/t/timer").body == b"nil:timeout"
    g.check_descriptors()


def test_keepalive_idle_zero_is_the_default(gateway, line_server):
    closed = threading.Event()

    def echo_until_closed(conn):
        f = conn.makefile("rb")
        for line in f:
            conn.sendall(b"echo " + line)
        closed.set()
    srv = line_server(echo_until_closed)
    g = gateway("""
mg.set { lua_socket_timeout = "300ms" }
mg.route("/k", function(req)
  local s = mg.socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("ping\\n")
  local line = assert(s:receive())
  assert(s:setkeepalive(0))
  return 200, line
end)
""" % srv.port)
    assert request(g.port, path="/k").body == b"echo ping"
    # The pooled connection is closed after lua_socket_timeout, not kept for ever.
    assert closed.wait(3), "the idle pooled connection was never closed"


BAD_TIMEOUTS = """
mg.route("/b", function(req)
  local s = mg.socket.tcp()
  local calls = {
    ["settimeout(nan)"] = function() s:settimeout(0/0) end,
    ["settimeout(inf)"] = function() s:settimeout(1/0) end,
    ["settimeout(-1)"] = function() s:settimeout(-1) end,
    ["settimeouts(inf)"] = function() s:settimeouts(10, 1/0, 10) end,
    ["setkeepalive(nan)"] = function() s:setkeepalive(0/0) end,
    ["sleep(nan)"] = function() mg.sleep(0/0) end,
    ["sleep(inf)"] = function() mg.sleep(1/0) end,
    ["sleep(-1)"] = function() mg.sleep(-1) end,
    ["subrequest(nan)"] = function() req:subrequest("/x", { timeout = 0/0 }) end,
    ["subrequest(inf)"] = function() req:subrequest("/x", { timeout = 1/0 }) end,
    ["subrequest(-1)"] = function() req:subrequest("/x", { timeout = -1 }) end,
  }
  local out = {}
  for name, fn in pairs(calls) do
    local ok, err = pcall(fn)
    out[#out + 1] = name .. "=" .. (ok and "accepted" or err:gsub("^.-: ", ""))
  end
  -- Huge values are capped (2^31 - 1 ms), not refused and not "for ever".
  s:settimeout(1e300)
  s:settimeouts(1e300, 1e300, 1e300)
  local t = mg.spawn(function() mg.sleep(1e300) end)
  out[#out + 1] = "huge=accepted"
  table.sort(out)
  return 200, table.concat(out, "\\n")
end)
"""


def test_nan_infinite_and_negative_timeouts_are_bad_arguments(gateway):
    g = gateway(BAD_TIMEOUTS)
    lines = dict(l.split("=", 1) for l in request(g.port, path="/b").body.decode().split("\n"))
    for name, fn in (("settimeout", "settimeout"), ("settimeouts", "settimeouts"), ("setkeepalive", "setkeepalive")):
        for arg in ("nan", "inf", "-1"):
            key = "%s(%s)" % (name, arg)
            if key in lines:
                assert lines[key].startswith("bad argument #"), (key, lines[key])
                assert "to '%s' (timeout must be a number of milliseconds from 0" % fn in lines[key], (key, lines[key])
    assert lines["settimeout(nan)"].startswith("bad argument #1 to 'settimeout'")
    for arg in ("nan", "inf", "-1"):
        assert lines["sleep(%s)" % arg] == "bad argument #1 to 'sleep' (seconds must be a finite number from 0)"
        assert lines["subrequest(%s)" % arg] == \
            "req:subrequest: opts.timeout must be a finite number of seconds from 0 (0: the default)"
    assert lines["huge"] == "accepted"


# ---- a cap on subrequests ----------------------------------------------------------------------

def test_subrequest_fan_out_stops_at_subrequest_limit(gateway):
    """A handler fanning out 4 subrequests to itself, 6 deep, would make 5,460 (at depth 10 it
    made 1.4 M and OOM-killed the workers): past subrequest_limit they get nil, "too many
    subrequests", the client request is answered and the log names the cap once."""
    g = gateway("""
mg.set { subrequest_limit = 100 }
mg.route("/fan", function(req)
  local depth = tonumber(req.query) or 0
  if depth == 0 then return 200, "leaf" end
  local kids = {}
  for i = 1, 4 do kids[i] = mg.spawn(function() return req:subrequest("/fan", { query = tostring(depth - 1) }) end) end
  local made, refused = 0, 0
  for i = 1, 4 do
    local ok, r, err = mg.wait(kids[i])
    if r then made = made + 1 + (tonumber(r.body:match("made=(%d+)")) or 0) end
    if err == "too many subrequests" then refused = refused + 1 end
    if r then refused = refused + (tonumber(r.body:match("refused=(%d+)")) or 0) end
  end
  return 200, "made=" .. made .. " refused=" .. refused
end)
""")
    from test_faults import workers_of, rss_kib
    worker = workers_of(g)[0]
    rss_before = rss_kib(worker)
    for _ in range(3):
        t0 = time.time()
        r = request(g.port, path="/fan?6")
        assert r.status == 200
        made = int(r.body.split(b"made=")[1].split()[0])
        refused = int(r.body.split(b"refused=")[1])
        assert made == 100 and refused > 0, r.body
        assert time.time() - t0 < 5
    assert g.log().count("subrequest_limit (100) reached") == 3  # once per client request
    assert rss_kib(worker) - rss_before < 16 * 1024


def test_subrequest_bodies_stop_at_subrequest_max_total_body(gateway, echo_backend):
    g = gateway("""
mg.set { subrequest_max_total_body = "10k" }
mg.route("/bytes/", "scgi://127.0.0.1:{BACKEND}/", { internal = true })
mg.route("/get", function(req)
  local out = {}
  for i = 1, 5 do
    local r, err = req:subrequest("/bytes/3000")
    out[i] = r and tostring(#r.body) or err
  end
  return 200, table.concat(out, " ")
end)
""", echo_backend)
    assert request(g.port, path="/get").body == b"3000 3000 3000 total body too large total body too large"
    g.wait_log("subrequest_max_total_body (10240 bytes) reached")


@pytest.mark.parametrize("proto", ["--http1.1", "--http2-prior-knowledge"])
def test_a_wait_longer_than_client_body_timeout_is_not_the_clients_delay(gateway, proto):
    """A hook or content handler that waits longer than client_body_timeout before the body is
    read: the client sent its body at once, so it gets its answer, not a 408 (the timer counts
    the client's delays only); a client that really stalls after the wait still gets one."""
    g = gateway("""
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.set { client_body_timeout = "1s" }
mg.route("=/late", function(req)
  mg.sleep(1.3)
  req:read_body()
  return 200, "got " .. #(req:body() or "")
end)
mg.route("=/hook", function(req) req:read_body() return 200, "got " .. #(req:body() or "") end,
  { hooks = { access = function(req) mg.sleep(1.3) end } })
""")
    body = os.urandom(100 * 1024)
    for path in ("/late", "/hook"):
        p = subprocess.run(["curl", "-sS", proto, "-H", "Expect:", "--data-binary", "@-", "--max-time", "10",
                            "http://127.0.0.1:%d%s" % (g.port, path)], input=body, capture_output=True, timeout=20)
        assert p.stdout == b"got %d" % len(body), (path, p.stdout, p.stderr)
    if proto == "--http1.1":
        s = socket.create_connection(("127.0.0.1", g.port))
        s.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        s.settimeout(10)
        t0 = time.time()
        out = read_all(s)
        assert out.startswith(b"HTTP/1.1 408") and 2.0 < time.time() - t0 < 6, out[:40]


def test_a_malformed_body_read_after_a_wait_gets_400_and_nothing_breaks(gateway):
    """(found by fuzz_http) A handler or hook that waited, then called req:read_body() on a
    chunked body that turns out malformed: the parse that read_body starts answers 400, which
    ended the request under the running call (a use after free under ASan). The read now
    starts on the next loop turn, with the thread suspended, so the 400 abandons it as any wait."""
    g = gateway("""
mg.route("=/late", function(req) mg.sleep(0.05) req:read_body() return 200, "read" end)
mg.route("=/hook", function(req) return 200, "read" end,
  { hooks = { access = function(req) mg.sleep(0.05) req:read_body() end } })
""")
    for path in (b"/late", b"/hook"):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-User/c/s\n\r\n" % path)
        out = read_all(s)
        assert out.startswith(b"HTTP/1.1 400 "), (path, out[:60])
    assert request(g.port, method="POST", path="/late", body=b"ok").body == b"read"
