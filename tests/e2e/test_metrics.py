"""Metrics (SPEC 20): mg.status_handler()'s Prometheus families, summed over two workers, read
with Debian's prometheus_client parser; histogram invariants; HELP/TYPE on every family;
connections by protocol; Lua time per phase; the JSON status; reloads; load errors."""
import json
import signal
import socket
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from conftest import MOONGATE, request

LUA = '''
mg.workers(2)
mg.balancer("pool", { members = { "scgi://127.0.0.1:{BACKEND}" } })
mg.route("=/status", mg.status_handler())
mg.route("/app/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("/bal/", "balancer://pool/")
mg.route("/lua/", function(req)
  local what = req.uri:match("^/lua/(%w+)")
  if what == "missing" then ngx.status = 404; ngx.say("no") return end
  if what == "moved" then return ngx.redirect("/app/x") end
  if what == "fail" then error("on purpose") end
  if what == "slow" then mg.sleep(0.06) end
  ngx.say("ok")
end, { hooks = { access = function(req) end } })
'''


def scrape(g):
    r = request(g.port, path="/status?format=prometheus")
    assert r.status == 200 and r.header("Content-Type").startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams, family, sample_name=None, **labels):
    """Sample values of a family whose labels include `labels`."""
    out = []
    for s in fams[family].samples:
        if sample_name and s.name != sample_name:
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            out.append(s)
    return out


def value(fams, family, sample_name=None, **labels):
    got = samples(fams, family, sample_name, **labels)
    assert len(got) == 1, (family, labels, got)
    return got[0].value


def check_histograms(fams):
    """Every histogram series: cumulative buckets, +Inf == _count, _sum not negative."""
    n = 0
    for f in fams.values():
        if f.type != "histogram":
            continue
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, h in series.items():
            bounds = [b for b, _ in h["buckets"]]
            counts = [c for _, c in h["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == float("inf"), (f.name, key, bounds)
            assert counts == sorted(counts), (f.name, key, counts)  # cumulative
            assert counts[-1] == h["count"], (f.name, key)
            assert h["sum"] is not None and h["sum"] >= 0
            assert h["count"] == 0 or h["sum"] > 0, (f.name, key, h)
            n += 1
    return n


def test_requests_by_route_and_class_summed_over_workers(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    assert len(g.workers()) == 2
    sent = {("/app/", "2xx"): 0, ("/bal/", "2xx"): 0, ("/lua/", "2xx"): 0, ("/lua/", "3xx"): 0,
            ("/lua/", "4xx"): 0, ("/lua/", "5xx"): 0, ("(none)", "4xx"): 0}
    plan = [("/app/x", "/app/", 200), ("/bal/x", "/bal/", 200), ("/lua/ok", "/lua/", 200),
            ("/lua/moved", "/lua/", 302), ("/lua/missing", "/lua/", 404), ("/lua/fail", "/lua/", 500),
            ("/nowhere", "(none)", 404)]
    for i in range(70):  # a fresh connection each: both workers take some
        path, route, status = plan[i % len(plan)] if i < 49 else plan[i % 3]
        assert request(g.port, path=path).status == status, path
        sent[(route, "%dxx" % (status // 100))] += 1
    # A request is counted when its last write has completed, which may be just after the
    # client read it: the page settles at once.
    key = dict(route="/app/", **{"class": "2xx"})
    assert wait_for(lambda: value(scrape(g)[1], "moongate_requests", "moongate_requests_total", **key) == sent[("/app/", "2xx")], 2)
    # Every worker answers the page with the same sums (they share the counters).
    pages = [scrape(g)[1] for _ in range(6)]
    for fams in pages:
        for (route, cls), n in sent.items():
            assert value(fams, "moongate_requests", "moongate_requests_total", route=route, **{"class": cls}) == n, (route, cls)
        assert value(fams, "moongate_requests", "moongate_requests_total", route="/app/", **{"class": "5xx"}) == 0
        # Each route's request histogram counts exactly its requests.
        for route in ("/app/", "/bal/", "/lua/", "(none)"):
            total = sum(n for (r, _), n in sent.items() if r == route)
            assert value(fams, "moongate_request_duration_seconds", "moongate_request_duration_seconds_count", route=route) == total
        check_histograms(fams)


def test_histograms_buckets_and_upstream_by_member(gateway, echo_backend):
    g = gateway(LUA.replace("mg.workers(2)", "mg.workers(2)\nmg.set { histogram_buckets = { 0.01, 0.05, 0.5, 5 } }"),
                echo_backend)
    for _ in range(5):
        assert request(g.port, path="/lua/slow").status == 200
    for _ in range(7):
        assert request(g.port, path="/app/x").status == 200
    for _ in range(3):
        assert request(g.port, path="/bal/x").status == 200
    text, fams = scrape(g)
    assert check_histograms(fams) >= 6
    les = [s.labels["le"] for s in samples(fams, "moongate_request_duration_seconds", "moongate_request_duration_seconds_bucket", route="/lua/")]
    assert les == ["0.01", "0.05", "0.5", "5", "+Inf"]
    # Each slow request slept 60 ms: none under 50 ms, the sum at least 5 x 60 ms and plausible.
    h = "moongate_request_duration_seconds"
    assert value(fams, h, h + "_bucket", route="/lua/", le="0.05") == 0
    assert value(fams, h, h + "_count", route="/lua/") == 5
    assert 0.3 <= value(fams, h, h + "_sum", route="/lua/") < 5 * 5
    # Upstream time by route and member: the plain route's one address, the balancer's member.
    u = "moongate_upstream_duration_seconds"
    member = "scgi://127.0.0.1:%d" % echo_backend
    # (members are named as init.lua wrote them: the route's URL has its path)
    assert value(fams, u, u + "_count", route="/app/", member=member + "/") == 7
    assert value(fams, u, u + "_count", route="/bal/", member=member) == 3
    assert 0 < value(fams, u, u + "_sum", route="/app/", member=member + "/") <= value(fams, h, h + "_sum", route="/app/")
    assert not samples(fams, u, route="/lua/")  # no backend, no series


def test_help_and_type_on_every_family(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    request(g.port, path="/app/x")
    text, fams = scrape(g)
    helps = {l.split()[2] for l in text.splitlines() if l.startswith("# HELP ")}
    types = {l.split()[2]: l.split()[3] for l in text.splitlines() if l.startswith("# TYPE ")}
    assert helps == set(types), helps ^ set(types)
    for name in types:
        assert name.startswith("moongate_"), name
    for l in text.splitlines():
        if l and not l.startswith("#"):
            metric = l.split("{")[0].split(" ")[0]
            base = [t for t in types if metric == t or (types[t] == "histogram" and metric in (t + "_bucket", t + "_sum", t + "_count"))]
            assert base, "sample without a family: " + l
    for f in fams.values():
        assert f.documentation and f.type in ("counter", "gauge", "histogram"), f.name
    expected = {"moongate_requests_total": "counter", "moongate_request_duration_seconds": "histogram",
                "moongate_upstream_duration_seconds": "histogram", "moongate_connections": "gauge",
                "moongate_lua_seconds_total": "counter", "moongate_lua_calls_total": "counter",
                "moongate_queue_length": "gauge", "moongate_queue_requests_total": "counter",
                "moongate_queue_wait_seconds": "histogram", "moongate_ejections_total": "counter",
                "moongate_retries_total": "counter", "moongate_retries_budget_exhausted_total": "counter",
                "moongate_member_requests_total": "counter"}
    for name, t in expected.items():
        assert types.get(name) == t, (name, types.get(name))
    # Queue, ejection and retry families exist for the balancer, at zero until used.
    assert value(fams, "moongate_queue_length", balancer="pool") == 0
    assert value(fams, "moongate_queue_requests", "moongate_queue_requests_total", balancer="pool", outcome="full") == 0
    assert value(fams, "moongate_ejections", "moongate_ejections_total", balancer="pool") == 0
    assert value(fams, "moongate_retries", "moongate_retries_total", balancer="pool") == 0


def conns(g, proto="http1", tls="false"):
    return value(scrape(g)[1], "moongate_connections", protocol=proto, tls=tls)


def wait_for(fn, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def test_open_connections_by_protocol(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    assert wait_for(lambda: conns(g) == 1)  # the scrape's own connection
    held = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            s.sendall(b"GET /app/x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(s)  # kept alive, idle
        assert wait_for(lambda: conns(g) == 6)
        # An h2c connection (prior knowledge) is not allowed on this listener: still http1.
        assert conns(g, "h2") == 0
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: conns(g) == 1)


def test_lua_time_per_phase(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    for _ in range(4):
        request(g.port, path="/lua/ok")
    for _ in range(2):
        request(g.port, path="/lua/slow")
    _, fams = scrape(g)
    # One content call per request, plus one more per resume after the sleep.
    assert value(fams, "moongate_lua_calls", "moongate_lua_calls_total", phase="access") == 6
    assert value(fams, "moongate_lua_calls", "moongate_lua_calls_total", phase="content") == 4 + 2 * 2
    assert value(fams, "moongate_lua_seconds", "moongate_lua_seconds_total", phase="content") > 0
    # The sleep is waiting, not running Lua: far less than 2 x 60 ms of Lua time.
    assert value(fams, "moongate_lua_seconds", "moongate_lua_seconds_total", phase="content") < 0.1
    assert value(fams, "moongate_lua_calls", "moongate_lua_calls_total", phase="rewrite") == 0


def test_json_status_sums_workers(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    for _ in range(9):
        request(g.port, path="/app/x")
    for _ in range(3):
        request(g.port, path="/lua/missing")
    pids = set()
    for _ in range(40):  # whichever worker answers: both, before long (SO_REUSEPORT spreads connections)
        if len(pids) == 2:
            break
        st = json.loads(request(g.port, path="/status").body)
        pids.add(st["worker"]["pid"])
        routes = {r["route"]: r for r in st["metrics"]["routes"]}
        assert routes["/app/"]["requests"]["2xx"] == 9
        assert routes["/lua/"]["requests"]["4xx"] == 3
        assert routes["/app/"]["time_sum"] > 0
        assert st["metrics"]["connections"]["http1"] >= 1
        assert st["metrics"]["lua"]["content"]["calls"] == 3
        b = st["metrics"]["balancers"][0]
        assert b["name"] == "pool" and b["queue_length"] == 0 and b["retries"] == 0 and b["ejections"] == 0
    assert pids == set(g.workers())  # two workers, each showing the same totals


def test_counters_survive_a_reload(gateway, echo_backend):
    g = gateway(LUA, echo_backend)
    for _ in range(5):
        request(g.port, path="/app/x")
    old = set(g.workers())
    with open(g.config, "a") as f:
        f.write('mg.route("/new/", "scgi://127.0.0.1:%d/")\n' % echo_backend)
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded ")
    assert wait_for(lambda: not set(g.workers()) & old, 10)
    for _ in range(2):
        request(g.port, path="/app/x")
        request(g.port, path="/new/x")
    _, fams = scrape(g)
    assert value(fams, "moongate_requests", "moongate_requests_total", route="/app/", **{"class": "2xx"}) == 7
    assert value(fams, "moongate_requests", "moongate_requests_total", route="/new/", **{"class": "2xx"}) == 2
    check_histograms(fams)


def test_counters_never_go_back_across_a_reload_under_traffic(gateway, echo_backend):
    """Both generations add to the same rows: what the old workers finish after the reload
    counts, and a scrape never sees a counter fall (Prometheus would read a reset)."""
    import threading
    g = gateway(LUA, echo_backend)
    sent = []
    stop = threading.Event()

    def client():
        deadline = time.time() + 20
        while not stop.is_set() and len(sent) < 400 and time.time() < deadline:
            if request(g.port, path="/app/x").status == 200:
                sent.append(1)
    t = threading.Thread(target=client)
    t.start()
    seen = []
    key = dict(route="/app/", **{"class": "2xx"})
    try:
        while len(sent) < 50 and t.is_alive():
            time.sleep(0.01)
        g.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "reloaded " not in g.log():
            seen.append(value(scrape(g)[1], "moongate_requests", "moongate_requests_total", **key))
        for _ in range(20):
            seen.append(value(scrape(g)[1], "moongate_requests", "moongate_requests_total", **key))
    finally:
        stop.set()
        t.join(30)
    assert "reloaded " in g.log()
    assert seen == sorted(seen), seen
    assert wait_for(lambda: value(scrape(g)[1], "moongate_requests", "moongate_requests_total", **key) == len(sent), 3)


def test_histogram_buckets_load_errors(tmp_path):
    cases = [
        ("{}", "histogram_buckets: expected a list of 1 to 32"),
        ("{ 0.1, 0.05 }", "histogram_buckets[2]: the bounds must increase"),
        ("{ 0.1, -1 }", "histogram_buckets[2]: expected a positive number of seconds"),
        ("{ 0.1, \"1\" }", "histogram_buckets[2]: expected a positive number of seconds"),
        ("0.5", "histogram_buckets: expected a list"),
        ("{ %s }" % ", ".join(str(i) for i in range(1, 34)), "1 to 32"),
    ]
    for v, msg in cases:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.set { histogram_buckets = %s }\n' % v)
        p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
        assert p.returncode == 1 and "init.lua:3:" in p.stderr and msg in p.stderr, (v, p.stderr)


def test_connections_h2c_tls_and_h2_over_tls(gateway, echo_backend, tmp_path):
    import ssl
    import h2.connection
    from conftest import free_port
    from test_tls import make_cert
    cert, key = make_cert(str(tmp_path), "localhost")
    tls_port = free_port()
    g = gateway('mg.listen("127.0.0.1:{PORT}", { http2 = true })\n'
                'mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" } })\n' % (tls_port, cert, key) + LUA,
                echo_backend)
    held = []

    def tls(alpn):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols([alpn])
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5), server_hostname="localhost")
        assert s.selected_alpn_protocol() == alpn
        held.append(s)
        return s

    def h2_on(sock):
        c = h2.connection.H2Connection()
        c.initiate_connection()
        sock.sendall(c.data_to_send())
        assert sock.recv(65536)  # the server's SETTINGS: the session is up

    try:
        plain_h2 = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        held.append(plain_h2)
        h2_on(plain_h2)
        h2_on(tls("h2"))
        h2_on(tls("h2"))
        s = tls("http/1.1")
        s.sendall(b"GET /app/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")

        def counts():
            fams = scrape(g)[1]
            return {(p, t): value(fams, "moongate_connections", protocol=p, tls=t)
                    for p in ("http1", "h2") for t in ("false", "true")}
        want = {("http1", "false"): 1, ("h2", "false"): 1, ("h2", "true"): 2, ("http1", "true"): 1}
        assert wait_for(lambda: counts() == want), counts()
        # Requests over HTTP/2 count like any other.
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--http2-prior-knowledge",
                            "http://127.0.0.1:%d/app/x" % g.port], capture_output=True, text=True, timeout=20)
        assert p.stdout == "2 200", p.stdout
        assert wait_for(lambda: value(scrape(g)[1], "moongate_requests", "moongate_requests_total", route="/app/", **{"class": "2xx"}) == 2)
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: conns(g) == 1 and conns(g, "h2") == 0 and conns(g, "h2", "true") == 0 and conns(g, "http1", "true") == 0)


def test_error_pages_count_for_the_route_they_answer_for(gateway, echo_backend):
    g = gateway(LUA.replace("mg.workers(2)", '''mg.workers(2)
mg.set { error_pages = { [404] = "/errors/404", [500] = function(req, status) return 503, "sorry" end } }
mg.route("/errors/", function(req) return 200, "page" end, { internal = true })'''), echo_backend)
    for _ in range(3):
        assert request(g.port, path="/lua/missing").status == 404   # ngx.status = 404: no page (a Lua answer)
        assert request(g.port, path="/nowhere").status == 404       # no route: the URI page
        assert request(g.port, path="/lua/fail").status == 503      # the function page
    _, fams = scrape(g)
    r = lambda route, cls: value(fams, "moongate_requests", "moongate_requests_total", route=route, **{"class": cls})
    assert r("/lua/", "4xx") == 3 and r("/lua/", "5xx") == 3 and r("(none)", "4xx") == 3
    assert sum(r("/errors/", c) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")) == 0
