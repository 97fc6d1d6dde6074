"""The Lua layer: phases, the request object, isolation of errors, reload."""
import os
import signal
import socket
import threading
import time

import pytest

from conftest import raw, request, scgi_vars

UP = 'mg.route("/", "scgi://127.0.0.1:{BACKEND}/"%s)\n'


def test_phases_in_order_and_request_fields(gateway, echo_backend):
    lua = '''
local order = {}
mg.on("rewrite", function(req)
  req.ctx.trail = "rewrite"
  if req.uri == "/old" then req.uri = "/vars/new" end
end)
mg.on("access", function(req) req.ctx.trail = req.ctx.trail .. ",access" end)
mg.on("header_filter", function(req, res)
  res.headers["X-Trail"] = req.ctx.trail .. ",header_filter"
  res.headers["X-Fields"] = table.concat({req.method, req.uri, req.raw_uri, tostring(req.query), req.host,
    req.http_version, req.scheme, req.route, req.remote_addr, type(req.remote_port), type(req.id)}, "|")
end)
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = {
  access = function(req) req.ctx.trail = req.ctx.trail .. ",route-access"; req.headers["X-Added"] = "yes"; req.headers["User-Agent"] = nil end,
} })
'''
    g = gateway(lua, echo_backend)
    r = request(g.port, path="/old?q=1", headers=[("User-Agent", "ua")])
    assert r.status == 200
    assert r.header("X-Trail") == "rewrite,access,route-access,header_filter"
    assert r.header("X-Fields") == "GET|/vars/new|/old?q=1|q=1|127.0.0.1|1.1|http|/|127.0.0.1|number|string"
    d = dict(scgi_vars(r.body))
    assert d["HTTP_X_ADDED"] == "yes" and "HTTP_USER_AGENT" not in d
    assert d["SCRIPT_NAME"] == "/vars/new" and d["REQUEST_URI"] == "/old?q=1"


def test_access_hook_denies_with_exit(gateway, echo_backend):
    lua = '''
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  if req.headers["X-Token"] ~= "secret" then req:exit(403, "forbidden\\n", { ["X-Why"] = "token" }) end
end } })
'''
    g = gateway(lua, echo_backend)
    r = request(g.port, path="/x")
    assert r.status == 403 and r.body == b"forbidden\n" and r.header("X-Why") == "token"
    assert request(g.port, path="/x", headers=[("X-Token", "secret")]).status == 200


def test_env_and_setenvif_pathinfo(gateway, demo_backend):
    lua = '''
mg.on("rewrite", function(req)
  if req.uri:find("^/legacy/") then req.env["proxy-scgi-pathinfo"] = "1" end
end)
mg.route("/legacy/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  req.env.APP_MODE = "legacy"; req.env.REMOTE_PORT = false; req.env.CONTENT_LENGTH = "999"
end } })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
'''
    g = gateway(lua, demo_backend)
    d = dict(scgi_vars(request(g.port, path="/legacy/vars").body))
    assert d["SCRIPT_NAME"] == "/legacy" and d["PATH_INFO"] == "/vars"
    assert d["APP_MODE"] == "legacy" and "REMOTE_PORT" not in d and d["CONTENT_LENGTH"] == "0"
    assert "proxy-scgi-pathinfo" not in d
    d = dict(scgi_vars(request(g.port, path="/vars/other").body))
    assert d["SCRIPT_NAME"] == "/vars/other" and "PATH_INFO" not in d


def test_lua_content_handler(gateway):
    lua = '''
mg.route("=/health", function(req) return 200, "ok\\n" end)
mg.route("/json", function(req) return 201, '{"a":1}', { ["Content-Type"] = "application/json" } end)
mg.route("/exit", function(req) req:exit(409, "conflict\\n") end)
'''
    g = gateway(lua)
    r = request(g.port, path="/health")
    assert (r.status, r.body, r.header("Content-Type")) == (200, b"ok\n", "text/plain")
    r = request(g.port, path="/json")
    assert (r.status, r.body, r.header("Content-Type")) == (201, b'{"a":1}', "application/json")
    assert request(g.port, path="/exit").status == 409


@pytest.mark.parametrize("where", ["rewrite", "access", "content", "header_filter"])
def test_lua_error_is_500_and_worker_lives(gateway, echo_backend, where):
    if where == "content":
        lua = 'mg.route("/", function(req) error("boom in content") end)\n'
    elif where == "rewrite":
        lua = 'mg.on("rewrite", function(req) if req.uri == "/bad" then error("boom in rewrite") end end)\n' + UP % ""
    else:
        lua = UP % (', { hooks = { %s = function(req) if req.uri == "/bad" then error("boom in %s") end end } }' % (where, where))
    g = gateway(lua, echo_backend)
    r = request(g.port, path="/bad")
    assert r.status == 500
    g.wait_log("boom in %s" % where)
    assert "stack traceback" in g.log()
    if where != "content":
        assert request(g.port, path="/fine").status == 200


def test_api_disabled_in_wrong_phase(gateway, echo_backend):
    lua = UP % ', { hooks = { access = function(req) req.uri = "/elsewhere" end } }'
    g = gateway(lua, echo_backend)
    assert request(g.port, path="/x").status == 500
    g.wait_log("API disabled in the context of access: setting req.uri")


def test_globals_are_locked(gateway, echo_backend):
    lua = UP % ', { hooks = { access = function(req) counter = 1 end } }'
    g = gateway(lua, echo_backend)
    assert request(g.port, path="/x").status == 500
    g.wait_log("assignment to undeclared global 'counter'")


def test_req_redirect_and_log_phase(gateway, echo_backend, tmp_path):
    lua = '''
mg.on("log", function(req, res) io.stderr:write("LOGPHASE ", req.uri, " ", res.status, " ", res.bytes_sent, "\\n") end)
mg.route("/go", function(req) req:redirect("/vars/target?x=1") end)
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
'''
    g = gateway(lua, echo_backend)
    r = request(g.port, path="/go")
    d = dict(scgi_vars(r.body))
    assert d["SCRIPT_NAME"] == "/vars/target" and d["REDIRECT_URL"] == "/go" and d["QUERY_STRING"] == "x=1"
    g.wait_log("LOGPHASE /vars/target 200 %d" % len(r.body))


def test_timer_and_init_worker(gateway):
    lua = '''
local ticks = 0
mg.on("init_worker", function() io.stderr:write("INIT_WORKER ran\\n") end)
mg.timer("100ms", function() ticks = ticks + 1; if ticks == 3 then io.stderr:write("TIMER ticked 3\\n") end end)
mg.route("/", function(req) return 200, tostring(ticks) end)
'''
    g = gateway(lua)
    g.wait_log("INIT_WORKER ran")
    g.wait_log("TIMER ticked 3")


def test_reload_under_load_loses_nothing(gateway, echo_backend):
    good_a = 'mg.route("/", function(req) return 200, "A" end)\n'
    good_b = 'mg.route("/", function(req) return 200, "B" end)\n'
    broken = 'mg.route("/", function(req) return 200, "C" end\n'  # syntax error
    g = gateway(good_a, echo_backend)
    stop = threading.Event()
    failures = []
    counts = {"ok": 0}

    def client():
        s = None
        f = None
        from conftest import read_response
        while not stop.is_set():
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
                    f = s.makefile("rb")
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                r = read_response(f)
                if r.status != 200 or r.body not in (b"A", b"B"):
                    failures.append((r.status, r.body))
                counts["ok"] += 1
                if r.header("Connection") == "close":
                    s.close()
                    s = None
            except Exception as e:  # noqa: BLE001 - every failure is counted
                failures.append(repr(e))
                s = None
        if s:
            s.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            body = [good_b, broken, good_a][i % 3]
            with open(g.config, "w") as fh:
                fh.write('local mg = require "moongate"\nmg.listen("127.0.0.1:%d")\n%s' % (g.port, body))
            g.signal(signal.SIGHUP)
            time.sleep(0.4)
            if body is not broken:
                expect = b"B" if body is good_b else b"A"
                deadline = time.time() + 3
                while request(g.port).body != expect and time.time() < deadline:
                    time.sleep(0.05)
                assert request(g.port).body == expect
            else:
                g.wait_log("reload failed, the running configuration stays in force")
                assert "init.lua:4: ')' expected (to close '(' at line 3)" in g.log()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert counts["ok"] > 100


def test_route_without_hooks_never_enters_lua(gateway, echo_backend):
    """The status page counts this worker's Lua calls: plain requests add none."""
    import json
    lua = ('mg.route("/hooked", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req) end } })\n'
           'mg.route("=/status", mg.status_handler())\n' + UP % "")
    g = gateway(lua, echo_backend)
    calls = lambda: json.loads(request(g.port, path="/status").body)["worker"]["lua_calls"]
    start = calls()
    for _ in range(20):
        assert request(g.port, path="/plain").status == 200
    assert calls() == start
    for _ in range(3):
        request(g.port, path="/hooked")
    assert calls() == start + 3


# ---- what hostile Lua code could do (docs/reliability.md, "The hostile probe") ----------------------

@pytest.mark.parametrize("code,logged", [
    ('return 101, "switch"', "returned status 101, not a final status (200 to 599)"),
    ('return 100', "returned status 100, not a final status"),
    ('return 0, "zero"', "returned status 0, not a final status"),
    ('return 600, "big"', "returned status 600, not a final status"),
    ('return 200.5, "half"', "returned status 200.5, not a final status"),
    ('req:exit(100)', "bad argument #1 to 'exit' (status 100 is not a final status (200 to 599))"),
    ('req:exit(103, "early")', "bad argument #1 to 'exit' (status 103 is not a final status"),
])
def test_lua_1xx_status_is_500_and_the_next_pipelined_response_stays_its_own(gateway, code, logged):
    """A 1xx from Lua is no final response: the client would take the next response for this
    one's. The request gets 500 and the log names the status; as nginx after its own 500, the
    connection ends there (test_openresty_diff.py), so exactly one response is on the wire and
    the pipelined request is the client's to send again."""
    g = gateway('''
mg.route("=/bad", function(req) req:read_body() %s end)
mg.route("=/next", function(req) return 200, "next\\n" end)
''' % code)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
              b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    from conftest import read_all
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 500 ") and out.count(b"HTTP/1.1 ") == 1, out
    assert b"Connection: close" in out
    r = request(g.port, path="/next")
    assert r.status == 200 and r.body == b"next\n"
    g.wait_log(logged)


def test_header_filter_1xx_status_is_refused(gateway, echo_backend):
    g = gateway('''
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { header_filter = function(req, res)
  if req.uri == "/vars/bad" then res.status = 101 end
end } })
''', echo_backend)
    # A failed header_filter closes the connection after its 500: no response can be mistaken.
    r = request(g.port, path="/vars/bad")
    assert r.status == 500 and r.header("Connection") == "close"
    g.wait_log("res.status: status 101 is not a final status (200 to 599)")


SPIN = '''
mg.set { lua_max_run_time = 0.5 }
local function f(x) return x + 1 end
mg.route("=/spin", function(req) while true do end end)
mg.route("=/calls", function(req) local n = 0 while true do n = f(n) end end)
mg.route("=/pcall", function(req) while true do pcall(function() while true do end end) end end)
mg.route("/hook", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req) while true do end end } })
mg.route("=/work", function(req)
  -- CPU-bound below the limit, then twice more after yielding: each run is under it.
  for _ = 1, 3 do
    local t = os.clock()
    while os.clock() - t < 0.3 do end
    mg.sleep(0)
  end
  return 200, "worked\\n"
end)
mg.route("=/ok", function(req) return 200, "ok\\n" end)
'''


@pytest.mark.parametrize("path,lines", [("/spin", (4,)), ("/calls", (5, 3)), ("/pcall", (6,)), ("/hook/x", (7,))])
def test_lua_spinning_past_lua_max_run_time_is_ended_and_the_worker_serves(gateway, echo_backend, path, lines):
    """A hook that never yields must not hold its worker for ever: past
    lua_max_run_time of CPU it is ended with 500 and a log line naming file:line; a compiled
    loop (LuaJIT's traces call no hooks), a loop of calls and a pcall that catches the error
    are ended alike."""
    g = gateway(SPIN, echo_backend)
    t0 = time.time()
    r = request(g.port, path=path)
    took = time.time() - t0
    assert r.status == 500
    assert 0.4 < took < 3.0, "ended after %.2f s" % took
    # The line where the code was when it was ended: the loop, or the function it calls.
    g.wait_log("ran longer than lua_max_run_time (0.5s) without yielding: ended")
    assert any("init.lua:%d: ran longer than lua_max_run_time" % (line + 3) in g.log() for line in lines), g.log()
    # The same worker (there is one) answers at once.
    assert request(g.port, path="/ok").body == b"ok\n"


def test_cpu_bound_lua_below_lua_max_run_time_is_not_cut(gateway, echo_backend):
    g = gateway(SPIN, echo_backend)
    r = request(g.port, path="/work")
    assert r.status == 200 and r.body == b"worked\n"
    assert "lua_max_run_time" not in g.log()


def test_spinning_timer_and_init_worker_are_ended(gateway):
    g = gateway('''
mg.set { lua_max_run_time = "300ms" }
mg.on("init_worker", function() while true do end end)
local runs = 0
mg.timer(0.2, function() runs = runs + 1 if runs == 1 then while true do end end end)
mg.route("=/runs", function(req) return 200, tostring(runs) end)
''')
    g.wait_log("Lua error in init_worker")
    g.wait_log("init.lua:6: ran longer than lua_max_run_time (0.3s) without yielding: ended")
    g.wait_log("Lua error in timer")
    g.wait_log("init.lua:8: ran longer than lua_max_run_time (0.3s) without yielding: ended")
    deadline = time.time() + 5
    while int(request(g.port, path="/runs").body) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert int(request(g.port, path="/runs").body) >= 3  # the timer goes on ticking


def test_lua_max_run_time_settings(gateway, tmp_path):
    from conftest import MOONGATE
    import subprocess
    for value, ok in [("0", True), ('"off"', True), ("false", True), ('"250ms"', True),
                      ("-1", False), ("0/0", False), ("1/0", False), ('"soon"', False)]:
        path = tmp_path / "t.lua"
        path.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.set { lua_max_run_time = %s }\n' % value)
        p = subprocess.run([MOONGATE, "-t", "-c", str(path)], capture_output=True, text=True)
        assert (p.returncode == 0) == ok, (value, p.stdout, p.stderr)
        if not ok:
            assert "t.lua:3: lua_max_run_time" in p.stdout + p.stderr
    # Off: the spinning guard is gone, a legitimate long computation runs to its end.
    g = gateway('''
mg.set { lua_max_run_time = "off" }
mg.route("=/long", function(req) local t = os.clock() while os.clock() - t < 0.8 do end return 200, "done" end)
''')
    assert request(g.port, path="/long").body == b"done"


# ---- a req kept past its request ------------------------------------------------------------------

def test_req_of_another_request_cannot_wait_and_a_finished_one_raises(gateway):
    """Request B calling saved:subrequest() on request A's req made a child that outlived A (a
    heap-use-after-free under ASan, freed memory read in release): a waiting call on another
    request's req is refused; every field and method of a req, res or headers proxy kept past
    its request raises."""
    g = gateway('''
local kept = {}
mg.route("=/_sub", function(req) mg.sleep(0.6) return 200, "sub" end, { internal = true })
mg.route("=/a", function(req)
  kept.req = req
  kept.headers = req.headers
  kept.methods = {}
  for _, m in ipairs({ "exit", "redirect", "read_body", "body", "set_body", "subrequest" }) do kept.methods[m] = req[m] end
  mg.sleep(0.3)
  return 200, "a done"
end)
mg.route("=/b", function(req)
  local r, err = kept.req:subrequest("/_sub")
  return 200, "b got " .. tostring(r and r.body) .. " " .. tostring(err)
end)
mg.route("=/c", function(req) local r, err = kept.req:read_body() return 200, "read" end)
mg.route("=/res", function(req) return 200, "x" end, { hooks = { log = function(req, res) kept.res = res end } })
mg.route("=/after", function(req)
  local out = {}
  for _, k in ipairs({ "uri", "method", "headers", "ctx", "env", "id", "host", "raw_uri", "query", "remote_addr" }) do
    local ok, err = pcall(function() return kept.req[k] end)
    out[#out + 1] = k .. "=" .. tostring(ok) .. ":" .. tostring(err):match("request object used after its request ended")
  end
  for _, m in ipairs({ "exit", "redirect", "read_body", "body", "set_body", "subrequest" }) do
    -- The method taken while the request lived, called on its req now.
    local ok, err = pcall(kept.methods[m], kept.req, "/x")
    out[#out + 1] = m .. "=" .. tostring(ok) .. ":" .. tostring(err):match("request object used after its request ended")
  end
  local ok1 = pcall(function() return kept.headers["Host"] end)
  local ok2 = pcall(function() kept.headers["X"] = "y" end)
  local ok3 = pcall(function() return kept.res.status end)
  out[#out + 1] = "proxies=" .. tostring(ok1) .. tostring(ok2) .. tostring(ok3)
  return 200, table.concat(out, " ")
end)
''')
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as ex:
        a = ex.submit(request, g.port, "GET", "/a")
        time.sleep(0.1)  # A is sleeping when B asks for a subrequest on its req
        b = ex.submit(request, g.port, "GET", "/b")
        c = ex.submit(request, g.port, "GET", "/c")
        assert a.result().body == b"a done"
        assert b.result().status == 500 and c.result().status == 500
    g.wait_log("req:subrequest on the req of another request")
    g.wait_log("req:read_body on the req of another request")
    time.sleep(0.8)  # past the child B would have made: nothing answers from freed memory
    request(g.port, path="/res")
    body = request(g.port, path="/after").body.decode()
    for k in ("uri", "method", "headers", "ctx", "env", "id", "host", "raw_uri", "query", "remote_addr"):
        assert "%s=false:request object used after its request ended" % k in body, body
    for m in ("exit", "redirect", "read_body", "body", "set_body", "subrequest"):
        assert "%s=false:request object used after its request ended" % m in body, body
    assert "proxies=falsefalsefalse" in body


# ---- init.lua checks ------------------------------------------------------------------------------



def test_no_listener_names_the_real_file(tmp_path):
    from conftest import MOONGATE
    import subprocess
    path = tmp_path / "site.lua"
    path.write_text('local mg = require "moongate"\nmg.route("/", function(req) return 200 end)\n')
    p = subprocess.run([MOONGATE, "-t", "-c", str(path)], capture_output=True, text=True)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "site.lua: no listener" in out and "init.lua" not in out


def test_a_body_filter_failing_under_ngx_say_ends_the_request_cleanly(gateway):
    """The 500 that replaces a response whose body_filter failed before any byte left is sent
    at once, inside ngx.say: the handler (and an access hook doing the same) goes on running
    on a request whose response is over. The request must outlive the run (under ASan this was
    a use after free), the rest of the function's output is dropped, and the worker serves on."""
    g = gateway(r'''
local function fails(req, res, chunk, eof) error("boom") end
mg.route("=/content", function(req)
  ngx.header["Content-Type"] = "text/html"
  ngx.say(string.rep("page ", 4000))
  ngx.say("more")
  mg.sleep(0.01)
  ngx.say("after a wait")
end, { hooks = { body_filter = fails } })
mg.route("=/access", function(req) return 200, "not reached" end,
  { hooks = { access = function(req) ngx.say("from access"); ngx.say("again"); ngx.exit(200) end, body_filter = fails } })
mg.route("=/ok", function(req) return 200, "fine" end)
''')
    for path in ("/content", "/access", "/content", "/access"):
        r = request(g.port, path=path)
        assert r.status == 500 and r.body == b"500 Internal Server Error\n", (path, r.status, r.body)
    assert request(g.port, path="/ok").body == b"fine"
    assert "boom" in g.log()
