"""The Lua layer (issue 3): phases, the request object, isolation of errors, reload."""
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
