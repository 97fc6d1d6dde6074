"""Balanced gateway: lbmethods, stickiness, failover, retry, standby, health, status."""
import collections
import json
import os
import sys
import threading
import time

import pytest

from conftest import DEMO_APP, Process, free_port, request


@pytest.fixture
def apps():
    """Starts named demo apps; each answers with APP=<name> first."""
    started = []

    def start(*names):
        ports = []
        for name in names:
            port = free_port()
            env = dict(os.environ, DEMO_NAME=name)
            started.append(Process([sys.executable, DEMO_APP, "127.0.0.1:%d" % port], port, env=env))
            ports.append(port)
        return ports

    yield start
    for p in started:
        p.stop()


def app_of(resp):
    first = resp.body.split(b"\n", 1)[0]
    assert first.startswith(b"APP="), resp.body[:100]
    return first[4:].decode()


def members(ports, extra=None):
    extra = extra or {}
    out = []
    for i, port in enumerate(ports):
        opts = extra.get(i, "")
        out.append('{ "scgi://127.0.0.1:%d", %s }' % (port, opts))
    return ",\n    ".join(out)


def test_byrequests_exact_weighted_distribution(gateway, apps):
    ports = apps("a", "b", "c")
    lua = '''
mg.balancer("c", { method = "byrequests", members = {
    %s } })
mg.route("/", "balancer://c/")
''' % members(ports, {0: "lbfactor = 1", 1: "lbfactor = 2", 2: "lbfactor = 3"})
    g = gateway(lua)
    counts = collections.Counter(app_of(request(g.port, path="/x")) for _ in range(6 * 10))
    assert counts == {"a": 10, "b": 20, "c": 30}


def test_bybusyness_avoids_the_slow_member(gateway, apps):
    ports = apps("slow", "fast")
    lua = '''
mg.balancer("c", { method = "bybusyness", members = { %s } })
mg.route("/", "balancer://c/")
''' % members(ports)
    g = gateway(lua)
    # Keep one member busy with a long request, then count where short ones go.
    busy = []

    def hold():
        busy.append(request(g.port, path="/slow?ms=1500"))

    holders = [threading.Thread(target=hold) for _ in range(1)]
    for t in holders:
        t.start()
    time.sleep(0.3)
    seen = collections.Counter(app_of(request(g.port, path="/x")) for _ in range(10))
    for t in holders:
        t.join()
    # The member without a request in flight gets every short request.
    assert busy[0].status == 200
    assert seen["fast"] + seen["slow"] == 10
    assert max(seen.values()) == 10


def test_bytraffic_prefers_fewer_bytes(gateway, apps):
    ports = apps("a", "b")
    lua = 'mg.balancer("c", { method = "bytraffic", members = { %s } })\nmg.route("/", "balancer://c/")\n' % members(ports)
    g = gateway(lua)
    first = app_of(request(g.port, path="/" + "p" * 5000))  # a long path: a large variable dump
    nxt = [app_of(request(g.port, path="/x")) for _ in range(3)]
    assert all(n != first for n in nxt)


def test_sticky_by_cookie_and_query(gateway, apps):
    ports = apps("a", "b")
    lua = '''
mg.balancer("c", { stickysession = "ROUTEID", members = { %s } })
mg.route("/", "balancer://c/")
''' % members(ports, {0: 'route = "ra"', 1: 'route = "rb"'})
    g = gateway(lua)
    for _ in range(4):
        assert app_of(request(g.port, path="/x", headers=[("Cookie", "x=1; ROUTEID=session.rb")])) == "b"
        assert app_of(request(g.port, path="/x?ROUTEID=foo.ra")) == "a"


def test_failover_and_retry(gateway, apps):
    ports = apps("alive")
    dead = free_port()
    lua = '''
mg.balancer("c", { members = { { "scgi://127.0.0.1:%d", retry = 1 }, { "scgi://127.0.0.1:%d" } } })
mg.route("/", "balancer://c/")
''' % (dead, ports[0])
    g = gateway(lua)
    assert all(request(g.port, path="/x").status == 200 for _ in range(10))
    g.wait_log("trying another member of balancer c")
    # The dead member is in error for `retry` seconds; a backend that comes up there is used
    # again after that.
    back = Process([sys.executable, DEMO_APP, "127.0.0.1:%d" % dead], dead, env=dict(os.environ, DEMO_NAME="revived"))
    try:
        time.sleep(1.2)
        seen = {app_of(request(g.port, path="/x")) for _ in range(6)}
        assert seen == {"alive", "revived"}
    finally:
        back.stop()


def test_hot_standby_and_no_usable_member(gateway, apps):
    ports = apps("main", "standby")
    lua = '''
mg.balancer("c", { members = { { "scgi://127.0.0.1:%d" }, { "scgi://127.0.0.1:%d", status = "+H" } } })
mg.balancer("none", { members = { { "scgi://127.0.0.1:%d", status = "+D" } } })
mg.route("/", "balancer://c/")
mg.route("/none/", "balancer://none/")
''' % (ports[0], ports[1], ports[0])
    g = gateway(lua)
    assert {app_of(request(g.port, path="/x")) for _ in range(5)} == {"main"}
    assert request(g.port, path="/none/x").status == 503
    g.wait_log("no usable member in balancer none")


def test_standby_used_when_main_is_down(gateway, apps):
    ports = apps("standby")
    dead = free_port()
    lua = '''
mg.balancer("c", { members = { { "scgi://127.0.0.1:%d" }, { "scgi://127.0.0.1:%d", status = "+H" } } })
mg.route("/", "balancer://c/")
''' % (dead, ports[0])
    g = gateway(lua)
    assert [app_of(request(g.port, path="/x")) for _ in range(3)] == ["standby"] * 3


def test_lua_method_and_balancer_hook(gateway, apps):
    ports = apps("a", "b")
    lua = '''
mg.balancer("c", { method = function(req, members)
    for _, m in ipairs(members) do
      if m.name:find(req.headers["X-Want"] or "none", 1, true) then return m end
    end
    return 1
  end, members = { %s } })
mg.route("/", "balancer://c/", { hooks = { balancer = function(req, members)
  if req.uri == "/forced" then return #members end
end } })
''' % members(ports)
    g = gateway(lua)
    assert app_of(request(g.port, path="/x", headers=[("X-Want", str(ports[1]))])) == "b"
    assert app_of(request(g.port, path="/x")) == "a"
    assert app_of(request(g.port, path="/forced")) == "b"


def test_health_checks_take_member_out_and_back(gateway, apps, tmp_path):
    ports = apps("healthy")
    flaky_port = free_port()
    lua = '''
mg.balancer("c", { health = { uri = "/status/200", interval = "100ms", timeout = "200ms", fails = 2, passes = 2 },
  members = { { "scgi://127.0.0.1:%d" }, { "scgi://127.0.0.1:%d" } } })
mg.route("/", "balancer://c/")
mg.route("/status", mg.status_handler())
''' % (ports[0], flaky_port)
    g = gateway(lua)
    g.wait_log("health: member scgi://127.0.0.1:%d of balancer c taken out after 2 failed checks" % flaky_port)
    st = json.loads(request(g.port, path="/status").body)
    states = {m["url"]: m["status"] for m in st["balancers"][0]["members"]}
    assert states["scgi://127.0.0.1:%d" % flaky_port] == "down"
    # While it is out, no request is even tried on it.
    assert {app_of(request(g.port, path="/x")) for _ in range(4)} == {"healthy"}
    flaky = Process([sys.executable, DEMO_APP, "127.0.0.1:%d" % flaky_port], flaky_port, env=dict(os.environ, DEMO_NAME="flaky"))
    try:
        g.wait_log("health: member scgi://127.0.0.1:%d of balancer c is back" % flaky_port)
        assert {app_of(request(g.port, path="/x")) for _ in range(4)} == {"healthy", "flaky"}
    finally:
        flaky.stop()


def test_status_json_and_prometheus(gateway, apps):
    ports = apps("a", "b")
    lua = '''
mg.workers(2)
mg.balancer("c", { members = { %s } })
mg.route("/", "balancer://c/")
mg.route("=/status", mg.status_handler())
''' % members(ports, {0: 'route = "r1", lbfactor = 3'})
    g = gateway(lua)
    for _ in range(8):
        assert request(g.port, path="/x").status == 200
    st = json.loads(request(g.port, path="/status").body)
    b = st["balancers"][0]
    assert b["name"] == "c" and b["method"] == "byrequests"
    ms = {m["url"]: m for m in b["members"]}
    m1 = ms["scgi://127.0.0.1:%d" % ports[0]]
    assert m1["route"] == "r1" and m1["lbfactor"] == 3 and m1["status"] == "ok"
    # Counted in every worker, summed in one place.
    assert sum(m["requests"] for m in b["members"]) == 8
    assert all(m["bytes"] > 0 and m["inflight"] == 0 and m["errors"] == 0 for m in b["members"])
    prom = request(g.port, path="/status?format=prometheus")
    assert prom.header("Content-Type").startswith("text/plain; version=0.0.4")
    text = prom.body.decode()
    assert "# TYPE moongate_member_requests_total counter" in text
    total = sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("moongate_member_requests_total{"))
    assert total == 8
    assert 'moongate_member_lbfactor{balancer="c",member="scgi://127.0.0.1:%d"} 3' % ports[0] in text


def test_balancer_config_errors(tmp_path):
    import subprocess
    from conftest import MOONGATE
    cases = [
        ('mg.balancer("c", { members = {} })', "members must be a non-empty list"),
        ('mg.balancer("c", { members = { { "scgi://h:1", lbfactor = 0 } } })', "lbfactor must be a whole number from 1 to 100"),
        ('mg.balancer("c", { method = "random", members = { "scgi://h:1" } })', "method must be byrequests"),
        ('mg.balancer("c", { members = { { "scgi://h:1", status = "X" } } })', "status must be flags"),
        ('mg.balancer("c", { members = { "scgi://h:1" }, helth = {} })', 'unknown option "helth"'),
    ]
    for lua, msg in cases:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n%s\n' % lua)
        p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 1 and "init.lua:3:" in p.stderr and msg in p.stderr, (lua, p.stderr)


def test_counters_carry_over_reload(gateway, apps):
    import signal as sig
    ports = apps("a", "b")
    base = 'mg.balancer("c", { members = { %s } })\nmg.route("/", "balancer://c/")\nmg.route("=/status", mg.status_handler())\n'
    g = gateway(base % members(ports))
    for _ in range(6):
        request(g.port, path="/x")
    def counts():
        st = json.loads(request(g.port, path="/status").body)
        return {m["url"]: m["requests"] for m in st["balancers"][0]["members"]}
    before = counts()
    assert sum(before.values()) == 6
    # Reload with member b replaced by a new URL: a's counter carries over, the new one starts at 0.
    new_port = free_port()
    with open(g.config, "w") as f:
        f.write('local mg = require "moongate"\nmg.listen("127.0.0.1:%d")\n' % g.port +
                base % ('{ "scgi://127.0.0.1:%d" }, { "scgi://127.0.0.1:%d" }' % (ports[0], new_port)))
    g.signal(sig.SIGHUP)
    # A reload retires the old workers once the new ones accept, so for a moment either may
    # answer: the counts are read from the first answer of the new configuration.
    deadline = time.time() + 5
    after = counts()
    while time.time() < deadline and "scgi://127.0.0.1:%d" % new_port not in after:
        time.sleep(0.1)
        after = counts()
    a = "scgi://127.0.0.1:%d" % ports[0]
    assert after[a] == before[a]
    assert after["scgi://127.0.0.1:%d" % new_port] == 0


def test_member_timeout_overrides_the_route(gateway, apps):
    """BalancerMember timeout= (Apache): a member's own inactivity limit gives 504 sooner than
    the route's; the other member keeps the route's."""
    ports = apps("quick", "patient")
    lua = '''
mg.balancer("t", { members = {
    %s } })
mg.route("/", "balancer://t/", { timeout = 5 })
''' % members(ports, {0: 'route = "q", timeout = "300ms"', 1: 'route = "p"'})
    g = gateway(lua.replace("mg.balancer(\"t\", {", "mg.balancer(\"t\", { stickysession = \"R\","))
    t0 = time.time()
    r = request(g.port, path="/slow?ms=1500&R=x.q")
    assert r.status == 504 and time.time() - t0 < 1.4
    r = request(g.port, path="/slow?ms=800&R=x.p")
    assert r.status == 200 and r.body == b"slow\n"
