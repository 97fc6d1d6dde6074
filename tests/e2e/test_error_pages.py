"""Error pages (SPEC 19, docs/reference.md "Error pages"): nginx's error_page and
*_intercept_errors, Apache's ErrorDocument and ProxyErrorOverride, as a user replacing either
would notice them: moongate's own errors (no route, a backend down or too slow, a body too
large, a Lua failure, ngx.exit) and, with intercept_errors, the backend's answers are served by
a page — a local URI of any route kind (static, SCGI, Lua) with the status kept, or a Lua
function fn(req, status) — and a page that fails is answered plainly, never in a loop."""
import os
import tempfile
import time

from conftest import free_port, raw, request, scgi_vars

PAGES = {"404.html": "<h1>not here</h1>\n", "50x.html": "<h1>down for a moment</h1>\n"}


def conf(body):
    return '''
mg.set { error_pages = { [404] = "/errors/404.html", [502] = "/errors/50x.html", [503] = "/errors/50x.html", [504] = "/errors/50x.html",
                         [500] = "/errors/50x.html", [413] = "/errors/50x.html" } }
mg.route("/errors/", { root = "{PAGES}" }, { internal = true })
''' + body


def start(gateway, body, backend=None):
    pages = tempfile.mkdtemp(prefix="mg-pages-")
    for name, text in PAGES.items():
        with open(os.path.join(pages, name), "w") as f:
            f.write(text)
    return gateway(conf(body).replace("{PAGES}", pages), backend)


def test_no_route_is_answered_by_the_404_page_with_status_404(gateway):
    g = start(gateway, 'mg.route("/app/", function() return 200, "app" end)\n')
    r = request(g.port, path="/nothing/here")
    assert r.status == 404
    assert r.body == PAGES["404.html"].encode()
    assert r.header("Content-Type") == "text/html"
    # The page is internal: a client asking for it directly gets a 404 (served by the page).
    r = request(g.port, path="/errors/404.html")
    assert r.status == 404


def test_a_backend_down_gets_the_502_page_and_a_slow_one_the_504_page(gateway, demo_backend):
    dead = free_port()
    g = start(gateway, '''
mg.route("/dead/", "scgi://127.0.0.1:%d")
mg.route("/slow/", "scgi://127.0.0.1:{BACKEND}", { timeout = 1 })
''' % dead, demo_backend)
    # A refused connection is a 503, as Apache's mod_proxy answers it.
    r = request(g.port, path="/dead/x")
    assert (r.status, r.body) == (503, PAGES["50x.html"].encode())
    r = request(g.port, path="/slow/hang")
    assert (r.status, r.body) == (504, PAGES["50x.html"].encode())
    # The access log records what the client got.
    assert "Connection refused" in g.log()  # the error log still names the cause
    lines = open(g.access_path).read().splitlines()
    assert any('"GET /dead/x HTTP/1.1" 503' in l for l in lines), lines


def test_the_backend_error_passes_unless_intercept_errors_is_on(gateway, demo_backend):
    g = start(gateway, '''
mg.route("/plain/", "scgi://127.0.0.1:{BACKEND}")
mg.route("/caught/", "scgi://127.0.0.1:{BACKEND}", { intercept_errors = true })
''', demo_backend)
    r = request(g.port, path="/plain/status/502")
    assert r.status == 502 and r.body != PAGES["50x.html"].encode()
    r = request(g.port, path="/caught/status/502")
    assert (r.status, r.body) == (502, PAGES["50x.html"].encode())
    r = request(g.port, path="/caught/status/404")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    # A status without a page is the backend's own answer, even intercepted.
    r = request(g.port, path="/caught/status/418")
    assert r.status == 418 and b"not here" not in r.body and b"down for" not in r.body
    # Successes are never touched.
    r = request(g.port, path="/caught/ok")
    assert r.status == 200 and b"SCRIPT_NAME" in r.body


def test_intercept_errors_over_a_balancer_and_its_own_503(gateway, demo_backend):
    dead = free_port()
    g = start(gateway, '''
mg.set { intercept_errors = true }
mg.balancer("up", { members = { "scgi://127.0.0.1:{BACKEND}" } })
mg.balancer("none", { members = { "scgi://127.0.0.1:%d" } })
mg.route("/b/", "balancer://up/", { error_pages = { [500] = "/errors/50x.html" } })
mg.route("/n/", "balancer://none/", { error_pages = { [502] = "/errors/50x.html", [503] = "/errors/50x.html" } })
''' % dead, demo_backend)
    r = request(g.port, path="/b/status/500")
    assert (r.status, r.body) == (500, PAGES["50x.html"].encode())
    # The route's table replaces the global one: no 404 page here.
    r = request(g.port, path="/b/status/404")
    assert r.status == 404 and r.body != PAGES["404.html"].encode()
    r = request(g.port, path="/n/x")
    assert r.status in (502, 503) and r.body == PAGES["50x.html"].encode()


def test_a_page_from_a_static_route_with_expires_is_not_cached_as_the_uri(gateway):
    pages = tempfile.mkdtemp(prefix="mg-pages-")
    with open(os.path.join(pages, "404.html"), "w") as f:
        f.write(PAGES["404.html"])
    g = gateway('''
mg.set { error_pages = { [404] = "/errors/404.html" } }
mg.route("/errors/", { root = "%s", expires = "30d" })
''' % pages)
    r = request(g.port, path="/errors/404.html")
    assert r.status == 200 and r.header("Cache-Control") == "max-age=2592000"
    r = request(g.port, path="/missing")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    assert r.header("Cache-Control") is None and r.header("Expires") is None


def test_a_static_route_missing_file_gets_the_page(gateway):
    g = start(gateway, 'mg.route("/files/", { root = "{PAGES}" })\n')
    r = request(g.port, path="/files/nope.txt")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    r = request(g.port, path="/files/50x.html")
    assert (r.status, r.body) == (200, PAGES["50x.html"].encode())
    # No page for 405 here: the plain answer, with its Allow field.
    r = request(g.port, "POST", "/files/50x.html", body=b"x")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD"


def test_a_static_route_405_gets_its_page(gateway):
    g = start(gateway, 'mg.route("/files/", { root = "{PAGES}" }, { error_pages = { [405] = "/errors/50x.html" } })\n')
    r = request(g.port, "DELETE", "/files/404.html")
    assert (r.status, r.body) == (405, PAGES["50x.html"].encode())


def test_lua_errors_and_ngx_exit_get_pages_but_an_explicit_body_stays(gateway):
    g = start(gateway, '''
mg.route("=/boom", function() error("kaput") end)
mg.route("=/exit", function() ngx.exit(404) end)
mg.route("=/own", function() return 404, "my own 404 body" end)
mg.route("=/denied", function() return 200, "secret" end, { hooks = { access = function() ngx.exit(404) end } })
mg.route("=/hookfail", function() return 200, "x" end, { hooks = { access = function() error("policy bug") end } })
''')
    r = request(g.port, path="/boom")
    assert (r.status, r.body) == (500, PAGES["50x.html"].encode())
    assert "kaput" in g.log()
    r = request(g.port, path="/exit")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    r = request(g.port, path="/own")
    assert (r.status, r.body) == (404, b"my own 404 body")
    r = request(g.port, path="/denied")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    r = request(g.port, path="/hookfail")
    assert (r.status, r.body) == (500, PAGES["50x.html"].encode())


def test_a_page_served_by_the_scgi_backend_sees_the_original_request(gateway, demo_backend):
    g = gateway('''
mg.set { error_pages = { [404] = "/app/notfound?from=gw" } }
mg.route("/app/", "scgi://127.0.0.1:{BACKEND}")
mg.route("/api/", function() ngx.exit(404) end)
''', demo_backend)
    r = request(g.port, method="POST", path="/api/thing?x=1", body=b"payload")
    assert r.status == 404
    env = dict(scgi_vars(r.body))
    # Apache's ErrorDocument variables, and nginx's method change: POST becomes GET.
    assert env["REDIRECT_STATUS"] == "404"
    assert env["REDIRECT_URL"] == "/api/thing"
    assert env["REDIRECT_QUERY_STRING"] == "x=1"
    assert env["REDIRECT_REQUEST_METHOD"] == "POST"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "from=gw"
    assert r.body.endswith(b"BODY=")


def test_a_page_served_by_a_lua_route_and_a_function_page(gateway, demo_backend):
    dead = free_port()
    g = gateway('''
mg.set { error_pages = {
  [404] = "/_pages/missing",
  [503] = function(req, status)
    return status, "fn page " .. status .. " for " .. req.uri, { ["Content-Type"] = "text/html", ["Retry-After"] = "5" }
  end,
  [500] = function(req, status) return nil, "default status" end,
} }
mg.route("/_pages/", function(req) return 200, "lua page for " .. ngx.var.request_uri end, { internal = true })
mg.route("/dead/", "scgi://127.0.0.1:%d")
mg.route("=/busy", function() ngx.exit(500) end)
''' % dead)
    r = request(g.port, path="/gone")
    assert (r.status, r.body) == (404, b"lua page for /gone")
    r = request(g.port, path="/dead/y")
    assert (r.status, r.body) == (503, b"fn page 503 for /dead/y")
    assert r.header("Retry-After") == "5" and r.header("Content-Type") == "text/html"
    r = request(g.port, path="/busy")
    assert (r.status, r.body) == (500, b"default status")


def test_a_failing_page_is_answered_plainly_without_a_loop(gateway):
    g = gateway('''
mg.set { error_pages = { [404] = "/pages/absent.html", [500] = "/broken" } }
mg.route("/pages/", { root = "." })
mg.route("=/broken", function() error("the error page itself fails") end)
mg.route("=/boom", function() error("first") end)
''')
    r = request(g.port, path="/nothing")
    assert r.status == 404 and r.body == b"404 Not Found\n"
    r = request(g.port, path="/boom")
    assert r.status == 500 and r.body == b"500 Internal Server Error\n"
    assert "the error page itself fails" in g.log()


def test_route_error_pages_false_turns_them_off(gateway):
    g = start(gateway, 'mg.route("/quiet/", { root = "{PAGES}" }, { error_pages = false })\n')
    r = request(g.port, path="/quiet/absent")
    assert r.status == 404 and r.body == b"404 Not Found\n"


def test_head_conditionals_and_keepalive_on_an_error_page(gateway):
    g = start(gateway, 'mg.route("/app/", function() return 200, "app" end)\n')
    r = request(g.port, method="HEAD", path="/missing")
    assert r.status == 404 and r.body == b""
    assert r.header("Content-Length") == str(len(PAGES["404.html"]))
    etag = request(g.port, path="/missing").header("ETag")
    # The client's conditions are about /missing, not about the page: never a 304 or a 206.
    r = request(g.port, path="/missing", headers=[("If-None-Match", etag or '"x"'), ("Range", "bytes=0-3")])
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())
    # Two requests on one connection: the page leaves the connection usable.
    out = raw(g.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /app/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 404") == 1 and b"HTTP/1.1 200" in out and out.endswith(b"app")


def test_a_body_too_large_gets_the_413_page_and_the_connection_closes(gateway, demo_backend):
    g = start(gateway, 'mg.route("/up/", "scgi://127.0.0.1:{BACKEND}", { client_max_body_size = 10 })\n', demo_backend)
    out = raw(g.port, b"POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 100)
    assert out.startswith(b"HTTP/1.1 413")
    assert out.endswith(PAGES["50x.html"].encode())
    assert b"Connection: close" in out


def test_bad_error_pages_are_load_errors_naming_the_line(tmp_path):
    import subprocess
    from conftest import MOONGATE
    cases = [
        ('mg.set { error_pages = { [200] = "/x" } }', "the keys are statuses from 300 to 599"),
        ('mg.set { error_pages = { [404] = "http://elsewhere/" } }', "expected a local URI starting with /"),
        ('mg.route("/", function() end, { error_pages = { [404] = 5 } })', "expected a local URI or a function"),
        ('mg.route("/", function() end, { intercept_errors = "yes" })', "intercept_errors: expected true or false"),
    ]
    for i, (line, why) in enumerate(cases):
        p = tmp_path / ("bad%d.lua" % i)
        p.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n' + line + "\n")
        r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0
        assert "bad%d.lua:3" % i in r.stderr and why in r.stderr, r.stderr


def test_error_pages_over_http2(gateway, demo_backend):
    import subprocess
    g = start(gateway, '''
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("/caught/", "scgi://127.0.0.1:{BACKEND}", { intercept_errors = true })
''', demo_backend)
    for path, status, page in (("/missing", 404, "404.html"), ("/caught/status/502", 502, "50x.html")):
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}",
                            "http://127.0.0.1:%d%s" % (g.port, path)], capture_output=True, timeout=20)
        body, _, tail = p.stdout.rpartition(b"\n")
        assert tail == b"%d 2" % status, p.stdout + p.stderr
        assert body == PAGES[page].encode()


def test_same_pages_as_openresty_error_page(gateway, tmp_path):
    """The same Lua under OpenResty (Debian's nginx + lua-nginx-module, `error_page`) and under
    moongate (`error_pages`): for each request, the same status and the same page body (which
    names the URI and method the page saw)."""
    from openresty import start_openresty, stop_openresty
    page = ('if ngx.var.arg_ok then ngx.status = 200 end '
            'ngx.say("page for ", ngx.var.request_uri, " by ", ngx.req.get_method(), " at ", ngx.var.uri, " status ", ngx.status)')
    bodies = {
        "/exit404": "ngx.exit(404)",
        "/boom": 'error("kaput")',
        "/own": 'ngx.status = 404 ngx.say("own body")',
        "/fine": 'ngx.say("fine")',
    }
    locs = {p: b for p, b in bodies.items()}
    locs["/_err/"] = ("raw_prefix", "internal; content_by_lua_block { %s }" % page)
    locs["/denied"] = ("raw", 'access_by_lua_block { ngx.exit(404) } content_by_lua_block { ngx.say("secret") }')
    proc, oport = start_openresty(tmp_path / "or", locs, server="error_page 404 /_err/404; error_page 500 /_err/500;")
    lua = 'mg.set { error_pages = { [404] = "/_err/404", [500] = "/_err/500" } }\n'
    lua += 'mg.route("/_err/", function() %s end, { internal = true })\n' % page
    for p, b in bodies.items():
        lua += 'mg.route("=%s", function() %s end)\n' % (p, b)
    lua += 'mg.route("=/denied", function() ngx.say("secret") end, { hooks = { access = function() ngx.exit(404) end } })\n'
    g = gateway(lua)
    try:
        reqs = [("GET", "/exit404?a=1"), ("GET", "/exit404?ok=1"), ("POST", "/exit404"), ("HEAD", "/exit404"), ("GET", "/boom"),
                ("GET", "/own"), ("GET", "/fine"), ("GET", "/denied"), ("GET", "/no/such/path"), ("GET", "/_err/404")]
        for method, path in reqs:
            body = b"x" if method == "POST" else None
            a = request(oport, method, path, body=body)
            m = request(g.port, method, path, body=body)
            assert (m.status, m.body) == (a.status, a.body), "%s %s: OpenResty %d %r, moongate %d %r" % (
                method, path, a.status, a.body, m.status, m.body)
    finally:
        stop_openresty(proc)


def test_errors_of_the_request_head_get_the_plain_page_and_never_crash(gateway, demo_backend):
    # A page served by an SCGI route for errors found before the request started: there is no
    # method or path to serve it for, so the plain page answers (and the worker lives on).
    g = gateway('''
mg.set { error_pages = { [400] = "/app/e", [414] = "/app/e", [431] = "/app/e" }, max_request_line = 1024 }
mg.route("/app/", "scgi://127.0.0.1:{BACKEND}")
''', demo_backend)
    pids = sorted(g.workers())
    for data in (b"GET /x HTTP/1.1\r\nHost: a@b\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                 b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        out = raw(g.port, data)
        assert out.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 414 URI Too Long"), out
        assert out.endswith(b"400 Bad Request\n") or out.endswith(b"414 URI Too Long\n"), out
    assert request(g.port, path="/app/ok").status == 200
    assert sorted(g.workers()) == pids, "a worker died"
    assert "signal" not in g.log()


def test_a_hook_that_waited_then_denied_closes_or_keeps_the_connection_cleanly(gateway):
    import socket
    import time
    g = start(gateway, '''
mg.route("=/deny", function() return 200, "ok" end, { hooks = { access = function() mg.sleep(0.05) ngx.exit(403) end } })
mg.route("=/deny404", function() return 200, "ok" end, { hooks = { access = function() mg.sleep(0.05) ngx.exit(404) end } })
''')
    for path in ("/deny", "/deny404"):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        t0 = time.time()
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head = data.split(b"\r\n\r\n")[0]
        if b"Connection: close" not in head:
            # A connection left open must answer the next request.
            s.sendall(b"GET /deny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
        s.close()
        assert time.time() - t0 < 3, "the connection hung"
        if b"Connection: close" not in head:
            assert b"HTTP/1.1 403" in rest
    r = request(g.port, path="/deny404")
    assert (r.status, r.body) == (404, PAGES["404.html"].encode())


def test_a_413_page_is_served_whatever_the_page_route_limit(gateway):
    g = start(gateway, 'mg.set { client_max_body_size = 10 }\nmg.route("/up/", function() return 200, "took it" end)\n')
    out = raw(g.port, b"POST /up/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 100)
    assert out.startswith(b"HTTP/1.1 413") and out.endswith(PAGES["50x.html"].encode()), out


def test_a_function_page_that_writes_with_ngx_say_keeps_the_error_status(gateway):
    g = gateway('''
mg.set { error_pages = { [404] = function(req, status) ngx.say("sorry, ", ngx.status) end,
                         [503] = function() ngx.print("later") ngx.exit(ngx.OK) end } }
mg.route("=/busy", function() ngx.exit(503) end)
''')
    r = request(g.port, path="/nope")
    assert (r.status, r.body) == (404, b"sorry, 404\n")
    r = request(g.port, path="/busy")
    assert (r.status, r.body) == (503, b"later")


def test_a_body_timeout_while_a_handler_waits_for_the_body_gets_the_page(gateway):
    import socket
    g = gateway('''
mg.set { client_body_timeout = 1, error_pages = { [408] = function(req, status) mg.sleep(0.1) return status, "too slow" end } }
mg.route("=/rb", function(req) ngx.req.read_body() return 200, "got " .. #(ngx.req.get_body_data() or "") end)
''')
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(b"POST /rb HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n0123456789")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        assert data.startswith(b"HTTP/1.1 408") and data.endswith(b"too slow"), data
    assert request(g.port, method="POST", path="/rb", body=b"abc").body == b"got 3"


def test_a_503_page_keeps_the_errors_retry_after(gateway, demo_backend):
    import threading
    g = start(gateway, '''
mg.balancer("one", { members = { { "scgi://127.0.0.1:{BACKEND}", max_conns = 1 } } })
mg.route("/app/", "balancer://one/")
mg.route("=/later", function() ngx.header["Retry-After"] = "7" ngx.exit(503) end)
''', demo_backend)
    # A full member and no queue: the caps' 503 says when to come back; the page keeps it.
    slow = threading.Thread(target=lambda: request(g.port, path="/app/slow?ms=1500"))
    slow.start()
    time.sleep(0.4)
    r = request(g.port, path="/app/x")
    slow.join(10)
    assert (r.status, r.body) == (503, PAGES["50x.html"].encode())
    assert r.header("Retry-After") == "1"
    r = request(g.port, path="/later")
    assert (r.status, r.body) == (503, PAGES["50x.html"].encode())
    assert r.header("Retry-After") == "7"
