"""SPEC 20: passive health (outlier ejection) and retries with a budget, counted at the backends.

Each backend is a small SCGI server in this process whose behaviour a test switches (ok, a
status, hang, close) and which counts what it received, so every assertion is about what a
backend saw or what a client got.
"""
import json
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import MOONGATE, request

STARTED = []


@pytest.fixture(autouse=True)
def stop_backends():
    """Every backend a test started stops listening when the test ends."""
    yield
    while STARTED:
        STARTED.pop().stop()


class Backend:
    """An SCGI backend on loopback: answers by `mode`, counts requests, keeps their bodies."""

    def __init__(self, name, mode="ok"):
        self.name, self.mode = name, mode
        self.count = 0
        self.methods = []
        self.bodies = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = "scgi://127.0.0.1:%d" % self.port
        STARTED.append(self)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read(self, conn):
        f = conn.makefile("rb")
        length = b""
        while True:
            c = f.read(1)
            if not c:
                return None, None
            if c == b":":
                break
            length += c
        head = f.read(int(length) + 1)
        items = head[:-1].split(b"\0")
        env = {items[i].decode("latin-1"): items[i + 1].decode("latin-1") for i in range(0, len(items) - 1, 2)}
        body = f.read(int(env.get("CONTENT_LENGTH") or "0"))
        return env, body

    def _handle(self, conn):
        try:
            env, body = self._read(conn)
            if env is None:
                return
            with self.lock:
                self.count += 1
                self.methods.append(env.get("REQUEST_METHOD"))
                self.bodies.append(body)
                mode = self.mode
            if mode == "ok":
                conn.sendall(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nAPP=" + self.name.encode() + b"\nBODY=" + body)
            elif mode == "hang":
                conn.settimeout(20)
                try:
                    conn.recv(1)  # until the gateway gives up and closes
                except OSError:
                    pass
            elif mode == "close":
                pass
            else:
                conn.sendall(("Status: %s Bad\r\nContent-Type: text/plain\r\nX-From-Failed: %s\r\n\r\nfailed %s\n"
                              % (mode, self.name, self.name)).encode())
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.sock.close()


def backends(*specs):
    return [Backend(name, mode) for name, mode in specs]


def members(bs):
    return ", ".join('"%s"' % b.url for b in bs)


def status(g):
    return json.loads(request(g.port, path="/status").body)["balancers"][0]


def member_state(g, b):
    return next(m for m in status(g)["members"] if m["url"] == b.url)


def app(resp):
    m = re.match(rb"APP=(\w+)", resp.body)
    return m.group(1).decode() if m else None


CONF = '''
mg.balancer("c", { members = { %s }, %s })
mg.route("/", "balancer://c/", { %s })
mg.route("=/status", mg.status_handler())
'''


def conf(bs, opts, route=""):
    return CONF % (members(bs), opts, route)


# ---- passive health ---------------------------------------------------------------------------

def test_ejection_after_consecutive_failures(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 3, eject = "30s" }'))
    got = [request(g.port, path="/x").status for _ in range(20)]
    # byrequests alternates: a answers 503 three times, then it is out and b takes the rest.
    assert a.count == 3, a.count
    assert b.count == 17
    assert got.count(503) == 3 and got.count(200) == 17
    st = member_state(g, a)
    assert st["status"] == "ejected" and st["ejections"] == 1 and 25000 < st["ejected_ms"] <= 30000, st
    assert member_state(g, b)["status"] == "ok"
    g.wait_log("passive health: member %s of balancer c ejected for 30000 ms after 3 failures in a row (the last: status 503)" % a.url)


def test_a_success_restarts_the_count(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 3 }'))
    for _ in range(4):  # a: 503, 503
        request(g.port, path="/x")
    a.mode = "ok"
    for _ in range(2):  # a: 200 (the count restarts)
        request(g.port, path="/x")
    a.mode = "503"
    for _ in range(4):  # a: 503, 503: two in a row, not three
        request(g.port, path="/x")
    assert member_state(g, a)["status"] == "ok"
    assert a.count == 5
    for _ in range(2):  # the third in a row
        request(g.port, path="/x")
    assert member_state(g, a)["status"] == "ejected"


def test_failures_outside_the_window_do_not_add_up(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 2, window = "1s" }'))
    request(g.port, path="/x")  # a: 503
    request(g.port, path="/x")
    time.sleep(1.3)
    request(g.port, path="/x")  # a: 503, but the first is out of the window
    assert member_state(g, a)["status"] == "ok"
    request(g.port, path="/x")
    request(g.port, path="/x")  # a: 503, the second within the window
    assert member_state(g, a)["status"] == "ejected"


def test_recovery_and_doubling(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 1, eject = "1s" }'))
    request(g.port, path="/x")  # a fails: out for 1 s
    assert member_state(g, a)["status"] == "ejected"
    seen = a.count
    for _ in range(6):
        request(g.port, path="/x")
    assert a.count == seen  # nothing reaches it while it is out
    time.sleep(1.3)
    a.mode = "ok"
    apps = [app(request(g.port, path="/x")) for _ in range(4)]
    assert "a" in apps, apps  # back in the rotation
    g.wait_log("passive health: member %s of balancer c is back after its ejection" % a.url)
    # A second ejection within 10 minutes lasts twice as long.
    a.mode = "503"
    for _ in range(3):
        request(g.port, path="/x")
        if member_state(g, a)["status"] == "ejected":
            break
    t0 = time.time()
    g.wait_log("ejected for 2000 ms after 1 failures")
    st = member_state(g, a)
    assert st["ejections"] == 2 and 1000 < st["ejected_ms"] <= 2000, st
    time.sleep(max(0, 1.3 - (time.time() - t0)))
    assert member_state(g, a)["status"] == "ejected"  # still out past 1 s
    time.sleep(max(0, 2.2 - (time.time() - t0)))
    assert member_state(g, a)["status"] == "ok"


def test_doubling_is_capped_at_ten_times(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 1, eject = "250ms" }'))
    for _ in range(5):
        deadline = time.time() + 5
        while member_state(g, a)["status"] != "ejected" and time.time() < deadline:
            request(g.port, path="/x")
        while member_state(g, a)["status"] == "ejected" and time.time() < deadline:
            time.sleep(0.05)
    found = [int(x) for x in re.findall(r"ejected for (\d+) ms", g.log())]
    # 1, 2, 4, 8 times, then 10 times at most (the unit test goes on past it).
    assert found == [250, 500, 1000, 2000, 2500], found


def test_max_ejected_is_respected(gateway):
    bs = backends(("a", "503"), ("b", "503"), ("c", "503"), ("d", "503"))
    g = gateway(conf(bs, 'passive = { fails = 2, max_ejected = "50%" }'))
    for _ in range(40):
        assert request(g.port, path="/x").status == 503
    st = status(g)
    states = [m["status"] for m in st["members"]]
    assert states.count("ejected") == 2, states
    assert sum(m["ejections"] for m in st["members"]) == 2
    # The two still in keep getting requests: 40 in all, 2 each to the ejected ones.
    counts = sorted(b.count for b in bs)
    assert counts[:2] == [2, 2] and sum(counts) == 40, counts


def test_max_ejected_as_a_count(gateway):
    bs = backends(("a", "503"), ("b", "503"), ("c", "ok"))
    g = gateway(conf(bs, 'passive = { fails = 1, max_ejected = 1 }'))
    for _ in range(12):
        request(g.port, path="/x")
    states = [m["status"] for m in status(g)["members"]]
    assert states.count("ejected") == 1, states


def test_ejection_shared_across_workers(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway('mg.workers(2)\nmg.route("=/pid", function() return 200, tostring(mg.worker.pid()) end)\n'
                + conf([a, b], 'passive = { fails = 4, eject = "30s" }'))
    pids = set()
    for _ in range(60):
        request(g.port, path="/x")
        pids.add(request(g.port, path="/pid").body)
    assert len(pids) == 2, pids  # both workers served
    # Counted per worker, a would take up to 7 failures (3 in one, 4 in the other); shared: 4,
    # and once it is out no worker sends it anything.
    assert a.count == 4, a.count
    assert b.count == 56
    assert g.log().count("ejected for") == 1


def test_max_ejected_exact_under_concurrency_in_two_workers(gateway):
    bs = backends(("a", "503"), ("b", "503"), ("c", "503"), ("d", "503"))
    g = gateway('mg.workers(2)\n' + conf(bs, 'passive = { fails = 1, max_ejected = "50%" }'))

    def client():
        for _ in range(20):
            request(g.port, path="/x")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    st = status(g)
    assert [m["status"] for m in st["members"]].count("ejected") == 2
    assert sum(m["ejections"] for m in st["members"]) == 2, st
    assert g.log().count("ejected for") == 2


def test_timeouts_count_as_failures(gateway):
    a, b = backends(("a", "hang"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 2 }', 'timeout = 0.3'))
    got = [request(g.port, path="/x").status for _ in range(8)]
    assert got.count(504) == 2 and a.count == 2, (got, a.count)
    g.wait_log("ejected for 30000 ms after 2 failures in a row (the last: a timeout)")


def test_timeouts_false_and_other_statuses(gateway):
    a, b, c = backends(("a", "hang"), ("b", "500"), ("c", "ok"))
    g = gateway(conf([a, b, c], 'passive = { fails = 1, timeouts = false, max_ejected = "100%" }', 'timeout = 0.3'))
    for _ in range(6):
        request(g.port, path="/x")
    states = {m["url"]: m["status"] for m in status(g)["members"]}
    # A timeout does not count, nor a 500 (not in statuses).
    assert states == {a.url: "ok", b.url: "ok", c.url: "ok"}


def test_a_cut_response_counts_as_502(gateway):
    a, b = backends(("a", "close"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 2 }'))
    got = [request(g.port, path="/x").status for _ in range(8)]
    assert got.count(502) == 2 and a.count == 2, got


def test_no_passive_no_ejection(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'maxattempts = 2'))
    for _ in range(20):
        request(g.port, path="/x")
    assert a.count == 10
    st = member_state(g, a)
    assert st["status"] == "ok" and st["ejections"] == 0


# ---- retries ------------------------------------------------------------------------------------

def test_retries_land_on_the_other_member(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    # budget = "100%": every request may be retried (the default 20 % would stop at 3 a second).
    g = gateway(conf([a, b], 'retries = { tries = 2, budget = "100%" }'))
    for _ in range(10):
        r = request(g.port, path="/x")
        # The 503 was discarded whole: nothing of a's answer reached the client.
        assert r.status == 200 and app(r) == "b" and r.header("X-From-Failed") is None, (r.status, r.body)
    assert a.count == 5 and b.count == 10
    st = status(g)
    assert st["retries"] == 5 and st["retries_refused"] == 0
    g.wait_log("backend 127.0.0.1:%d answered 503; retrying GET on another member of balancer c" % a.port)


def test_retry_on_502_and_timeout(gateway):
    a, b, c = backends(("a", "close"), ("b", "hang"), ("c", "ok"))
    g = gateway(conf([a, b, c], 'retries = { tries = 3, on = { "502", "timeout" } }', 'timeout = 0.3'))
    for _ in range(3):
        r = request(g.port, path="/x")
        assert r.status == 200 and app(r) == "c"
    assert a.count >= 1 and b.count >= 1 and c.count == 3


def test_tries_bounds_the_attempts(gateway):
    a, b, c = backends(("a", "503"), ("b", "503"), ("c", "503"))
    g = gateway(conf([a, b, c], 'retries = { tries = 2 }'))
    r = request(g.port, path="/x")
    assert r.status == 503
    assert a.count + b.count + c.count == 2
    # The last answer is the client's: the backend's own 503.
    assert r.header("X-From-Failed") is not None


def test_without_another_member_the_answer_stands(gateway):
    a, = backends(("a", "503"))
    g = gateway(conf([a], 'retries = { tries = 3 }'))
    r = request(g.port, path="/x")
    assert r.status == 503 and r.header("X-From-Failed") == "a" and a.count == 1
    assert status(g)["retries"] == 0


def test_post_is_not_retried_unless_listed(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'retries = { tries = 2 }'))
    got = [request(g.port, "POST", "/x", body=b"payload").status for _ in range(4)]
    assert got == [503, 200, 503, 200] and a.count == 2 and b.count == 2
    # byrequests alternates a, b: HEAD and PUT meet a; HEAD is listed by default, PUT is not.
    assert request(g.port, "HEAD", "/x").status == 200
    assert request(g.port, "OPTIONS", "/x").status == 200
    assert request(g.port, "PUT", "/x", body=b"x").status == 503
    assert request(g.port, "DELETE", "/x").status == 200
    assert a.methods == ["POST", "POST", "HEAD", "PUT"]
    assert b.methods == ["POST", "POST", "HEAD", "OPTIONS", "DELETE"]


def test_post_retried_when_listed_with_its_buffered_body(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'retries = { tries = 2, methods = { "POST" } }'))
    body = b"0123456789" * 10000  # 100 kB: buffered to a temporary file, sent again from it
    for _ in range(2):
        r = request(g.port, "POST", "/x", body=body)
        assert r.status == 200 and r.body.endswith(b"BODY=" + body)
    assert a.count == 1 and b.count == 2
    assert a.bodies[0] == body and b.bodies == [body, body]
    small = request(g.port, "POST", "/x", body=b"small")  # a again: from memory
    assert small.status == 200 and small.body.endswith(b"BODY=small")


def test_a_streamed_body_is_never_retried(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'retries = { tries = 2, methods = { "POST", "GET" } }', 'request_buffering = false'))
    got = [request(g.port, "POST", "/x", body=b"streamed").status for _ in range(4)]
    assert got == [503, 200, 503, 200], got
    assert a.count == 2 and b.count == 2
    # A GET without a body has nothing to stream: it is retried on the same route.
    assert request(g.port, path="/x").status == 200
    assert status(g)["retries"] == 1


def test_a_body_a_hook_read_is_retried_without_request_buffering(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'retries = { methods = { "POST" } }',
                     'request_buffering = false, hooks = { access = function(req) req:read_body() end }'))
    r = request(g.port, "POST", "/x", body=b"held by the hook")
    assert r.status == 200 and r.body.endswith(b"BODY=held by the hook")
    assert a.bodies == [b"held by the hook"] and b.bodies == [b"held by the hook"]


def test_retry_over_http2(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway('mg.listen("127.0.0.1:{PORT}", { http2 = true })\n' + conf([a, b], 'retries = { methods = { "GET", "POST" } }'))
    for body in (None, "h2 body"):
        args = ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                "http://127.0.0.1:%d/x" % g.port]
        if body:
            args[1:1] = ["--data-binary", body]
        out = subprocess.run(args, capture_output=True, timeout=20).stdout.decode()
        assert out.endswith("200 2"), out
        assert "APP=b" in out and "failed a" not in out
    assert a.count == 1 and b.count == 2
    assert b.bodies[1] == b"h2 body"


def test_intercept_errors_see_the_last_answer_only(gateway):
    a, b = backends(("a", "503"), ("b", "503"))
    lua = '''
mg.balancer("c", { members = { "%s", "%s" }, retries = true })
mg.route("/", "balancer://c/", { intercept_errors = true, error_pages = { [503] = "/sorry" } })
mg.route("=/sorry", function() return 503, "sorry\\n" end)
''' % (a.url, b.url)
    g = gateway(lua)
    r = request(g.port, path="/x")
    assert r.status == 503 and r.body == b"sorry\n", r.body
    assert a.count == 1 and b.count == 1  # retried once, then the page for the last 503


def test_the_return_is_logged_without_traffic(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 1, eject = "500ms" }'))
    request(g.port, path="/x")
    g.wait_log("ejected for 500 ms")
    g.wait_log("passive health: member %s of balancer c is back after its ejection" % a.url, timeout=3)
    assert a.count == 1


def test_connect_failures_fail_over_unless_left_out(gateway):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    b, = backends(("b", "ok"))
    lua = '''
mg.balancer("on", { members = { "scgi://127.0.0.1:%d", "%s" }, retries = { tries = 2 } })
mg.balancer("off", { members = { "scgi://127.0.0.1:%d", "%s" }, retries = { on = { "503" } } })
mg.route("/on/", "balancer://on/")
mg.route("/off/", "balancer://off/")
''' % (port, b.url, port, b.url)
    g = gateway(lua)
    assert request(g.port, path="/on/x").status == 200
    assert request(g.port, path="/off/x").status == 503
    assert b.count == 1


def test_a_connect_timeout_fails_over(gateway):
    # A listener whose accept queue is full (backlog 0, one connection waiting) lets further
    # connects hang: on loopback, that is a connect timeout.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    b, = backends(("b", "ok"))
    lua = '''
mg.balancer("on", { members = { "scgi://127.0.0.1:%d", "%s" }, retries = true })
mg.balancer("off", { members = { "scgi://127.0.0.1:%d", "%s" }, retries = { on = { "503" } } })
mg.route("/on/", "balancer://on/", { connect_timeout = 0.3 })
mg.route("/off/", "balancer://off/", { connect_timeout = 0.3 })
''' % (port, b.url, port, b.url)
    g = gateway(lua)
    try:
        t0 = time.time()
        r = request(g.port, path="/on/x")
        assert r.status == 200 and app(r) == "b" and time.time() - t0 >= 0.25
        assert request(g.port, path="/off/x").status == 503
        g.wait_log("connect() to 127.0.0.1:%d failed: Connection timed out; trying another member of balancer on" % port)
        assert b.count == 1
    finally:
        filler.close()
        full.close()


def test_the_budget_limits_retries_under_a_burst(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'retries = { tries = 2, budget = "20%" }'))
    results = []
    lock = threading.Lock()

    def client():
        for _ in range(15):
            s = request(g.port, path="/x").status
            with lock:
                results.append(s)

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.time() - t0
    assert len(results) == 120
    st = status(g)
    retries, refused = st["retries"], st["retries_refused"]
    # Every request that met a (half of them) wanted a retry: each was made or refused.
    assert a.count == 60 and retries + refused == 60, (a.count, retries, refused)
    assert results.count(503) == refused and b.count == 60 + retries
    # 20 % of the requests, plus at most 3 in each second the burst touched.
    assert 3 <= retries <= 0.2 * 120 + 3 * (int(elapsed) + 2), (retries, elapsed)
    assert refused > 0


def test_retries_and_ejection_together(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 2 }, retries = { tries = 2 }'))
    got = [request(g.port, path="/x").status for _ in range(10)]
    assert got == [200] * 10
    assert a.count == 2 and b.count == 10
    assert member_state(g, a)["status"] == "ejected"


# ---- status page, configuration ---------------------------------------------------------------------

def test_prometheus_families(gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 1 }, retries = { tries = 2 }'))
    for _ in range(4):
        request(g.port, path="/x")
    text = request(g.port, path="/status?format=prometheus").body.decode()
    for fam, typ in (("member_ejections_total", "counter"), ("member_ejected", "gauge"),
                     ("balancer_retries_total", "counter"), ("balancer_retries_refused_total", "counter")):
        assert "# HELP moongate_%s " % fam in text and "# TYPE moongate_%s %s\n" % (fam, typ) in text
    assert 'moongate_member_ejections_total{balancer="c",member="%s"} 1\n' % a.url in text
    assert 'moongate_member_ejected{balancer="c",member="%s"} 1\n' % a.url in text
    assert 'moongate_member_ejected{balancer="c",member="%s"} 0\n' % b.url in text
    assert 'moongate_balancer_retries_total{balancer="c"} 1\n' in text
    # The SPEC 20 metrics families (shm/metrics.c) say the same.
    assert 'moongate_ejections_total{balancer="c",member="%s"} 1\n' % a.url in text
    assert 'moongate_retries_total{balancer="c"} 1\n' in text


def test_state_kept_across_reload(gateway):
    import signal as sig
    a, b = backends(("a", "503"), ("b", "ok"))
    g = gateway(conf([a, b], 'passive = { fails = 1 }'))
    for _ in range(2):
        request(g.port, path="/x")
    assert member_state(g, a)["status"] == "ejected"
    with open(g.config, "a") as f:
        f.write("\n-- reloaded\n")
    g.signal(sig.SIGHUP)
    g.wait_log("reload")
    time.sleep(1.0)
    for _ in range(6):
        request(g.port, path="/x")
    assert a.count == 1 and member_state(g, a)["status"] == "ejected"


def test_config_errors(tmp_path):
    cases = [
        ('passive = { fails = 0 }', "passive.fails: expected a whole number from 1 to 1000, got 0"),
        ('passive = { falis = 3 }', 'passive: unknown option "falis"'),
        ('passive = { window = "soon" }', 'passive.window: cannot read time "soon"'),
        ('passive = { statuses = { 200 } }', "passive.statuses[1]: expected a whole number from 400 to 599, got 200"),
        ('passive = { statuses = 503 }', "passive.statuses: expected a list of statuses like { 502, 503, 504 }, got number"),
        ('passive = { max_ejected = "150%" }', 'passive.max_ejected: expected a percentage like "50%"'),
        ('passive = { timeouts = "yes" }', "passive.timeouts: expected true or false"),
        ('passive = { eject = 0 }', "passive.eject: must be longer than 0"),
        ('passive = 5', "passive: expected a table"),
        ('retries = { on = { "connect", "5xx" } }', 'retries.on[2]: expected "connect", "timeout" or a status from 400 to 599, got 5xx'),
        ('retries = { tries = 0 }', "retries.tries: expected a whole number from 1 to 100, got 0"),
        ('retries = { methods = { "get" } }', 'retries.methods[1]: expected a method in capitals like "GET", got get'),
        ('retries = { budget = 20 }', 'retries.budget: expected a percentage like "20%", got 20'),
        ('retries = { budget = "20%", tires = 2 }', 'retries: unknown option "tires"'),
    ]
    for opt, msg in cases:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n'
                       'mg.balancer("c", { members = { "scgi://127.0.0.1:1" }, %s })\n' % opt)
        p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 1 and "init.lua:3: " + msg in p.stderr, (opt, p.stderr)
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n'
                   'mg.balancer("c", { members = { "scgi://127.0.0.1:1" }, passive = true, retries = true })\n')
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_documented_examples_load(tmp_path):
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    blocks = []
    for doc, marker in (("balancer.md", "mg.balancer(\"somecluster\""), ("deploying.md", "mg.balancer(\"app\"")):
        text = open(os.path.join(root, "docs", doc)).read()
        block = next(b for b in re.findall(r"```lua\n(.*?)```", text, re.S) if marker in b)
        blocks.append(block)
    for block in blocks:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n' + block)
        p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 0, (block, p.stderr)


def test_import_apache_failonstatus_and_failontimeout(tmp_path, gateway):
    a, b = backends(("a", "503"), ("b", "ok"))
    conf = tmp_path / "apache.conf"
    conf.write_text('''Listen 127.0.0.1:8080
<Proxy "balancer://cluster">
    BalancerMember "%s"
    BalancerMember "%s"
    ProxySet failonstatus=502,503 failontimeout=On
</Proxy>
ProxyPass "/app/" "balancer://cluster/"
''' % (a.url, b.url))
    p = subprocess.run([MOONGATE, "import-apache", str(conf)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'passive = { fails = 1, statuses = { 502, 503 }, timeouts = true, eject = 60, max_ejected = "100%" },' in p.stdout
    # The output runs: the member that answered 503 is out after its first.
    lua = p.stdout.replace('mg.listen("127.0.0.1:8080")', 'mg.listen("127.0.0.1:{PORT}")')
    g = gateway(lua + '\nmg.route("=/status", mg.status_handler())\n')
    got = [request(g.port, path="/app/x").status for _ in range(6)]
    assert got == [503, 200, 200, 200, 200, 200] and a.count == 1, got
    # Bad values are named, not translated.
    conf.write_text('Listen 127.0.0.1:8080\n<Proxy "balancer://c">\nBalancerMember "%s"\n'
                    'ProxySet failonstatus=200,abc failontimeout=maybe\n</Proxy>\nProxyPass "/" "balancer://c/"\n' % a.url)
    p = subprocess.run([MOONGATE, "import-apache", str(conf)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 3 and "failonstatus 200,abc" in p.stdout + p.stderr and "failontimeout maybe" in p.stdout + p.stderr
