"""Every examples/*.lua and the demo init.lua, loaded as written (only addresses and paths are
substituted) and exercised."""
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import DEMO_APP, MOONGATE, ROOT, Process, free_port, read_response, request, scgi_vars, wait_port

EXAMPLES = os.path.join(ROOT, "examples")


@pytest.fixture
def two_apps():
    ports = [free_port(), free_port()]
    procs = [Process([sys.executable, DEMO_APP, "127.0.0.1:%d" % p], p, env=dict(os.environ, DEMO_NAME=n))
             for p, n in zip(ports, ("a", "b"))]
    yield ports
    for p in procs:
        p.stop()


def run_example(tmp_path, name, ports, extra=None):
    """Copies an example with its addresses moved to free ports; returns (gateway Process, port)."""
    src = open(os.path.join(EXAMPLES, name) if name != "init.lua" else os.path.join(ROOT, name)).read()
    port = free_port()
    # One pass, whole port numbers only: a free port such as 40011 put in for 4000 must not be
    # rewritten again as if it held 4001.
    moved = {"8080": port, "4000": ports[0], "4001": ports[1]}
    text = re.sub(r"(?:localhost|127\.0\.0\.1):(8080|4000|4001)\b",
                  lambda m: "127.0.0.1:%d" % moved[m.group(1)], src)
    for k, v in (extra or {}).items():
        text = text.replace(k, v)
    path = tmp_path / name
    path.write_text(text)
    check = subprocess.run([MOONGATE, "-t", "-c", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = open(tmp_path / (name + ".log"), "wb")
    proc = subprocess.Popen([MOONGATE, "-c", str(path)], stdout=log, stderr=log)
    wait_port(port, proc)
    return proc, port, path


@pytest.fixture
def example(tmp_path, two_apps):
    running = []

    def start(name, extra=None):
        proc, port, path = run_example(tmp_path, name, two_apps, extra)
        running.append(proc)
        return port, path

    yield start
    for p in running:
        p.terminate()
        p.wait(10)


def app(resp):
    return resp.body.split(b"\n", 1)[0].decode()


def test_every_example_is_tested():
    tested = {"simple_gateway.lua", "balanced_gateway.lua", "setenvif_pathinfo.lua", "django_x_location.lua",
              "x_sendfile.lua", "access_control.lua", "header_rewrite.lua", "lua_health.lua", "custom_balancer.lua",
              "hot_reload.lua", "auth_request.lua", "redis_denylist.lua", "rate_limit.lua", "canary.lua",
              "signed_urls.lua", "json_errors.lua", "token_introspection.lua", "log_shipper.lua", "jwt_hs256.lua",
              "observability.lua"}
    assert {f for f in os.listdir(EXAMPLES) if f.endswith(".lua")} == tested


def test_demo_init_lua(example):
    port, _ = example("init.lua")
    seen = {app(request(port, path="/app/x")) for _ in range(4)}
    assert seen == {"APP=a", "APP=b"}
    r = request(port, path="/app/x")
    assert r.header("X-Served-By") == "moongate"
    d = dict(scgi_vars(r.body.split(b"\n", 1)[1]))
    assert d["SCRIPT_NAME"] == "/app" and d["PATH_INFO"] == "/x"
    assert request(port, path="/health").body == b"ok\n"
    st = json.loads(request(port, path="/status").body)
    assert st["balancers"][0]["name"] == "demo"


def test_simple_gateway(example):
    port, _ = example("simple_gateway.lua")
    d = dict(scgi_vars(request(port, path="/scgi-bin/hello").body.split(b"\n", 1)[1]))
    assert d["SCRIPT_NAME"] == "/scgi-bin/hello"
    assert request(port, path="/elsewhere").status == 404


def test_balanced_gateway(example):
    port, _ = example("balanced_gateway.lua")
    assert [app(request(port, path="/scgi-bin/x")) for _ in range(4)] == ["APP=a", "APP=b", "APP=a", "APP=b"]


def test_setenvif_pathinfo(example):
    port, _ = example("setenvif_pathinfo.lua")
    d = dict(scgi_vars(request(port, path="/legacy/x/y").body.split(b"\n", 1)[1]))
    assert d["SCRIPT_NAME"] == "/legacy" and d["PATH_INFO"] == "/x/y"
    d = dict(scgi_vars(request(port, path="/new/x").body.split(b"\n", 1)[1]))
    assert d["SCRIPT_NAME"] == "/new/x" and "PATH_INFO" not in d


def test_django_x_location(example):
    port, _ = example("django_x_location.lua")
    d = dict(scgi_vars(request(port, path="/django/xlocation?to=/django/done").body.split(b"\n", 1)[1]))
    assert d["SCRIPT_NAME"] == "/django" and d["PATH_INFO"] == "/done" and d["REDIRECT_URL"] == "/django/xlocation"


def test_x_sendfile(example, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "file.txt").write_text("file body\n")
    port, _ = example("x_sendfile.lua", {"/srv/media": str(media)})
    r = request(port, path="/downloads/sendfile?path=%s/file.txt" % media)
    assert r.body == b"file body\n" and r.header("X-Sendfile") is None
    r = request(port, path="/assets/sendfile?header=X-Send-Static&path=%s/file.txt" % media)
    assert r.body == b"file body\n"
    assert request(port, path="/assets/sendfile?header=X-Send-Static&path=%s/none" % media).status == 404
    assert request(port, path="/downloads/sendfile?path=/etc/passwd").status == 403


def test_access_control(example):
    port, _ = example("access_control.lua")
    r = request(port, path="/admin/x")
    assert r.status == 401 and r.header("WWW-Authenticate") == "Token"
    r = request(port, path="/admin/x", headers=[("X-Admin-Token", "s3cret")])
    d = dict(scgi_vars(r.body.split(b"\n", 1)[1]))
    assert r.status == 200 and d["ADMIN_USER"] == "ops" and "HTTP_X_ADMIN_TOKEN" not in d


def test_header_rewrite(example):
    port, _ = example("header_rewrite.lua")
    r = request(port, path="/x")
    assert r.header("X-Content-Type-Options") == "nosniff"
    d = dict(scgi_vars(r.body.split(b"\n", 1)[1]))
    assert d["HTTP_X_REQUEST_ID"]
    r = request(port, path="/status/503")
    assert r.status == 503 and r.header("Retry-After") == "5"


def test_lua_health(example):
    port, _ = example("lua_health.lua")
    r = request(port, path="/health")
    body = json.loads(r.body)
    assert r.header("Content-Type") == "application/json" and body["status"] == "ok"


def test_custom_balancer(example):
    port, _ = example("custom_balancer.lua")
    assert app(request(port, path="/x", headers=[("X-Tenant", "green")])) == "APP=b"
    assert app(request(port, path="/x", headers=[("X-Tenant", "blue")])) == "APP=a"
    assert request(port, path="/x").status == 200


def test_hot_reload_walkthrough(example):
    port, path = example("hot_reload.lua")
    assert request(port, path="/hello").body == b"hello from version 1\n"
    time.sleep(1.1)  # a new modification time
    path.write_text(path.read_text().replace("version 1", "version 2"))
    deadline = time.time() + 8
    while request(port, path="/hello").body != b"hello from version 2\n" and time.time() < deadline:
        time.sleep(0.1)
    assert request(port, path="/hello").body == b"hello from version 2\n"
    time.sleep(1.1)
    path.write_text(path.read_text().replace('"=/hello"', '"=/hello",'))  # broken
    time.sleep(2.5)
    assert request(port, path="/hello").body == b"hello from version 2\n"
    log = open(str(path) + ".log").read()
    assert "reload failed, the running configuration stays in force" in log and "hot_reload.lua:" in log


def test_auth_request(example):
    """An access hook asks the auth service (demo_app.py /auth, on the second app) through a
    subrequest to an internal route; the application sees the user it names."""
    port, _ = example("auth_request.lua")
    ok = request(port, path="/app/hello", headers=[("Authorization", "Bearer letmein"), ("X-User", "mallory")])
    assert ok.status == 200
    d = dict(scgi_vars(ok.body.split(b"\n", 1)[1]))
    assert d["HTTP_X_USER"] == "alice" and "HTTP_AUTHORIZATION" not in d and d["PATH_INFO"] == "/hello"
    missing = request(port, path="/app/hello")
    assert missing.status == 401 and missing.header("WWW-Authenticate") == 'Bearer realm="app"'
    assert request(port, path="/app/hello", headers=[("Authorization", "Bearer wrong")]).status == 403
    assert request(port, path="/_auth/check", headers=[("Authorization", "Bearer letmein")]).status == 404


@pytest.fixture
def redis_server(tmp_path):
    port = free_port()
    proc = Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(tmp_path)], port)
    yield port
    proc.stop()


def redis_cmd(port, *args):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
    reply = s.recv(65536).decode()
    s.close()
    return reply


def test_redis_denylist(example, redis_server):
    """OpenResty code with Debian's lua-resty-redis, unchanged, in an access hook."""
    assert redis_cmd(redis_server, "SADD", "denylist", "stolen-key").startswith(":")
    port, _ = example("redis_denylist.lua", {"REDIS_HOST, REDIS_PORT = \"127.0.0.1\", 6379":
                                            "REDIS_HOST, REDIS_PORT = \"127.0.0.1\", %d" % redis_server})
    r = request(port, path="/api/x", headers=[("X-Api-Key", "stolen-key")])
    assert (r.status, r.body) == (403, b"this key is denied\n")
    for _ in range(20):
        assert request(port, path="/api/x", headers=[("X-Api-Key", "good-key")]).status == 200
    r = request(port, path="/api/x")
    assert (r.status, r.body) == (401, b"X-Api-Key required\n")
    # The pooled cosocket: 21 lookups from one worker over one Redis connection (plus ours).
    clients = int(redis_cmd(redis_server, "INFO", "clients").split("connected_clients:")[1].split()[0])
    assert clients == 2, "expected the gateway's one pooled connection and this one, got %d" % clients
    # A key added now is refused at once: the denylist is read on every request.
    redis_cmd(redis_server, "SADD", "denylist", "good-key")
    assert request(port, path="/api/x", headers=[("X-Api-Key", "good-key")]).status == 403


def test_redis_denylist_fails_closed(example):
    port, _ = example("redis_denylist.lua", {"REDIS_HOST, REDIS_PORT = \"127.0.0.1\", 6379":
                                            "REDIS_HOST, REDIS_PORT = \"127.0.0.1\", %d" % free_port()})
    r = request(port, path="/api/x", headers=[("X-Api-Key", "k")])
    assert (r.status, r.body) == (503, b"denylist unavailable\n")


def test_log_shipper(example, redis_server):
    """Each request lands in a Redis stream from the log phase, after its response; the log hook
    waits on Redis without holding the next request on the same keep-alive connection."""
    port, _ = example("log_shipper.lua", {"REDIS_HOST, REDIS_PORT = \"127.0.0.1\", 6379":
                                         "REDIS_HOST, REDIS_PORT = \"127.0.0.1\", %d" % redis_server})
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for i in range(5):
            s.sendall(b"GET /ship/%d?x=1 HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert read_response(f).status == 200
    deadline = time.time() + 5
    while time.time() < deadline:
        n = int(redis_cmd(redis_server, "XLEN", "requests").strip()[1:])
        if n == 5:
            break
        time.sleep(0.05)
    assert n == 5
    rows = redis_cmd(redis_server, "XRANGE", "requests", "-", "+")
    for i in range(5):
        assert "/ship/%d?x=1" % i in rows
    assert rows.count("\r\nstatus\r\n$3\r\n200\r\n") == 5
    assert re.search(r"\r\nid\r\n\$32\r\n[0-9a-f]{32}\r\n", rows)


def make_jwt(claims, secret=b"change-me-to-32-random-bytes", alg="HS256"):
    import base64

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_jwt_hs256(example):
    port, _ = example("jwt_hs256.lua")
    now = int(time.time())

    def call(token):
        hdrs = [("Authorization", "Bearer " + token)] if token is not None else []
        return request(port, path="/api/x", headers=hdrs)
    good = call(make_jwt({"sub": "alice", "exp": now + 60}))
    assert good.status == 200
    env = dict(scgi_vars(good.body))
    assert env.get("HTTP_X_USER") == "alice" and "HTTP_AUTHORIZATION" not in env
    for token, why in ((make_jwt({"sub": "a", "exp": now - 120}), "token expired"),
                       (make_jwt({"sub": "a", "exp": now + 60, "nbf": now + 600}), "token not yet valid"),
                       (make_jwt({"sub": "a", "exp": now + 60}, secret=b"other"), "bad signature"),
                       (make_jwt({"sub": "a", "exp": now + 60}, alg="none"), "alg must be HS256"),
                       ("abc", "not a JWS compact token"),
                       (None, "bearer token required")):
        r = call(token)
        assert r.status == 401 and r.header("Content-Type") == "application/json", (why, r.status)
        assert json.loads(r.body) == {"error": "invalid_token", "error_description": why}
        assert r.header("WWW-Authenticate") == 'Bearer error="invalid_token"'


@pytest.fixture
def introspection_server(tmp_path):
    """An HTTPS RFC 7662 endpoint on loopback with a test CA: active for token "good", counting calls."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    from test_cosocket_tls import make_pki
    pki = make_pki(tmp_path)
    calls = []

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            form = parse_qs(body)
            calls.append((self.headers.get("Authorization"), form))
            active = form.get("token") == ["good"]
            out = json.dumps({"active": True, "sub": "alice", "exp": int(time.time()) + 3600} if active
                             else {"active": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(pki, "good.crt"), os.path.join(pki, "good.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], os.path.join(pki, "ca.crt"), calls
    srv.shutdown()


def test_token_introspection(example, introspection_server):
    iport, ca, calls = introspection_server
    port, _ = example("token_introspection.lua", {
        "https://127.0.0.1:8443/introspect": "https://localhost:%d/introspect" % iport,
        "/etc/ssl/certs/ca-certificates.crt": ca})
    for _ in range(5):
        r = request(port, path="/api/x", headers=[("Authorization", "Bearer good")])
        assert r.status == 200
        env = dict(scgi_vars(r.body))
        assert env.get("HTTP_X_USER") == "alice" and "HTTP_AUTHORIZATION" not in env
    # One call for five requests: the answer is cached in the shared dictionary.
    assert len(calls) == 1
    auth, form = calls[0]
    assert auth == "Basic Z2F0ZXdheTpnYXRld2F5LXNlY3JldA==" and form["token"] == ["good"]
    assert request(port, path="/api/x", headers=[("Authorization", "Bearer bad")]).status == 401
    assert request(port, path="/api/x", headers=[("Authorization", "Bearer bad")]).status == 401
    assert len(calls) == 2
    assert request(port, path="/api/x").status == 401


def test_token_introspection_refuses_an_unverified_server(example, introspection_server, tmp_path):
    """The endpoint's certificate is checked: with the system CAs (which do not know the test CA)
    the hook cannot introspect and answers 503, logging why."""
    iport, ca, calls = introspection_server
    port, path = example("token_introspection.lua", {
        "https://127.0.0.1:8443/introspect": "https://localhost:%d/introspect" % iport})
    assert request(port, path="/api/x", headers=[("Authorization", "Bearer good")]).status == 503
    assert calls == []
    log = open(str(path) + ".log").read()
    assert "token introspection failed:" in log and "certificate" in log


def test_rate_limit(example):
    """5 r/s with a burst of 10: of 20 requests sent at once, 11 are admitted (the burst ones
    delayed to the rate, so the last answers about 2 s later) and 9 get 429; another key is
    not affected."""
    port, _ = example("rate_limit.lua")
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=20) as ex:
        out = list(ex.map(lambda i: request(port, path="/api/x", headers=[("X-Api-Key", "k1")]), range(20)))
    took = time.time() - t0
    codes = sorted(r.status for r in out)
    assert codes.count(200) == 11 and codes.count(429) == 9, codes
    assert [r for r in out if r.status == 429][0].header("Retry-After") == "1"
    assert 1.6 < took < 4.0, "the burst should be spread at 5 r/s (about 2 s), took %.2f s" % took
    assert request(port, path="/api/x", headers=[("X-Api-Key", "k2")]).status == 200


def test_canary(example):
    """One new visitor in ten goes to the canary (app b), exactly, across two workers; a
    visitor's cookie keeps them where they were sent."""
    port, _ = example("canary.lua")
    apps, cookies = [], []
    for _ in range(30):
        r = request(port, path="/x")
        apps.append(app(r))
        cookies.append(r.header("Set-Cookie"))
    assert apps.count("APP=b") == 3 and apps.count("APP=a") == 27
    canary_cookie = cookies[apps.index("APP=b")].split(";")[0]
    stable_cookie = cookies[apps.index("APP=a")].split(";")[0]
    assert canary_cookie == "canary=yes" and stable_cookie == "canary=no"
    for _ in range(5):
        assert app(request(port, path="/y", headers=[("Cookie", canary_cookie)])) == "APP=b"
        assert app(request(port, path="/y", headers=[("Cookie", stable_cookie)])) == "APP=a"


def signed(path, expires, secret=b"change-me"):
    sig = hmac.new(secret, (path + str(expires)).encode(), hashlib.sha256).hexdigest()
    return "%s?expires=%d&sig=%s" % (path, expires, sig)


def test_signed_urls(example):
    port, _ = example("signed_urls.lua")
    good = request(port, path=signed("/files/report.pdf", int(time.time()) + 60))
    assert good.status == 200 and dict(scgi_vars(good.body.split(b"\n", 1)[1]))["SCRIPT_NAME"] == "/files/report.pdf"
    assert request(port, path=signed("/files/report.pdf", int(time.time()) - 5)).status == 410
    assert request(port, path=signed("/files/other.pdf", int(time.time()) + 60).replace("other", "report")).status == 403
    assert request(port, path=signed("/files/report.pdf", int(time.time()) + 60, b"wrong")).status == 403
    assert request(port, path="/files/report.pdf").status == 403


def test_json_errors(example):
    port, _ = example("json_errors.lua")
    auth = [("Authorization", "Bearer x")]
    ok = request(port, path="/api/vars", headers=auth)
    assert ok.status == 200 and ok.header("Content-Type").startswith("text/plain") and b"REQUEST_URI=/api/vars" in ok.body
    for path, headers, status, message in [("/api/x", [], 401, "unauthorized"),
                                           ("/api/status/502", auth, 502, "bad gateway"),
                                           ("/api/status/404", auth, 404, "not found"),
                                           ("/elsewhere", [], 404, "not found")]:
        r = request(port, path=path, headers=headers)
        assert r.status == status and r.header("Content-Type") == "application/json", (path, r.status)
        assert json.loads(r.body) == {"error": {"status": status, "message": message}}, r.body


def test_observability(example, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    scrape_port = free_port()
    port, path = example("observability.lua", {"9145": str(scrape_port)})
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = request(port, path="/x", headers=[("traceparent", tp)])
    assert r.status == 200 and r.header("X-Trace-Id") == "4bf92f3577b34da6a3ce929d0e0e4736"
    d = dict(scgi_vars(r.body.split(b"\n", 1)[1]))
    assert d["HTTP_TRACEPARENT"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for _ in range(5):
        assert request(port, path="/y").status == 200
    assert request(port, path="/metrics?format=prometheus").status == 404  # not on the public listener

    def ok():
        text = request(scrape_port, path="/metrics?format=prometheus").body.decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        return [s.value for s in fams["moongate_requests"].samples if s.labels == {"route": "/", "class": "2xx"}]
    deadline = time.time() + 3  # a request counts once its last write completed
    while ok() != [6] and time.time() < deadline:
        time.sleep(0.05)
    assert ok() == [6]
    log = [json.loads(l) for l in open(os.path.join(os.path.dirname(str(path)), "access.log")) if l.strip()]
    assert log[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and len(log[0]["span_id"]) == 16
