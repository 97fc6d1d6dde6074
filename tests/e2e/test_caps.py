"""SPEC 20: member max_conns and the balancer queue, counted across workers.

The backend here is a pre-fork app in miniature: a fixed number of threads accept from one
listening socket, so what the gateway sends beyond them waits in the listen backlog, as with
uWSGI or gunicorn. Each thread counts itself busy from accept() until its connection is closed,
so the highest count it records is the most requests the gateway ever had on it at once.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import MOONGATE, free_port, read_response, request


class ThreadedApp:
    """An SCGI app with `threads` worker threads. `/sleep?ms=N` answers after N ms; the answer
    is `app=NAME seq=K`, K counting the requests it began, in order."""

    def __init__(self, name="a", threads=8):
        self.name = name
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        self.lock = threading.Lock()
        self.busy = 0
        self.max_busy = 0
        self.requests = 0
        self.order = []  # the `tag` query parameter of each request, in the order they began
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.current_thread().mg_done = False
            with self.lock:
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                self.requests += 1
                seq = self.requests
            try:
                self._serve(c, seq)
            except OSError:
                pass
            finally:
                self._done()
                c.close()

    def _done(self):
        t = threading.current_thread()
        if getattr(t, "mg_done", True):
            return
        t.mg_done = True
        with self.lock:
            self.busy -= 1

    def _serve(self, c, seq):
        c.settimeout(10)
        data = b""
        while b":" not in data:
            chunk = c.recv(4096)
            if not chunk:
                return
            data += chunk
        n, _, rest = data.partition(b":")
        need = int(n) + 1
        while len(rest) < need:
            chunk = c.recv(4096)
            if not chunk:
                return
            rest += chunk
        items = rest[:need - 1].split(b"\0")
        env = dict(zip(items[0::2], items[1::2]))
        query = env.get(b"QUERY_STRING", b"").decode()
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "tag" in params:
            with self.lock:
                self.order.append(params["tag"])
        body = rest[need:]
        clen = int(env.get(b"CONTENT_LENGTH", b"0") or 0)
        while len(body) < clen:
            chunk = c.recv(65536)
            if not chunk:
                break
            body += chunk
        time.sleep(int(params.get("ms", "0")) / 1000.0)
        path = env.get(b"REQUEST_URI", b"").decode().split("?")[0]
        # The app is done with the request once its answer is written: it counts itself free
        # just before the last write, which the gateway necessarily reads before it frees the
        # slot, so the count here is never above the gateway's.
        self._done()
        if path == "/redirect":
            c.sendall(b"Status: 200 OK\r\nX-Accel-Redirect: /local\r\n\r\n")
            return
        out = ("app=%s seq=%d len=%d" % (self.name, seq, len(body))).encode()
        if b"VIEW" in env:
            out += b" view=" + env[b"VIEW"]
        c.sendall(b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def apps():
    made = []

    def start(*names, threads=8):
        out = [ThreadedApp(n, threads) for n in names]
        made.extend(out)
        return out

    yield start
    for a in made:
        a.stop()


def status(g):
    return json.loads(request(g.port, path="/status").body)["balancers"][0]


def wait_status(g, pred, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        st = status(g)
        if pred(st) or time.time() > deadline:
            return st
        time.sleep(0.05)


def many(port, paths, timeout=30):
    """Sends the requests at once, each on its own connection; returns the responses."""
    out = [None] * len(paths)

    def one(i):
        try:
            out[i] = request(port, path=paths[i])
        except Exception as e:  # noqa: BLE001 - reported below
            out[i] = e

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in ts:
        t.start()
    deadline = time.time() + timeout
    for t in ts:
        t.join(max(0.1, deadline - time.time()))
    assert not any(t.is_alive() for t in ts), "clients still waiting after %ds" % timeout
    for r in out:
        assert not isinstance(r, Exception), r
    return out


def conf(members, queue=None, method="byrequests", extra=""):
    q = ", queue = %s" % queue if queue else ""
    return '''
mg.workers(2)
mg.balancer("c", { method = "%s"%s, members = { %s } })
mg.route("/", "balancer://c/")
mg.route("=/status", mg.status_handler())
%s
''' % (method, q, ", ".join(members), extra)


def test_two_workers_never_exceed_max_conns(gateway, apps):
    a, b = apps("a", "b")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 3 }' % a.port, '{ "scgi://127.0.0.1:%d", max_conns = 2 }' % b.port],
                     '{ size = 100, timeout = "20s" }'))
    assert len(g.workers()) == 2
    rs = many(g.port, ["/sleep?ms=60"] * 50)
    assert [r.status for r in rs] == [200] * 50
    # The apps have 8 threads each: without the cap the gateway would have given them more.
    assert a.max_busy == 3 and b.max_busy == 2, (a.max_busy, b.max_busy)
    assert a.requests + b.requests == 50
    st = wait_status(g, lambda s: s["queue"]["length"] == 0)
    q = st["queue"]
    # Every request that waited was served; none timed out, none was refused.
    assert q["length"] == 0 and q["timeouts"] == 0 and q["refused"] == 0 and q["unavailable"] == 0 and q["gone"] == 0
    # Five slots for fifty clients: most waited (exactly how many depends on how fast the
    # clients arrived), and every one of them was served.
    assert q["waits"] == q["served"] and 25 <= q["waits"] <= 45, q
    assert all(m["slots_used"] == 0 for m in st["members"])
    assert {m["max_conns"] for m in st["members"]} == {3, 2}


def test_full_queue_and_timeout_give_503_counted_exactly(gateway, apps):
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 2 }' % a.port], '{ size = 5, timeout = "1s" }'))
    rs = many(g.port, ["/sleep?ms=3000"] * 30)
    codes = [r.status for r in rs]
    assert codes.count(200) == 2 and codes.count(503) == 28, codes
    for r in rs:
        if r.status == 503:
            assert r.header("Retry-After") == "1"  # the queue timeout, rounded up to seconds
            assert r.body == b"503 Service Unavailable\n"
    assert a.max_busy == 2 and a.requests == 2
    q = status(g)["queue"]
    # The 5 places were taken over both workers together; those 5 timed out, 23 were refused.
    assert q["waits"] == 5 and q["timeouts"] == 5 and q["refused"] == 23 and q["served"] == 0
    assert q["unavailable"] == 28 == codes.count(503)
    assert q["length"] == 0
    log = g.log()
    assert "every member of balancer c is at its max_conns and its queue is full" in log
    assert "no member of balancer c had a free slot (max_conns) within the queue timeout" in log


def test_no_queue_refuses_at_once(gateway, apps):
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port]))
    t0 = time.time()
    rs = many(g.port, ["/sleep?ms=1500"] * 6)
    codes = sorted(r.status for r in rs)
    assert codes == [200] + [503] * 5
    assert all(r.header("Retry-After") == "1" for r in rs if r.status == 503)
    q = status(g)["queue"]
    assert q["size"] == 0 and q["refused"] == 5 and q["waits"] == 0
    assert "every member of balancer c is at its max_conns and it has no queue" in g.log()
    assert time.time() - t0 < 5


def test_queue_is_fifo_across_workers(gateway, apps):
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port], '{ size = 50, timeout = "20s" }'))
    holder = threading.Thread(target=lambda: request(g.port, path="/sleep?ms=1200&tag=hold"))
    holder.start()
    time.sleep(0.3)
    out = {}
    ts = []
    # Ten waiters arrive 60 ms apart, on fresh connections: the two workers share them.
    for i in range(10):
        t = threading.Thread(target=lambda i=i: out.__setitem__(i, request(g.port, path="/sleep?ms=20&tag=%d" % i)))
        t.start()
        ts.append(t)
        time.sleep(0.06)
    holder.join(10)
    for t in ts:
        t.join(20)
    assert all(out[i].status == 200 for i in range(10))
    assert a.order == ["hold"] + [str(i) for i in range(10)], a.order
    assert a.max_busy == 1


def test_client_leaving_the_queue(gateway, apps):
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port], '{ size = 10, timeout = "20s" }'))
    holder = threading.Thread(target=lambda: request(g.port, path="/sleep?ms=1500&tag=hold"))
    holder.start()
    time.sleep(0.3)
    leavers = []
    for i in range(3):
        s = socket.create_connection(("127.0.0.1", g.port))
        s.sendall(b"GET /sleep?tag=left%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        leavers.append(s)
    st = wait_status(g, lambda s: s["queue"]["length"] == 3)
    assert st["queue"]["length"] == 3 and st["queue"]["waits"] == 3
    for s in leavers:
        s.close()
    st = wait_status(g, lambda s: s["queue"]["gone"] == 3)
    assert st["queue"]["gone"] == 3 and st["queue"]["length"] == 0
    holder.join(10)
    # The slot is free again, and no request of a client that left reached the app.
    t0 = time.time()
    r = request(g.port, path="/sleep?tag=after")
    assert r.status == 200 and time.time() - t0 < 1
    assert a.order == ["hold", "after"]
    st = status(g)
    assert st["queue"]["served"] == 0 and st["members"][0]["slots_used"] == 0


def test_bybusyness_with_caps(gateway, apps):
    a, b = apps("a", "b")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port, '{ "scgi://127.0.0.1:%d", max_conns = 4 }' % b.port],
                     '{ size = 20, timeout = "20s" }', method="bybusyness"))
    rs = many(g.port, ["/sleep?ms=300"] * 12)
    assert all(r.status == 200 for r in rs)
    assert a.max_busy == 1 and b.max_busy == 4
    # The least busy member with a free slot gets each request: b, with 4 slots, takes most.
    assert b.requests > a.requests and a.requests + b.requests == 12
    # Counted over both workers: with b busy on other workers' requests, the idle member a
    # gets the next one.
    hold = many(g.port, ["/sleep?ms=800"] * 4)  # noqa: F841 - fills b (a takes one of them)
    assert a.max_busy == 1 and b.max_busy == 4


def test_slot_released_on_every_path(gateway, apps):
    """max_conns = 1 and no queue: a slot that was not given back shows as a 503."""
    (a,) = apps("a")
    dead = free_port()
    lua = '''
mg.workers(2)
mg.balancer("c", { members = { { "scgi://127.0.0.1:%d", max_conns = 1 }, { "scgi://127.0.0.1:%d", max_conns = 1, lbfactor = 100 } } })
mg.route("/", "balancer://c/", { internal_redirect = "X-Accel-Redirect", timeout = "300ms" })
mg.route("=/local", function(req) return 200, "local" end)
mg.route("=/status", mg.status_handler())
''' % (a.port, dead)

    g = gateway(lua)

    def ok():
        for _ in range(4):  # lands on both workers
            r = request(g.port, path="/sleep")
            assert r.status == 200 and r.body.startswith(b"app=a"), (r.status, r.body, g.log())

    ok()  # the dead member was tried (connect refused) and its slot given back
    # the backend timing out (504)
    assert request(g.port, path="/sleep?ms=700").status == 504
    time.sleep(0.5)  # the app's thread finishes
    ok()
    # an internal redirect
    r = request(g.port, path="/redirect")
    assert r.status == 200 and r.body == b"local"
    ok()
    # the client going away while the app works
    s = socket.create_connection(("127.0.0.1", g.port))
    s.sendall(b"GET /sleep?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.05)
    s.close()
    time.sleep(0.4)
    ok()
    # a request body, read whole before the member is chosen
    r = request(g.port, method="POST", path="/sleep", body=b"x" * 100000)
    assert r.status == 200
    ok()
    st = status(g)
    assert all(m["slots_used"] == 0 for m in st["members"]), st
    assert st["queue"]["refused"] == 0


def test_killed_worker_gives_its_slots_back(gateway, apps):
    (a,) = apps("a")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 2 }' % a.port])
    g = gateway(lua.replace("mg.workers(2)", "mg.workers(1)"))
    (pid,) = g.workers()
    ts = [threading.Thread(target=lambda: request_quiet(g.port, "/sleep?ms=1500")) for _ in range(2)]
    for t in ts:
        t.start()
    st = wait_status(g, lambda s: s["members"][0]["slots_used"] == 2)
    assert st["members"][0]["slots_used"] == 2
    os.kill(pid, signal.SIGKILL)
    g.wait_log("worker %d (slot 0)" % pid)
    deadline = time.time() + 10
    while time.time() < deadline and (not g.workers() or g.workers() == [pid]):
        time.sleep(0.05)
    time.sleep(0.3)
    st = wait_status(g, lambda s: s["members"][0]["slots_used"] == 0)
    assert st["members"][0]["slots_used"] == 0
    rs = many(g.port, ["/sleep?ms=100"] * 2)
    assert [r.status for r in rs] == [200, 200]
    for t in ts:
        t.join(5)


def request_quiet(port, path):
    try:
        request(port, path=path)
    except Exception:  # noqa: BLE001 - the worker is killed under it
        pass


def test_prometheus_families(gateway, apps):
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port], '{ size = 1, timeout = "1s" }'))
    rs = many(g.port, ["/sleep?ms=2500"] * 3)
    assert sorted(r.status for r in rs) == [200, 503, 503]
    text = request(g.port, path="/status?format=prometheus").body.decode()
    m = 'balancer="c",member="scgi://127.0.0.1:%d"' % a.port
    assert "# TYPE moongate_member_max_conns gauge" in text and "moongate_member_max_conns{%s} 1" % m in text
    assert "moongate_member_slots_used{%s} 0" % m in text
    for line in ('moongate_balancer_queue_size{balancer="c"} 1', 'moongate_balancer_queue_length{balancer="c"} 0',
                 'moongate_balancer_queue_waits_total{balancer="c"} 1', 'moongate_balancer_queue_timeouts_total{balancer="c"} 1',
                 'moongate_balancer_queue_refused_total{balancer="c"} 1', 'moongate_balancer_queue_unavailable_total{balancer="c"} 2'):
        assert line in text, (line, text)
    assert "# HELP moongate_balancer_queue_waits_total " in text
    assert "# TYPE moongate_balancer_queue_wait_seconds_total counter" in text
    # The SPEC 20 metrics families (shm/metrics.c) count the same requests.
    for line in ('moongate_queue_length{balancer="c"} 0', 'moongate_queue_requests_total{balancer="c",outcome="timeout"} 1',
                 'moongate_queue_requests_total{balancer="c",outcome="full"} 1',
                 'moongate_queue_requests_total{balancer="c",outcome="served"} 0'):
        assert line in text, (line, text)


def test_caps_config_errors(tmp_path):
    cases = [
        ('{ { "scgi://h:1", max_conns = -1 } }', "", "members[1]: max_conns must be a whole number from 0"),
        ('{ { "scgi://h:1", max_conns = "8" } }', "", "members[1]: max_conns must be a whole number"),
        ('{ { "scgi://h:1", max_conns = 1.5 } }', "", "max_conns must be a whole number"),
        ('{ { "scgi://h:1", max_conns = 2 } }', ", queue = 100", "queue: expected a table"),
        ('{ { "scgi://h:1", max_conns = 2 } }', ", queue = { size = -1 }", "queue.size: expected a whole number"),
        ('{ { "scgi://h:1", max_conns = 2 } }', ", queue = { size = 5, wait = 1 }", 'queue: unknown option "wait"'),
        ('{ { "scgi://h:1", max_conns = 2 } }', ', queue = { timeout = "soon" }', "queue.timeout: cannot read time"),
        ('{ { "scgi://h:1", max_conns = 2 } }', ", queue = { timeout = 0 }", "queue.timeout: must be at least 1ms"),
        ('{ "scgi://h:1" }', ", queue = { size = 5 }", "no member of balancer \"c\" has max_conns"),
    ]
    for members, extra, msg in cases:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.balancer("c", { members = %s%s })\n' % (members, extra))
        p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 1 and "init.lua:3:" in p.stderr and msg in p.stderr, (members, extra, p.stderr)


def test_lua_hook_choice_at_its_cap_is_passed_over(gateway, apps):
    a, b = apps("a", "b")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port, '{ "scgi://127.0.0.1:%d", max_conns = 5 }' % b.port],
               '{ size = 10, timeout = "10s" }').replace('mg.route("/", "balancer://c/")', '''
mg.route("/", "balancer://c/", { hooks = { balancer = function(req, members)
  local m = members[1]
  req.env.VIEW = string.format("%d/%d/%s", m.slots_used, m.max_conns, tostring(m.full))
  return 1
end } })''')
    g = gateway(lua)
    rs = many(g.port, ["/sleep?ms=400"] * 4)
    assert all(r.status == 200 for r in rs)
    # The hook always names a; a has one slot, so the other three went to b.
    assert a.max_busy == 1 and a.requests == 1 and b.requests == 3
    views = sorted(r.body.split(b"view=")[1] for r in rs)
    # What the hook saw of a, over both workers: free for the first, then full (two workers
    # may both look before either takes the slot, so more than one may have seen it free).
    assert views[0] == b"0/1/false" and views[-1] == b"1/1/true" and set(views) <= {b"0/1/false", b"1/1/true"}, views


def test_sticky_member_at_its_cap_and_standby(gateway, apps):
    a, b, s = apps("a", "b", "standby")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 1, route = "ra" }' % a.port,
                '{ "scgi://127.0.0.1:%d", max_conns = 1, route = "rb" }' % b.port,
                '{ "scgi://127.0.0.1:%d", status = "+H" }' % s.port],
               '{ size = 10, timeout = "10s" }').replace('method = "byrequests"', 'method = "byrequests", stickysession = "SID"')
    g = gateway(lua)
    out = {}

    def sticky(i):
        out[i] = request(g.port, path="/sleep?ms=500", headers=[("Cookie", "SID=x.ra")])

    ts = [threading.Thread(target=sticky, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join(10)
    assert all(out[i].status == 200 for i in range(3))
    # The first went to its member; the second to the other member with a free slot; the
    # third waited (a full member is not out: the hot standby did not stand in for it).
    assert a.max_busy == 1 and b.max_busy == 1 and s.requests == 0
    assert a.requests + b.requests == 3 and a.requests >= 1 and b.requests >= 1
    assert status(g)["queue"]["waits"] == 1


def test_streamed_body_waits_with_its_request(gateway, apps):
    (a,) = apps("a")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port], '{ size = 10, timeout = "10s" }')
    lua = lua.replace('mg.route("/", "balancer://c/")', 'mg.route("/", "balancer://c/", { request_buffering = false })')
    g = gateway(lua)
    holder = threading.Thread(target=lambda: request(g.port, path="/sleep?ms=800&tag=hold"))
    holder.start()
    time.sleep(0.2)
    body = os.urandom(300000)
    r = request(g.port, method="POST", path="/sleep?tag=post", body=body)
    holder.join(5)
    assert r.status == 200 and r.body.endswith(b"len=300000"), r.body
    assert a.order == ["hold", "post"] and a.max_busy == 1
    assert status(g)["queue"]["served"] == 1


def test_reload_keeps_the_count(gateway, apps):
    """Old workers finishing their requests and new ones starting count against one max_conns."""
    (a,) = apps("a")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 2 }' % a.port], '{ size = 50, timeout = "20s" }')
    g = gateway(lua)
    before = set(g.workers())
    ts = [threading.Thread(target=lambda: request(g.port, path="/sleep?ms=1500")) for _ in range(2)]
    for t in ts:
        t.start()
    wait_status(g, lambda s: s["members"][0]["slots_used"] == 2)
    g.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and not (set(g.workers()) - before):
        time.sleep(0.05)
    time.sleep(0.3)
    # The new workers see the old workers' two slots taken: these wait for them.
    rs = many(g.port, ["/sleep?ms=100"] * 6)
    for t in ts:
        t.join(10)
    assert all(r.status == 200 for r in rs)
    assert a.max_busy == 2 and a.requests == 8
    st = wait_status(g, lambda s: s["members"][0]["slots_used"] == 0)
    assert st["members"][0]["slots_used"] == 0 and st["queue"]["waits"] >= 2


def test_http2_streams_queue_and_a_reset_one_leaves(gateway, apps):
    import h2.events
    from test_http2 import H2
    (a,) = apps("a")
    lua = conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port], '{ size = 10, timeout = "10s" }')
    g = gateway('mg.listen("127.0.0.1:{PORT}", { http2 = true })\n' + lua.replace("mg.workers(2)", "mg.workers(1)"))
    c = H2(g.port)
    first = c.headers("/sleep?ms=600&tag=first")
    time.sleep(0.2)
    left = c.headers("/sleep?tag=left")
    stay = c.headers("/sleep?tag=stay")
    st = wait_status(g, lambda s: s["queue"]["length"] == 2)
    assert st["queue"]["length"] == 2
    c.conn.reset_stream(left, error_code=8)
    c.flush()
    st = wait_status(g, lambda s: s["queue"]["gone"] == 1)
    assert st["queue"]["gone"] == 1 and st["queue"]["length"] == 1
    assert c.response(first, timeout=5)[0] == 200
    status_, body, _ = c.response(stay, timeout=5)
    assert status_ == 200 and body.startswith(b"app=a")
    c.close()
    assert a.order == ["first", "stay"]
    assert status(g)["queue"]["served"] == 1


def test_slot_free_before_the_client_has_the_whole_answer(gateway, apps):
    """A client that sends its next request the moment it has an answer may reach the other
    worker at once: the slot must already be free (max_conns = 1, no queue: else a 503)."""
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port]))
    codes = []
    for i in range(150):
        if i % 3 == 0:
            codes.append(request(g.port, method="POST", path="/sleep", body=b"x" * 100000).status)
        elif i % 3 == 1:
            codes.append(request(g.port, method="HEAD", path="/sleep").status)
        else:
            codes.append(request(g.port, path="/sleep").status)
    assert codes == [200] * 150, codes
    assert status(g)["queue"]["refused"] == 0


def test_a_slow_upload_holds_no_slot(gateway, apps):
    """The body is read whole before the member is chosen: an upload in progress leaves the
    member's only slot to others."""
    (a,) = apps("a")
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1 }' % a.port]))
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(b"POST /sleep?tag=upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.3)
    for i in range(4):
        r = request(g.port, path="/sleep?tag=get%d" % i)
        assert r.status == 200, r.status
    assert status(g)["members"][0]["slots_used"] == 0
    s.sendall(b"y" * 1000)
    f = s.makefile("rb")
    r = read_response(f)
    f.close()
    s.close()
    assert r.status == 200 and r.body.endswith(b"len=2000")
    assert a.order == ["get0", "get1", "get2", "get3", "upload"]


def test_failover_that_finds_the_rest_full_waits(gateway, apps):
    (b,) = apps("b")
    dead = free_port()
    g = gateway(conf(['{ "scgi://127.0.0.1:%d", max_conns = 1, retry = 0 }' % dead, '{ "scgi://127.0.0.1:%d", max_conns = 1 }' % b.port],
                     '{ size = 10, timeout = "10s" }'))
    holder = threading.Thread(target=lambda: request(g.port, path="/sleep?ms=800&tag=hold"))
    holder.start()
    time.sleep(0.3)
    # The dead member is tried (retry = 0: it is usable again at once), refuses, and the
    # request waits for the live member's slot instead of failing.
    r = request(g.port, path="/sleep?tag=w")
    holder.join(5)
    assert r.status == 200 and r.body.startswith(b"app=b")
    assert b.order == ["hold", "w"] and b.max_busy == 1
    st = status(g)
    assert st["queue"]["served"] >= 1 and st["queue"]["unavailable"] == 0
    assert all(m["slots_used"] == 0 for m in st["members"])
    assert "trying another member of balancer c" in g.log()
