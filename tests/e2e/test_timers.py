"""Timers created at run time (mg.timer.at / every, ngx.timer.at's model), the worker's
identity (mg.worker.*), and log hooks that wait, detached from the connection
(docs/lua-api.md, "Timers" and "Log hooks that wait"). The differential tests at the end run
the same Lua under Debian's nginx + lua-nginx-module."""
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import MOONGATE, request
from openresty import start_openresty, stop_openresty


def wait_for(fn, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def get(g, key):
    return request(g.port, path="/get?" + key).body.decode()


GET_ROUTE = 'mg.route("=/get", function(req) return 200, tostring(d:get(req.query)) end)\n'


# ---- timer.at from every phase --------------------------------------------------------------

def test_timer_at_from_every_phase_runs_later_and_may_wait(gateway, echo_backend):
    """A timer made in each phase runs without the request, waits (mg.sleep, or a cosocket to a
    line server for the content phase) and leaves its mark in a shared dict."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    line_port = srv.getsockname()[1]

    def serve():
        for _ in range(2):
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(100)
            c.sendall(b"pong\n")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    lua = '''
local d = mg.shared("t", "1m")
local function mark(name)
  return function(premature, a, b)
    mg.sleep(0.01)
    d:set(name, tostring(premature) .. "," .. tostring(a) .. "," .. tostring(b))
    if name == "timer" then return end
    -- from a timer too
    assert(mg.timer.at(0, mark("timer")) == 1)
  end
end
local function at(name) local ok, err = mg.timer.at(0, mark(name), name, 7) assert(ok == 1, err) end
mg.on("init_worker", function() at("init_worker") end)
mg.on("rewrite", function(req) if req.uri == "/p" then at("rewrite") end end)
mg.on("access", function(req) if req.uri == "/p" then at("access") end end)
mg.on("header_filter", function(req, res) if req.uri == "/p" then at("header_filter") end end)
mg.on("body_filter", function(req, res, chunk, eof) if req.uri == "/p" and eof then at("body_filter") end end)
mg.on("log", function(req, res) if req.uri == "/p" then at("log") end end)
mg.on("balancer", function(req, members) at("balancer") end)
mg.balancer("b", { members = { { "scgi://127.0.0.1:{BACKEND}" } } })
mg.route("/bal", "balancer://b/")
mg.route("=/p", function(req)
  at("content")
  mg.timer.at(0, function()
    local s = mg.socket.tcp()
    assert(s:connect("127.0.0.1", LINE))
    s:send("ping\\n")
    d:set("cosocket", (s:receive()))
    s:close()
  end)
  return 200, "p"
end)
''' .replace("LINE", str(line_port)) + GET_ROUTE
    g = gateway(lua, backend_port=echo_backend)
    assert request(g.port, path="/p").body == b"p"
    assert request(g.port, path="/bal/x").status == 200
    for phase in ["init_worker", "rewrite", "access", "content", "header_filter", "body_filter", "log", "balancer",
                  "timer"]:
        assert wait_for(lambda: get(g, phase) != "nil") and get(g, phase).startswith("false,"), (phase, get(g, phase))
        if phase != "timer":
            assert get(g, phase) == "false,%s,7" % phase
    assert wait_for(lambda: get(g, "cosocket") == "pong"), get(g, "cosocket")
    srv.close()


def test_timer_arguments_and_errors(gateway):
    lua = '''
mg.route("=/t", function(req)
  local out = {}
  local function p(...) local t = {} for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end out[#out + 1] = table.concat(t, " ") end
  p(pcall(mg.timer.at, -1, function() end))
  p(pcall(mg.timer.at, 0 / 0, function() end))
  p(pcall(mg.timer.every, 0.0004, function() end))
  p(pcall(mg.timer, 1, function() end))
  return 200, table.concat(out, "\\n")
end)
'''
    g = gateway(lua)
    lines = request(g.port, path="/t").body.decode().split("\n")
    assert lines[0] == "false bad argument #1 to '?' (delay must be a finite number of seconds from 0)"
    assert lines[1] == lines[0]
    assert lines[2] == "false delay cannot be zero"  # 0.4 ms truncates to 0, as in OpenResty
    assert lines[3].startswith("false ") and "mg.timer(seconds, fn) declares a periodic timer in init.lua only" in lines[3]


def test_timers_and_worker_id_in_init_lua(tmp_path):
    """While init.lua loads there is no worker: mg.timer.at raises a clear error, the
    worker's id is nil (OpenResty's in init_by_lua under a master), its count raises."""
    def load(body):
        conf = tmp_path / "init.lua"
        conf.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n' + body)
        return subprocess.run([MOONGATE, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    r = load('mg.timer.at(0, function() end)\n')
    assert r.returncode != 0
    assert "mg.timer.at: timers run in a worker, not while init.lua loads" in r.stderr + r.stdout
    r = load('assert(mg.worker.id() == nil)\nassert(mg.worker.exiting() == false)\nassert(type(mg.worker.pid()) == "number")\n'
             'assert(not pcall(mg.worker.count))\nassert(mg.timer.pending_count() == 0)\n')
    assert r.returncode == 0, r.stderr + r.stdout


# ---- limits and counts ------------------------------------------------------------------------

def test_pending_limit_and_counts(gateway):
    lua = '''
mg.set { lua_max_pending_timers = 2 }
mg.route("=/t", function(req)
  local out = {}
  local function p(...) local t = {} for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end out[#out + 1] = table.concat(t, " ") end
  p(mg.timer.pending_count(), mg.timer.running_count())
  p(mg.timer.at(0, function() mg.sleep(0.3) end))
  p(mg.timer.at(10, function() end))
  p(mg.timer.at(0, function() end))
  p(mg.timer.pending_count(), mg.timer.running_count())
  mg.sleep(0.1)
  p(mg.timer.pending_count(), mg.timer.running_count())
  p(mg.timer.at(0, function() end))
  p(mg.timer.at(0, function() end))
  return 200, table.concat(out, "\\n")
end)
'''
    g = gateway(lua)
    assert request(g.port, path="/t").body.decode().split("\n") == [
        "0 0", "1", "1", "nil too many pending timers", "2 0", "1 1", "1", "nil too many pending timers"]


def test_running_limit_drops_the_timer_with_openresty_alert(gateway):
    lua = '''
local d = mg.shared("t", "1m")
mg.set { lua_max_running_timers = 1 }
mg.route("=/t", function(req)
  mg.timer.at(0, function() mg.sleep(0.3) d:set("first", "ran") end)
  mg.timer.at(0.05, function() d:set("second", "ran") end)
  mg.sleep(0.1)
  return 200, mg.timer.running_count() .. " " .. mg.timer.pending_count()
end)
''' + GET_ROUTE
    g = gateway(lua)
    assert request(g.port, path="/t").body == b"1 0"
    g.wait_log("lua failed to run timer with function defined at ")
    assert "1 lua_max_running_timers are not enough" in g.log()
    assert wait_for(lambda: get(g, "first") == "ran")
    assert get(g, "second") == "nil"


def test_every_ticks_and_stops(gateway):
    lua = '''
local d = mg.shared("t", "1m")
mg.on("init_worker", function()
  assert(mg.timer.every(0.05, function(premature, step) d:incr("ticks", step, 0) end, 1) == 1)
end)
mg.route("=/n", function(req) return 200, mg.timer.pending_count() .. " " .. tostring(d:get("ticks")) end)
''' + GET_ROUTE
    g = gateway(lua)
    assert wait_for(lambda: int(get(g, "ticks") if get(g, "ticks") != "nil" else 0) >= 4)
    assert request(g.port, path="/n").body.startswith(b"1 ")  # the next tick is pending


# ---- a stopping worker ------------------------------------------------------------------------

def test_pending_timers_run_prematurely_on_stop(gateway, tmp_path):
    out = tmp_path / "premature.txt"
    lua = '''
mg.set { shutdown_timeout = 5 }
mg.on("init_worker", function()
  mg.timer.at(100, function(premature, tag)
    local f = io.open(OUT, "w")
    f:write(tostring(premature), " ", tostring(mg.worker.exiting()), " ", tag, " ",
            table.concat({ tostring(mg.timer.at(1, function() end)) }, ""), " ")
    local ok, err = mg.timer.at(1, function() end)
    f:write(tostring(err), " ")
    f:flush()
    mg.sleep(0.3) -- a running timer may finish within shutdown_timeout
    f:write("finished")
    f:close()
  end, "tag")
end)
mg.route("=/x", function(req) return 200, tostring(mg.worker.exiting()) end)
'''.replace("OUT", repr(str(out)).replace("'", '"'))
    g = gateway(lua)
    assert request(g.port, path="/x").body == b"false"
    assert not out.exists()
    t0 = time.time()
    g.signal(signal.SIGQUIT)
    g.proc.wait(10)
    assert out.read_text() == "true true tag nil process exiting finished"
    assert time.time() - t0 < 5


# ---- worker identity ---------------------------------------------------------------------------

def test_worker_ids_two_workers_and_after_reload(gateway):
    lua = '''
mg.workers(2)
mg.route("/", function(req) return 200, mg.worker.id() .. " " .. mg.worker.count() .. " " .. mg.worker.pid() end)
'''
    g = gateway(lua)

    def seen():
        ids, pids = {}, set()
        for _ in range(40):
            i, n, pid = request(g.port, path="/").body.decode().split()
            assert n == "2"
            ids.setdefault(int(i), set()).add(int(pid))
            pids.add(int(pid))
        return ids, pids
    ids, pids = seen()
    assert set(ids) == {0, 1} and all(len(p) == 1 for p in ids.values()), ids
    g.signal(signal.SIGHUP)
    # The new generation serves when both old pids are gone from the answers.
    assert wait_for(lambda: not (seen()[1] & pids), timeout=10)
    ids2, pids2 = seen()
    assert set(ids2) == {0, 1} and all(len(p) == 1 for p in ids2.values()), ids2
    assert not (pids2 & pids)


# ---- log hooks that wait -----------------------------------------------------------------------

def test_waiting_log_hook_does_not_hold_the_next_keepalive_request(gateway):
    lua = '''
local d = mg.shared("t", "1m")
mg.on("log", function(req, res)
  if req.uri ~= "/slow" then return end
  mg.sleep(0.5)
  d:set("logged", req.uri .. " " .. res.status .. " " .. mg.timer.running_count())
end)
mg.on("log", function(req, res) if req.uri == "/slow" then d:set("second", tostring(d:get("logged") ~= nil)) end end)
mg.route("=/slow", function(req) return 201, "slow" end)
mg.route("=/next", function(req) return 200, "next " .. mg.timer.running_count() end)
''' + GET_ROUTE
    g = gateway(lua)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    f = s.makefile("rb")
    from conftest import read_response
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    r1 = read_response(f)
    assert r1.status == 201 and r1.body == b"slow"
    t0 = time.time()
    s.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    r2 = read_response(f)
    took = time.time() - t0
    assert r2.status == 200 and took < 0.2, took
    assert r2.body == b"next 1"  # the detached log hook counts as a running timer
    assert get(g, "logged") == "nil"
    s.close()
    assert wait_for(lambda: get(g, "logged") == "/slow 201 1"), get(g, "logged")
    # The hooks after it ran after it ended.
    assert wait_for(lambda: get(g, "second") == "true")
    assert request(g.port, path="/next").body == b"next 0"


def test_log_hook_may_not_wait_on_its_request(gateway, echo_backend):
    lua = '''
mg.on("log", function(req, res) if req.uri == "/a" then req:subrequest("/b") end end)
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
'''
    g = gateway(lua, backend_port=echo_backend)
    assert request(g.port, path="/a").status == 200
    g.wait_log("API disabled in the context of log: req:subrequest")


def test_waiting_log_hooks_beyond_the_running_limit_are_ended(gateway):
    lua = '''
local d = mg.shared("t", "1m")
mg.set { lua_max_running_timers = 1 }
mg.on("log", function(req, res) mg.sleep(0.3) d:incr("done", 1, 0) end)
mg.route("/", function(req) return 200, "x" end)
''' + GET_ROUTE
    g = gateway(lua)
    request(g.port, path="/1")
    request(g.port, path="/2")
    g.wait_log("a log hook waits but 1 lua_max_running_timers are not enough: it was ended")
    time.sleep(0.5)
    # /1's hook, the two /get's hooks that fit after it ended; /2's was ended.
    assert get(g, "done") in ("1", "2")


# ---- differential: the same Lua under OpenResty ------------------------------------------------

DIFF_BODY = r'''
local out = {}
local function p(...) local t = {} for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end out[#out + 1] = table.concat(t, " ") end
p(pcall(AT, "x", function() end))
p(pcall(AT, 1))
p(pcall(AT, 1, print))
p(pcall(EVERY, 0, function() end))
p(pcall(EVERY, 0.0001, function() end))
p(PENDING(), RUNNING())
p(AT(0, function(premature) SLEEP(0.3) end))
p(AT(0, function(premature) end))
p(AT(0, function(premature) end))
p(PENDING(), RUNNING())
SLEEP(0.1)
p(PENDING(), RUNNING())
p(AT(0.0001, function(premature) end))
p(AT(0.0001, function(premature) end))
p(AT(0.0001, function(premature) end))
RESULT(table.concat(out, "\n"))
'''


def ours(g_factory, settings, body):
    b = body.replace("AT", "mg.timer.at").replace("EVERY", "mg.timer.every").replace("PENDING", "mg.timer.pending_count") \
        .replace("RUNNING", "mg.timer.running_count").replace("SLEEP", "mg.sleep").replace("RESULT(", "return 200, (") \
        .rstrip() + ' .. "\\n"\n'
    g = g_factory("mg.set { %s }\nmg.route(\"=/t\", function(req)\n%s\nend)\n" % (settings, b))
    return g, request(g.port, path="/t").body


def theirs(tmp_path, directives, body):
    b = body.replace("AT", "ngx.timer.at").replace("EVERY", "ngx.timer.every").replace("PENDING", "ngx.timer.pending_count") \
        .replace("RUNNING", "ngx.timer.running_count").replace("SLEEP", "ngx.sleep").replace("RESULT", "ngx.say")
    p, port = start_openresty(tmp_path / "openresty", {"/t": b}, http=directives)
    try:
        return request(port, path="/t").body, (tmp_path / "openresty" / "logs" / "error.log")
    finally:
        stop_openresty(p)


def test_timer_results_and_pending_limit_match_openresty(gateway, tmp_path):
    mine = ours(gateway, "lua_max_pending_timers = 2", DIFF_BODY)[1]
    (tmp_path / "openresty").mkdir()
    other = theirs(tmp_path, "lua_max_pending_timers 2;", DIFF_BODY)[0]
    assert mine == other, (mine, other)
    assert b"nil too many pending timers" in mine


RUNNING_BODY = r'''
local out = {}
AT(0, function() SLEEP(0.3) end)
AT(0.05, function() end)
SLEEP(0.1)
out[#out + 1] = PENDING() .. " " .. RUNNING()
RESULT(table.concat(out, "\n"))
'''


def test_running_limit_matches_openresty(gateway, tmp_path):
    g, mine = ours(gateway, "lua_max_running_timers = 1", RUNNING_BODY)
    (tmp_path / "openresty").mkdir()
    other, log = theirs(tmp_path, "lua_max_running_timers 1;", RUNNING_BODY)
    assert mine == other == b"0 1\n", (mine, other)
    assert "1 lua_max_running_timers are not enough" in log.read_text()
    g.wait_log("1 lua_max_running_timers are not enough")
