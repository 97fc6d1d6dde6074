"""`moongate import-apache` (docs/migrating-from-apache.md): Apache 2.4 from Debian runs a
configuration, moongate runs its translation, against the same SCGI backends; the same requests
must give each backend the same variables, variable by variable, and the client the same status
and body.

Where Apache and moongate differ on purpose, the test names the difference (NAMED_* below)
rather than skipping the variable."""
import concurrent.futures
import json
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import MOONGATE, SANITIZED, Gateway, free_port, request, wait_port

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = ["mpm_event", "authz_core", "proxy", "proxy_scgi", "proxy_balancer", "slotmem_shm",
           "lbmethod_byrequests", "setenvif", "env"]

# Variables only Apache sends: its document root, the file paths derived from it and its admin
# (no meaning for a gateway), the process environment it leaks (PATH; moongate never sends its
# own), CGI's interface version, and mod_proxy_balancer's bookkeeping (BALANCER_*: which balancer
# and member it chose; moongate does not send them -- docs/migrating-from-apache.md says so).
NAMED_APACHE_ONLY = {"PATH", "DOCUMENT_ROOT", "CONTEXT_DOCUMENT_ROOT", "CONTEXT_PREFIX", "SERVER_ADMIN",
                     "SCRIPT_FILENAME", "PATH_TRANSLATED", "SERVER_SIGNATURE", "GATEWAY_INTERFACE",
                     "BALANCER_NAME", "BALANCER_WORKER_NAME", "BALANCER_WORKER_ROUTE", "BALANCER_SESSION_ROUTE",
                     "BALANCER_SESSION_STICKY", "BALANCER_ROUTE_CHANGED"}
# After an internal redirect Apache copies every CGI variable of the previous hop with a
# REDIRECT_ prefix; moongate sends the four a redirect target needs (compared like the rest).
SPEC7_REDIRECT = {"REDIRECT_STATUS", "REDIRECT_URL", "REDIRECT_QUERY_STRING", "REDIRECT_REQUEST_METHOD"}
# Apache forwards the proxy-scgi-pathinfo switch itself; moongate does not.
NAMED_APACHE_ONLY.add("proxy-scgi-pathinfo")
# mod_proxy's note that a request went to its default worker (a ProxyPassMatch URL that its
# worker's pattern does not cover, e.g. "$1" empty); moongate keeps no such note.
NAMED_APACHE_ONLY.add("proxy-nokeepalive")
# Variables both send with values that name the server or the client's port.
NAMED_VALUE_DIFFERS = {"SERVER_SOFTWARE", "REMOTE_PORT"}


class Backend:
    """An SCGI backend that answers with what it received, as JSON, and acts on its query:
    ?loc=/x sets Location, ?xloc=/x sets X-Location, ?file=/p sets X-Sendfile."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                f = self.request.makefile("rb")
                n = b""
                while not n.endswith(b":"):
                    c = f.read(1)
                    if not c:
                        return
                    n += c
                head = f.read(int(n[:-1]) + 1)[:-1].split(b"\0")
                pairs = [(head[i].decode("latin-1"), head[i + 1].decode("latin-1")) for i in range(0, len(head) - 1, 2)]
                env = dict(pairs)
                body = f.read(int(env.get("CONTENT_LENGTH", "0") or 0))
                query = dict(p.split("=", 1) for p in env.get("QUERY_STRING", "").split("&") if "=" in p)
                out = json.dumps({"backend": backend.name, "vars": pairs, "body": body.decode("latin-1")}).encode()
                extra = ""
                if "loc" in query:
                    extra += "Location: %s\r\n" % query["loc"].replace("%3F", "?")
                if "xloc" in query:
                    extra += "X-Location: %s\r\n" % query["xloc"].replace("%3F", "?")
                if "file" in query:
                    extra += "X-Sendfile: %s\r\n" % query["file"]
                status = query.get("status", "200") if query.get("status", "").isdigit() else "200"
                resp = ("Status: %s X\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
                        % (status, extra, len(out))).encode() + out
                self.request.sendall(resp)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    bs = [Backend("a"), Backend("b")]
    yield bs
    for b in bs:
        b.stop()


def import_apache(path):
    p = subprocess.run([MOONGATE, "import-apache", path], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


class Apache:
    def __init__(self, d, conf_body, port):
        load = "\n".join("LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so" % (m, m) for m in MODULES)
        self.path = os.path.join(d, "apache.conf")
        with open(self.path, "w") as f:
            f.write('%s\nServerRoot "%s"\nPidFile %s/httpd.pid\nDefaultRuntimeDir %s\nErrorLog %s/apache-error.log\n'
                    'User www-data\nGroup www-data\nStartServers 1\nServerLimit 1\nThreadsPerChild 16\n'
                    'MaxRequestWorkers 16\nListen 127.0.0.1:%d\nServerName 127.0.0.1\n%s\n'
                    % (load, d, d, d, d, port, conf_body))
        self.port = port
        self.proc = subprocess.Popen([APACHE, "-f", self.path, "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_port(port, self.proc)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def scratch():
    """A folder Apache's workers (www-data) can read: test files for X-Sendfile live here."""
    d = tempfile.mkdtemp(prefix="mg-import-")
    os.chmod(d, 0o755)
    return d


def run_requests(port, reqs):
    out = []
    for method, path, headers, body in reqs:
        r = request(port, method, path, headers=headers, body=body)
        data = None
        if r.body.startswith(b"{"):
            data = json.loads(r.body)
            data["vars"] = {k: v.replace(str(port), "PORT") for k, v in data["vars"]}
        out.append((r.status, r.body if data is None else None, data))
    return out


def differential(tmp_path, conf, reqs, extra_files=None, expect_exit=0, named=(), fill_in=None):
    """Runs `conf` under Apache and its import under moongate; returns both result lists after
    checking them equal except for the named differences. `fill_in(lua)` makes the edits the
    importer asks a person to make (it exits 3 for them) before moongate runs the output."""
    d = scratch()
    try:
        for name, text in (extra_files or {}).items():
            p = os.path.join(d, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        port = free_port()
        apache = Apache(d, conf, port)
        try:
            from_apache = run_requests(port, reqs)
        finally:
            apache.stop()
        code, lua, err = import_apache(apache.path)
        assert code == expect_exit, "import-apache exit %d\nstderr:\n%s\noutput:\n%s" % (code, err, lua)
        lua = lua.replace("127.0.0.1:%d" % port, "127.0.0.1:{PORT}")
        if fill_in:
            lua = fill_in(lua)
        imported = write(d, "imported.lua", lua.replace("{PORT}", str(port)))
        check = subprocess.run([MOONGATE, "-t", "-c", imported], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr + lua
        gw = Gateway(tmp_path, lua)
        try:
            from_moongate = run_requests(gw.port, reqs)
        finally:
            gw.stop()
        for (method, path, _, _), a, m in zip(reqs, from_apache, from_moongate):
            what = "%s %s" % (method, path)
            assert a[0] == m[0], "%s: status %d from Apache, %d from moongate" % (what, a[0], m[0])
            # Error pages are each server's own words; what a backend or a sent file produced is compared.
            if a[0] < 400:
                assert a[1] == m[1], "%s: body %r from Apache, %r from moongate" % (what, a[1], m[1])
            if a[2] is None:
                continue
            assert a[2]["backend"] == m[2]["backend"], "%s: Apache chose %s, moongate %s (Apache %s, moongate %s)" % (what, a[2]["backend"], m[2]["backend"], [x[2] and x[2]["backend"] for x in from_apache], [x[2] and x[2]["backend"] for x in from_moongate])
            av, mv = dict(a[2]["vars"]), dict(m[2]["vars"])
            for name in list(av):
                if name in NAMED_APACHE_ONLY or (name.startswith("REDIRECT_") and name not in SPEC7_REDIRECT):
                    av.pop(name)
            # SPEC 20: moongate starts a W3C trace for every request (tracing = true by
            # default); Apache sends no traceparent of its own.
            mv.pop("HTTP_TRACEPARENT", None)
            for name in NAMED_VALUE_DIFFERS:
                assert name in av and name in mv, "%s: %s missing" % (what, name)
                av.pop(name), mv.pop(name)
            if os.environ.get("MG_IMPORT_DEBUG"):
                print(what, "apache-only", sorted(set(av) - set(mv)), "moongate-only", sorted(set(mv) - set(av)))
            for name in sorted(set(av) | set(mv)):
                if (path, name) in named:
                    continue
                assert av.get(name) == mv.get(name), "%s: %s is %r from Apache, %r from moongate" % (
                    what, name, av.get(name), mv.get(name))
            assert a[2]["body"] == m[2]["body"]
        return from_apache, from_moongate, lua
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_plain_proxypass(tmp_path, backends):
    a = backends[0]
    conf = '''
ProxyPass "/scgi-bin/" "scgi://127.0.0.1:%d/" timeout=30 connectiontimeout=5
SetEnv APP_ENV prod
LimitRequestBody 1000
''' % a.port
    reqs = [("GET", "/scgi-bin/hello?x=1&y=%20z", [("X-Custom", "v1"), ("Accept", "text/plain")], None),
            ("POST", "/scgi-bin/form", [("Content-Type", "application/x-www-form-urlencoded")], b"a=1&b=2"),
            ("GET", "/scgi-bin/caf%C3%A9/x", [("Cookie", "k=v")], None),
            ("GET", "/elsewhere", [], None),
            ("POST", "/scgi-bin/big", [], b"x" * 1001)]
    ap, mg, lua = differential(tmp_path, conf, reqs)
    assert ap[0][2]["vars"]["APP_ENV"] == "prod"
    assert ap[3][0] == 404 and ap[4][0] == 413
    assert "timeout = 30" in lua and "connect_timeout = 5" in lua


def test_error_documents(tmp_path, backends):
    """ErrorDocument under Apache and under its import: a local URL served by a backend (the same
    page request at the backend: method GET, REDIRECT_STATUS, REDIRECT_URL, REDIRECT_QUERY_STRING)
    and a message (the same body), for the server's own errors. The page's backend answers with
    the error's status, as an error script does: Apache sends a proxied page's own status, where
    moongate keeps the error's for a 2xx page (docs/migrating-from-apache.md)."""
    a, b = backends
    dead = free_port()
    conf = '''
ProxyPass /app/ scgi://127.0.0.1:%d/
ProxyPass /errors/ scgi://127.0.0.1:%d/
ProxyPass /dead/ scgi://127.0.0.1:%d/
ErrorDocument 404 /errors/404.html?status=404
ErrorDocument 503 "Back in a moment"
''' % (a.port, b.port, dead)
    reqs = [("GET", "/no/route/here?x=1", [], None),
            ("GET", "/no/form", [], None),
            ("GET", "/dead/page", [], None),
            ("GET", "/app/page?status=404", [], None),
            ("GET", "/app/page", [], None)]
    # Apache's error document request has no REDIRECT_QUERY_STRING when the request had no query
    # (the 404 came before any handler set CGI variables); moongate always sends it, "" here.
    ap, mg, lua = differential(tmp_path, conf, reqs, named=(("/no/form", "REDIRECT_QUERY_STRING"),))
    assert [x[0] for x in ap] == [404, 404, 503, 404, 200]
    # The page requests reached the error page's backend (b); the app's own 404 passed (a).
    assert [x[2] and x[2]["backend"] for x in mg] == ["b", "b", None, "a", "a"]
    assert mg[1][2]["vars"]["REDIRECT_STATUS"] == "404" and mg[1][2]["vars"]["REDIRECT_URL"] == "/no/form"
    assert b"Back in a moment" in ap[2][1] and mg[2][1] == b"Back in a moment"
    assert "error_pages = {" in lua


def test_proxy_error_override_becomes_intercept_errors(tmp_path, backends):
    """ProxyErrorOverride On becomes intercept_errors = true (a <Location>'s Off a route option):
    the backend's 404 is answered by the ErrorDocument page. Measured on Debian's Apache 2.4,
    mod_proxy_scgi does not apply the directive (the backend's error passes); the importer says
    so on the line and moongate does what the directive asks."""
    a, b = backends
    conf = tmp_path / "apache.conf"
    conf.write_text('''Listen 127.0.0.1:%d
ProxyPass /app/ scgi://127.0.0.1:%d/
ProxyPass /errors/ scgi://127.0.0.1:%d/
ProxyErrorOverride On
ErrorDocument 404 /errors/404.html
<Location /app/raw/>
  ProxyErrorOverride Off
</Location>
''' % (free_port(), a.port, b.port))
    code, lua, err = import_apache(str(conf))
    assert code == 0, err + lua
    assert "intercept_errors = true" in lua and "mod_proxy_scgi does not apply it" in lua
    gw = Gateway(tmp_path, "\n".join(l for l in lua.splitlines() if not l.startswith("mg.listen(")))
    try:
        r = request(gw.port, path="/app/page?status=404")
        assert r.status == 404 and json.loads(r.body)["backend"] == "b"
        r = request(gw.port, path="/app/raw/page?status=404")
        assert r.status == 404 and json.loads(r.body)["backend"] == "a"
        r = request(gw.port, path="/app/page?status=200")
        assert r.status == 200 and json.loads(r.body)["backend"] == "a"
    finally:
        gw.stop()


def test_error_document_kinds_and_their_failures(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text('''Listen 127.0.0.1:8080
ProxyPass /app/ scgi://127.0.0.1:4000/
ErrorDocument 500 http://status.example/down
ErrorDocument 404 /pages/missing.html
ErrorDocument 200 /x
<Location /app/>
  ErrorDocument 500 default
</Location>
''')
    code, out, err = import_apache(str(conf))
    assert code == 3
    assert 'Location = "http://status.example/down"' in out
    assert "apache.conf:5: not translated" in err and "400 to 599" in err
    # A local page that no route serves: Apache takes it from the DocumentRoot.
    assert "apache.conf:4: not translated" in err and "no route serves /pages/missing.html" in err
    # "default" in the <Location>: its route has no 500 page.
    route = out[out.index('mg.route("/app/"'):]
    assert "[500]" not in route.split("\n})")[0]
    p = tmp_path / "init.lua"
    p.write_text(out)
    assert subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True).returncode == 0


def test_balancer_routes_loadfactors_stickiness(tmp_path, backends):
    a, b = backends
    conf = '''
<Proxy "balancer://cluster">
    BalancerMember "scgi://127.0.0.1:%d" loadfactor=1 route=a timeout=30 connectiontimeout=3 retry=10
    BalancerMember "scgi://127.0.0.1:%d" loadfactor=2 \\
        route=b
    ProxySet lbmethod=byrequests stickysession=ROUTEID
</Proxy>
ProxyPass "/app/" "balancer://cluster/"
''' % (a.port, b.port)
    sticky = [("GET", "/app/s%d" % i, [("Cookie", "ROUTEID=xyz.a")], None) for i in range(3)]
    sticky += [("GET", "/app/q?ROUTEID=1.b", [], None), ("GET", "/app/c", [("Cookie", "other=1; ROUTEID=.b")], None)]
    spread = [("GET", "/app/r%d" % i, [], None) for i in range(6)]
    ap, mg, lua = differential(tmp_path, conf, sticky + spread)
    assert [r[2]["backend"] for r in ap[:5]] == ["a", "a", "a", "b", "b"]
    # Sticky requests count in the weighted rotation (Apache's byrequests): over all 11, 4 and 7.
    picks = [r[2]["backend"] for r in mg]
    assert picks.count("a") == 4 and picks.count("b") == 7, picks
    assert 'stickysession = "ROUTEID"' in lua and "lbfactor = 2" in lua


def test_internal_redirect_and_sendfile_in_location(tmp_path, backends):
    a, b = backends
    d_file = scratch()
    try:
        path = os.path.join(d_file, "report.txt")
        with open(path, "w") as f:
            f.write("file sent by the gateway\n")
        os.chmod(path, 0o644)
        conf = '''
ProxyPass "/app/" "scgi://127.0.0.1:%d/"
ProxyPass "/other/" "scgi://127.0.0.1:%d/"
<Location "/app/">
    ProxySCGIInternalRedirect X-Location
    ProxySCGISendfile On
</Location>
''' % (a.port, b.port)
        reqs = [("GET", "/app/go?xloc=/other/landed%3Fq=1", [], None),
                ("POST", "/app/go?xloc=/other/after-post", [("Content-Type", "text/plain")], b"dropped"),
                ("GET", "/app/ignored?loc=/other/not-followed", [], None),
                ("GET", "/app/dl?file=%s" % path, [], None),
                ("GET", "/other/x?xloc=/app/y", [], None)]
        # Named: after a redirect moongate drops the body with its CONTENT_TYPE; Apache keeps
        # CONTENT_TYPE beside CONTENT_LENGTH 0.
        named = {("/app/go?xloc=/other/after-post", "CONTENT_TYPE")}
        # ProxySCGISendfile On: the importer cannot know where the files are and asks for the
        # roots (exit 3); filled in with the folder of the file sent.
        placeholder = '-- sendfile_roots = { "/FILL/IN/the/folder/of/the/files" },'

        def fill_in(lua):
            assert placeholder in lua, lua
            return lua.replace(placeholder, "sendfile_roots = { %s }," % json.dumps(d_file))
        ap, mg, lua = differential(tmp_path, conf, reqs, named=named, expect_exit=3, fill_in=fill_in)
        assert ap[1][2]["vars"]["CONTENT_TYPE"] == "text/plain" and "CONTENT_TYPE" not in mg[1][2]["vars"]
        landed = mg[0][2]
        assert landed["backend"] == "b" and landed["vars"]["REDIRECT_URL"] == "/app/go"
        assert landed["vars"]["REQUEST_METHOD"] == "GET" and mg[1][2]["vars"]["CONTENT_LENGTH"] == "0"
        assert mg[2][2]["backend"] == "a"  # Location is not the configured header here
        assert ap[3][1] == mg[3][1] == b"file sent by the gateway\n"
        assert 'internal_redirect = "X-Location"' in lua and "sendfile = true" in lua
    finally:
        shutil.rmtree(d_file, ignore_errors=True)


def test_pathinfo_by_setenvif(tmp_path, backends):
    a = backends[0]
    conf = '''
SetEnvIf Request_URI "^/pi/" proxy-scgi-pathinfo
ProxyPass "/pi/" "scgi://127.0.0.1:%d/"
ProxyPass "/nopi/" "scgi://127.0.0.1:%d/"
''' % (a.port, a.port)
    reqs = [("GET", "/pi/a/b?x=1", [], None), ("GET", "/nopi/a/b", [], None), ("GET", "/pi/", [], None),
            ("GET", "/pi/a%20b/c", [], None)]
    # Named: Apache 2.4's "best guess" for an encoded path -- SCRIPT_NAME "/pi/a b",
    # PATH_INFO "/a%20b/c"; moongate sends "/pi" and "/a b/c", which round-trip.
    named = {("/pi/a%20b/c", "SCRIPT_NAME"), ("/pi/a%20b/c", "PATH_INFO")}
    ap, mg, lua = differential(tmp_path, conf, reqs, named=named)
    assert ap[0][2]["vars"]["PATH_INFO"] == "/a/b" and ap[0][2]["vars"]["SCRIPT_NAME"] == "/pi"
    assert "PATH_INFO" not in mg[1][2]["vars"]
    assert (ap[3][2]["vars"]["SCRIPT_NAME"], ap[3][2]["vars"]["PATH_INFO"]) == ("/pi/a b", "/a%20b/c")
    assert (mg[3][2]["vars"]["SCRIPT_NAME"], mg[3][2]["vars"]["PATH_INFO"]) == ("/pi", "/a b/c")
    assert 'req.env["proxy-scgi-pathinfo"]' in lua


def test_included_files(tmp_path, backends):
    a, b = backends
    conf = '''
<IfModule proxy_module>
    Include conf.d/*.conf
</IfModule>
IncludeOptional missing.d/*.conf
'''
    files = {"conf.d/10-app.conf": 'ProxyPass /app/ scgi://127.0.0.1:%d/\nSetEnv FROM_INCLUDE yes\n' % a.port,
             "conf.d/20-api.conf": '<Location "/api/">\n  ProxyPass "scgi://127.0.0.1:%d/"\n</Location>\n' % b.port}
    reqs = [("GET", "/app/x", [], None), ("GET", "/api/y?z=1", [], None)]
    ap, mg, lua = differential(tmp_path, conf, reqs, extra_files=files)
    assert mg[0][2]["vars"]["FROM_INCLUDE"] == "yes" and mg[1][2]["backend"] == "b"
    assert "conf.d/20-api.conf:2" in lua


# ---- regular expressions: ProxyPassMatch, SetEnvIf, <LocationMatch> ----------------------------------

def test_proxypassmatch_routes(tmp_path, backends):
    """ProxyPassMatch onto "~" routes: $1.. in the URL, ! exclusions, parameters, a balancer, the
    order Apache tries ProxyPass and ProxyPassMatch in, and proxy-scgi-pathinfo's PATH_INFO (the
    URL's path as the match fills it in, encoded as mod_proxy encodes it) and SCRIPT_NAME."""
    a, b = backends
    conf = r"""
<Proxy "balancer://c">
    BalancerMember "scgi://127.0.0.1:%(B)d"
</Proxy>
ProxyPassMatch "^/first/(.*)$" "scgi://127.0.0.1:%(A)d/$1"
ProxyPass "/first/" "scgi://127.0.0.1:%(B)d/"
ProxyPass "/plain/" "scgi://127.0.0.1:%(A)d/"
ProxyPassMatch "^/plain/x/(.*)$" "scgi://127.0.0.1:%(B)d/$1"
ProxyPassMatch "^/app/.*\.png$" "!"
ProxyPassMatch "^/app/(.*)$" "scgi://127.0.0.1:%(A)d/$1" timeout=30 connectiontimeout=5
ProxyPassMatch "^/ex/(\d+)/(.*)$" "scgi://127.0.0.1:%(B)d/x/$2/y$1"
SetEnvIf Request_URI "^/(ex|nosubpi)/" proxy-scgi-pathinfo
ProxyPassMatch "^/nosubpi/" "scgi://127.0.0.1:%(A)d/base"
ProxyPassMatch "(?i)^/CI/(a|b){2}" "scgi://127.0.0.1:%(B)d/"
ProxyPassMatch "^/bal/(.*)$" "balancer://c/$1" lbmethod=byrequests
""" % {"A": a.port, "B": b.port}
    reqs = [("GET", p, [], None) for p in [
        "/first/q", "/plain/x/1", "/plain/y", "/app/a/b?x=1", "/app/img/p.png", "/app/caf%C3%A9/x%20y",
        "/ex/12/rest/of?q", "/ex/3/a%20b", "/ex/4/caf%C3%A9", "/nosubpi/k/l", "/CI/ab", "/ci/ba/z", "/ci/c",
        "/bal/m?k=v", "/nomatch"]]
    ap, mg, lua = differential(tmp_path, conf, reqs)
    backend = {p: r[2]["backend"] if r[2] else r[0] for (_, p, _, _), r in zip(reqs, mg)}
    assert backend["/first/q"] == "a" and backend["/plain/x/1"] == "a" and backend["/app/img/p.png"] == 404
    assert backend["/ci/ba/z"] == "b" and backend["/ci/c"] == 404 and backend["/bal/m?k=v"] == "b"
    pi = dict(mg[7][2]["vars"])
    assert (pi["SCRIPT_NAME"], pi["PATH_INFO"]) == ("/ex/3/a b", "/x/a%20b/y3")
    assert dict(mg[9][2]["vars"])["PATH_INFO"] == "/base/nosubpi/k/l"
    assert 'mg.route("~^(?!/first(?=/)|/plain(?=/)).*?\\\\K(?:^/plain/x/(.*)$)"' in lua
    assert "timeout = 30" in lua and "connect_timeout = 5" in lua


def test_setenvif_regexes(tmp_path, backends):
    """SetEnvIf with groups, alternation and counts, $0..$9 and \\ in values, SetEnvIfNoCase,
    headers, Request_Method and Remote_Addr; Request_URI is the path as sent in the server's
    rules and the decoded path in a <Location>'s, as mod_setenvif reads them."""
    a = backends[0]
    conf = r"""
ProxyPass "/app/" "scgi://127.0.0.1:%d/"
SetEnvIf Request_URI "^/app/(v(\d+))/(?:a|b){2}" X_VER=$2 X_ALL=$0 X_AMP=a&b X_BS=a\$1b X_BQ=a\qb X_D=$ X_NOG=$5z
SetEnvIf Request_URI "^(.*)$" X_SRV=$1
SetEnvIfNoCase X-Thing "^(ab|cd)+$" X_THING=got-$1
SetEnvIf X-Missing "^$" X_MISSING=empty
SetEnvIf X-Multi "^one, two$" X_MULTI=joined
SetEnvIf Request_Method "^(P)OST" X_M=$1
SetEnvIf Remote_Addr "^127\.(\d+)" X_RA=$1 !X_NOG
<Location "/app/">
    SetEnvIf Request_URI "^/app/(caf\xc3\xa9) (x)$" X_DEC=$2$1
    SetEnvIf Request_URI "^(.*)$" X_LOC=$1
</Location>
""" % a.port
    reqs = [("GET", "/app/v12/abba?x", [("X-Thing", "ABcd")], None),
            ("GET", "/app/caf%C3%A9%20x", [("X-Missing", "")], None),
            ("POST", "/app/v1/aab", [("X-Multi", "one"), ("X-Multi", "two")], b""),
            ("GET", "/app/x%41//y/./z/../w%20q?k", [("X-Thing", "abab")], None)]
    ap, mg, lua = differential(tmp_path, conf, reqs)
    v = [dict(r[2]["vars"]) for r in mg]
    assert v[0]["X_VER"] == "12" and v[0]["X_ALL"] == "/app/v12/ab" and v[0]["X_THING"] == "got-cd"
    assert v[0]["X_BS"] == "a$1b" and "X_NOG" not in v[0] and v[0]["X_RA"] == "0"
    assert v[1]["X_DEC"] == "xcaf\xc3\xa9" and v[2]["X_M"] == "P" and v[2]["X_MULTI"] == "joined"
    assert v[3]["X_SRV"] == "/app/x%41//y/./z/../w%20q" and v[3]["X_LOC"] == "/app/xA/y/w q"
    assert "mg.re.match(" in lua


def test_locationmatch_sections(tmp_path, backends):
    """<LocationMatch> (and <Location ~>): SetEnv, SetEnvIf, MATCH_ variables of named groups and
    Require all denied are tested in the access hook; ProxySCGIInternalRedirect and
    LimitRequestBody narrow a prefix route to a regex route. A ProxyPass inside proxies nothing
    in Apache 2.4 (404): not translated (exit 3), and moongate answers 404 too."""
    a, b = backends
    conf = r"""
ProxyPass "/app/" "scgi://127.0.0.1:%(A)d/"
ProxyPass "/other/" "scgi://127.0.0.1:%(B)d/"
SetEnv X_GONE here
<LocationMatch "^/app/(?<site>[a-z]+)/(\d+)">
    SetEnv X_LM yes
    UnsetEnv X_GONE
    SetEnvIf Request_URI "(\d+)$" X_TAIL=$1
</LocationMatch>
<LocationMatch "^/app/.*\.php$">
    ProxySCGIInternalRedirect Off
    LimitRequestBody 10
</LocationMatch>
<LocationMatch "^/app/private/">
    Require all denied
</LocationMatch>
<LocationMatch "^/lm/(v\d+)/">
    ProxyPass "scgi://127.0.0.1:%(B)d/"
    SetEnv IN_LM yes
</LocationMatch>
<Location ~ "^/tilde/">
    ProxyPass "scgi://127.0.0.1:%(B)d/"
</Location>
""" % {"A": a.port, "B": b.port}
    reqs = [("GET", "/app/abc/12/x", [], None), ("GET", "/app/abc/12/x13", [], None), ("GET", "/app/ABC/12", [], None),
            ("GET", "/app/x.php?loc=/other/y", [], None), ("GET", "/app/x.cgi?loc=/other/y", [], None),
            ("POST", "/app/y.php", [("Content-Type", "text/plain")], b"x" * 11),
            ("POST", "/app/y.cgi", [("Content-Type", "text/plain")], b"x" * 11),
            ("GET", "/app/private/z", [], None), ("GET", "/lm/v2/q", [], None), ("GET", "/tilde/t", [], None)]
    ap, mg, lua = differential(tmp_path, conf, reqs, expect_exit=3)
    v0 = dict(mg[0][2]["vars"])
    assert v0["MATCH_SITE"] == "abc" and v0["X_LM"] == "yes" and "X_GONE" not in v0 and "X_TAIL" not in v0
    assert dict(mg[1][2]["vars"])["X_TAIL"] == "13"
    assert dict(mg[2][2]["vars"])["X_GONE"] == "here"
    assert mg[3][2]["backend"] == "a" and mg[4][2]["backend"] == "b"
    assert mg[5][0] == 413 and mg[6][0] == 200 and mg[7][0] == 403
    assert ap[8][0] == mg[8][0] == 404 and ap[9][0] == mg[9][0] == 404
    assert lua.count("not translated: ProxyPass") == 2 and "Apache proxies nothing with it" in lua


# ---- what is not translated, and syntax errors ------------------------------------------------------

def test_untranslated_directives_are_commented_named_and_exit_3(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text('Listen 8080\nLoadModule proxy_module mod_proxy.so\nServerRoot /etc/apache2\n'
                    'ProxyPass /app/ scgi://127.0.0.1:4000/\nHeader set X-Frame-Options DENY\n'
                    'RewriteRule ^/old /new [R]\nFrobnicate on\nProxyPass /h/ http://127.0.0.1:80/\n')
    code, out, err = import_apache(str(conf))
    assert code == 3, err
    for line in (5, 6, 7, 8):
        assert "apache.conf:%d: not translated" % line in err
    assert "-- not translated: Header set X-Frame-Options DENY (apache.conf:5)" in out
    assert "-- not translated: Frobnicate on (apache.conf:7)" in out
    # Meaningless ones are comments that do not change the status.
    assert "-- LoadModule proxy_module mod_proxy.so (apache.conf:2)" in out
    assert "apache.conf:2" not in err
    assert 'mg.route("/app/", "scgi://127.0.0.1:4000/")' in out
    p = tmp_path / "init.lua"
    p.write_text(out)
    assert subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True).returncode == 0


def test_everything_translated_exits_0(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text('# comment\nListen 127.0.0.1:8080\nServerName www.example.com:80\nPidFile x.pid\n'
                    'KeepAliveTimeout 5\nMaxKeepAliveRequests 0\nLimitRequestFields 50\nProxyTimeout 20\n'
                    'ProxyPass /app/ "unix:/run/app.sock|scgi://"\nProxyPassReverse /app/ "unix:/run/app.sock|scgi://"\n'
                    '<Location /app/>\n  Require all granted\n  SetEnvIfNoCase User-Agent "^curl" IS_CURL=yes\n</Location>\n')
    code, out, err = import_apache(str(conf))
    assert code == 0, err
    assert err == ""
    assert 'server_name = "www.example.com"' in out and "keepalive_requests = 1000000000" in out
    assert 'if string.find((req.headers["User-Agent"] or ""), "^[cC][uU][rR][lL]") then req.env["IS_CURL"] = "yes" end' in out
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("text,line,message", [
    ("ProxyPass /a/ scgi://h/\n<Location /a/>\nSetEnv A b\n", 2, "<Location> section is never closed"),
    ("<Proxy balancer://x>\n</Location>\n", 2, "</Location> closes <Proxy>"),
    ("\n\nSetEnv A \"unterminated\n", 3, "unterminated \" quote"),
    ("<Location /a/\n</Location>\n", 1, "lacks its closing '>'"),
    ("Include nothing/here/*.conf\n", 1, "no file matches the wildcard"),
    ("Include nothing/here.conf\n", 1, "cannot open"),
    ("Listen 8080\nSetEnv A \"x\0y\"\n", 2, "a NUL byte"),
])
def test_syntax_errors_exit_1_with_file_line(tmp_path, text, line, message):
    conf = tmp_path / "apache.conf"
    conf.write_text(text)
    code, out, err = import_apache(str(conf))
    assert code == 1
    assert out == ""
    assert "apache.conf:%d: " % line in err and message in err, err


def test_include_loop_is_a_syntax_error(tmp_path):
    (tmp_path / "a.conf").write_text("Include b.conf\n")
    (tmp_path / "b.conf").write_text("\nInclude a.conf\n")
    code, out, err = import_apache(str(tmp_path / "a.conf"))
    assert code == 1 and "more than 32 deep" in err


def test_virtual_hosts_become_host_routes(tmp_path, backends):
    """Name-based virtual hosts: each name (ServerAlias too) gets its routes with `host`, and
    the first virtual host also answers any other name, as Apache's default host does."""
    a, b = backends
    conf = tmp_path / "apache.conf"
    conf.write_text('''Listen 127.0.0.1:8080
<VirtualHost *:8080>
  ServerName a.example
  ServerAlias www.a.example
  ProxyPass / scgi://127.0.0.1:%d/
</VirtualHost>
<VirtualHost *:8080>
  ServerName b.example
  ProxyPass / scgi://127.0.0.1:%d/
  <Location /private/>
    Require all denied
  </Location>
</VirtualHost>
''' % (a.port, b.port))
    code, out, err = import_apache(str(conf))
    assert code == 0, err
    g = Gateway(tmp_path, out.replace("127.0.0.1:8080", "127.0.0.1:{PORT}"))
    try:
        def backend_for(host, path="/x"):
            s = socket.create_connection(("127.0.0.1", g.port))
            s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            status = int(head.split()[1])
            return status, json.loads(body)["backend"] if status == 200 else None
        assert backend_for("a.example") == (200, "a")
        assert backend_for("www.a.example") == (200, "a")
        assert backend_for("b.example") == (200, "b")
        assert backend_for("other.example") == (200, "a")
        assert backend_for("b.example", "/private/x") == (403, None)
        assert backend_for("a.example", "/private/x") == (200, "a")
    finally:
        g.stop()


# ---- hostile input: the output is data turned into code ---------------------------------------------
#
# A configuration (and the names of the files it includes) may come from someone else. Whatever
# it holds, the init.lua printed must do nothing but configure moongate: nothing of it may run
# as code, under `moongate -t` or at start.

PAYLOAD = b"os.execute('touch pwned-os') io.open('pwned-io','w') require('pwned-require') --"
MARKERS = ("pwned", "pwned-os", "pwned-io")


def run_check(d, lua_path):
    """`moongate -t` on an init.lua with the current folder `d`, as a user would run it."""
    return subprocess.run([MOONGATE, "-t", "-c", lua_path], cwd=d, capture_output=True, timeout=60)


def assert_inert(d, out):
    """The output is printable ASCII lines, and `moongate -t` on it, run in `d`, creates nothing."""
    bad = sorted({c for c in out.encode("latin-1") if c != 0x0a and not 0x20 <= c <= 0x7e})
    assert not bad, "bytes %s in the output:\n%s" % (bad, out)
    before = set(os.listdir(d))
    lua_path = os.path.join(d, "imported.lua")
    with open(lua_path, "w", encoding="latin-1") as f:
        f.write(out)
    r = run_check(d, lua_path)
    created = set(os.listdir(d)) - before - {"imported.lua"}
    assert not created, "moongate -t on the output created %s\n%s" % (sorted(created), out)
    return r


def import_bytes(path):
    p = subprocess.run([MOONGATE, "import-apache", path], capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode("latin-1"), p.stderr.decode("latin-1")


def issue_repro(d):
    with open(os.path.join(d, "evil.conf"), "wb") as f:
        f.write(b"Listen 127.0.0.1:8080\nProxyPass /app/ scgi://127.0.0.1:4000/ \"retry=5\ros.execute('touch pwned') --\"\n")
    return "evil.conf"


def vector(text):
    def make(d):
        with open(os.path.join(d, "evil.conf"), "wb") as f:
            f.write(b"Listen 127.0.0.1:8080\nProxyPass /ok/ scgi://127.0.0.1:4000/\n" + text.replace(b"CODE", b"\r" + PAYLOAD) + b"\n")
        return "evil.conf"
    return make


def included_name(d):
    os.mkdir(os.path.join(d, "conf.d"))
    with open(os.path.join(d.encode(), b"conf.d/x\r" + PAYLOAD + b".conf"), "wb") as f:
        f.write(b"SetEnv FROM_INCLUDE yes\n")
    with open(os.path.join(d, "evil.conf"), "wb") as f:
        f.write(b"Listen 127.0.0.1:8080\nInclude conf.d/*.conf\nProxyPass /app/ scgi://127.0.0.1:4000/\n")
    return "evil.conf"


def main_file_name(d):
    name = b"main\r" + PAYLOAD + b".conf"
    with open(os.path.join(d.encode(), name), "wb") as f:
        f.write(b"Listen 127.0.0.1:8080\nProxyPass /app/ scgi://127.0.0.1:4000/\n")
    return name


# The hostile probe's reproduction (docs/reliability.md, "The hostile probe") and each vector it
# names: a bare CR in the text the importer writes into a comment (or a file name) would end the
# comment, and the rest would run.
VECTORS = {
    "issue_repro": issue_repro,
    "include_comment": vector(b'Include conf.d/none*.conf "CODE"'.replace(b"conf.d/none*.conf", b"evil-inc.conf")),
    "proxypass_flag": vector(b'ProxyPass /a/ scgi://127.0.0.1:4000/ "nocanonCODE"'),
    "route_note": vector(b'ProxyPass /a/ scgi://127.0.0.1:4000/ "keepalive=OnCODE"'),
    "lbmethod": vector(b'<Proxy balancer://b>\nBalancerMember scgi://127.0.0.1:4001\nProxySet "lbmethod=xCODE"\n</Proxy>'),
    "setenvif_attribute": vector(b'SetEnvIf "X(CODE" ^a A=1'),
    "setenvif_regex": vector(b'SetEnvIf Request_URI "(aCODE" A=1'),
    "listen_protocol": vector(b'Listen 8081 "httpsCODE"'),
    "proxy_url": vector(b'<Proxy "http://x/CODE">\nHeader set A b\n</Proxy>'),
    "included_file_name": included_name,
    "main_file_name": main_file_name,
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_hostile_text_never_runs_as_code(name):
    d = scratch()
    try:
        with open(os.path.join(d, "evil-inc.conf"), "w") as f:
            f.write("SetEnv INC yes\n")
        conf = VECTORS[name](d)
        path = os.path.join(d.encode(), conf if isinstance(conf, bytes) else conf.encode())
        code, out, err = import_bytes(path)
        assert code in (0, 3), err
        r = assert_inert(d, out)
        assert r.returncode == 0, r.stderr
        assert not any(os.path.exists(os.path.join(d, m)) for m in MARKERS)
        # What was written stays visible, escaped: a CR is \013 in the comment.
        assert "\\013os.execute" in out, out
    finally:
        shutil.rmtree(d, ignore_errors=True)


# The sandbox: loads the output as moongate -t would, but with an environment that holds only
# `require`, giving a recording stand-in for moongate; records every other global read or
# written, every module required, and every string handed to mg.*; then calls each function
# handed to mg.* (the hooks) with a request of strings, recording what they touch. It writes
# the record to REPORT and declares a listener of its own, so -t itself passes.
SANDBOX = r'''
local real = require "moongate"
local imp = require "_import_apache"
local OUT, REPORT, DUMP = %s, %s, %s
local lines = {}
local function rec(...) lines[#lines + 1] = table.concat({ ... }, " ") end
local function hex(s) return (s:gsub(".", function(c) return string.format("%%02x", c:byte()) end)) end
if DUMP then
  -- The importer's own table of directives and sections, for the test to build its configs.
  for _, d in ipairs(imp.directives()) do
    for _, ex in ipairs(d.examples) do
      local args, body = {}, {}
      for _, a in ipairs(ex) do args[#args + 1] = hex(a) end
      for _, b in ipairs(ex.body or {}) do body[#body + 1] = hex(b) end
      rec("DIRECTIVE", d.name, d.section and "section" or "directive", ex.ctx or "main",
          "args:" .. table.concat(args, ","), "body:" .. table.concat(body, ","))
    end
  end
else
  local fns = {}
  local function walk(v, seen)
    if type(v) == "string" then rec("STR", hex(v))
    elseif type(v) == "function" then fns[#fns + 1] = v
    elseif type(v) == "table" and not seen[v] then
      seen[v] = true
      for k, x in pairs(v) do walk(k, seen); walk(x, seen) end
    end
  end
  local in_hook = false
  -- In hooks: mg.re finds nothing and mg.unescape_uri gives its argument back.
  local hook_api = { re = { match = function() return nil end, find = function() return nil end },
                     unescape_uri = function(s) return s end }
  local stub = setmetatable({}, { __index = function(_, name)
    if in_hook and hook_api[name] then return hook_api[name] end
    return function(...)
      rec("CALL", tostring(name))
      for i = 1, select("#", ...) do walk((select(i, ...)), {}) end
    end
  end })
  local env = setmetatable({}, {
    __index = function(_, k)
      if k == "require" and not in_hook then
        return function(name)
          rec("REQUIRE", tostring(name))
          return name == "moongate" and stub or nil
        end
      end
      if k == "string" and in_hook then return { find = string.find } end
      rec("TRAP", "read", tostring(k))
    end,
    __newindex = function(_, k) rec("TRAP", "write", tostring(k)) end,
  })
  local chunk, err = loadfile(OUT)
  if not chunk then rec("ERROR", "load", err) else
    setfenv(chunk, env)
    local ok, e = pcall(chunk)
    if not ok then rec("ERROR", "run", tostring(e)) end
    in_hook = true
    for _, fn in ipairs(fns) do
      local req = { uri = "/x/y.php", raw_uri = "/x/y.php?q", method = "GET", http_version = "1.1", remote_addr = "127.0.0.1", env = {},
                    headers = setmetatable({}, { __index = function() return "curl/7.x" end }),
                    exit = function() return true end }
      local ok2, e2 = pcall(fn, req)
      if not ok2 then rec("ERROR", "hook", tostring(e2)) end
    end
  end
end
local f = assert(io.open(REPORT, "w"))
f:write(table.concat(lines, "\n"), "\n")
f:close()
real.listen("127.0.0.1:1")
'''


def sandbox(d, out_path, dump=False):
    """Runs SANDBOX under `moongate -t`; returns its record as a list of [kind, ...] rows."""
    report = os.path.join(d, "report.txt")
    lua = os.path.join(d, "sandbox.lua")
    with open(lua, "w") as f:
        f.write(SANDBOX % (json.dumps(out_path), json.dumps(report), "true" if dump else "false"))
    r = run_check(d, lua)
    assert r.returncode == 0, r.stderr
    with open(report) as f:
        rows = [line.split(" ") for line in f.read().splitlines() if line]
    os.unlink(report)
    return rows


def importer_directives(d):
    """The importer's directive table: (name, is_section, context, args, body), bytes."""
    out = []
    for row in sandbox(d, "", dump=True):
        assert row[0] == "DIRECTIVE"
        args = [bytes.fromhex(a) for a in row[4][len("args:"):].split(",") if a]
        body = [bytes.fromhex(b) for b in row[5][len("body:"):].split(",") if b]
        out.append((row[1], row[2] == "section", row[3], args, body))
    return out


def apache_quote(v):
    return b'"' + v.replace(b'"', b'\\"') + b'"'


def hostile_config(directives, byte):
    """A configuration holding every example of every directive once per argument, with that
    argument (or, for key=value, its value) replaced by a value around `byte` and PAYLOAD. The
    same directive is never repeated with the same names, so nothing is merged away. Returns
    the text and the SetEnv values expected back, byte for byte, in the route's env."""
    c = bytes([byte])
    value = b"a" + c + c + PAYLOAD + c + c + b"z"
    lines = [b"Listen 127.0.0.1:8080", b"ProxyPass /base/ scgi://127.0.0.1:4000/"]
    expect_env = []
    n = 0
    for name, section, ctx, args, body in directives:
        slots = []
        for i, a in enumerate(args):
            slots.append((i, value))
            if b"=" in a:
                slots.append((i, a.split(b"=", 1)[0] + b"=" + value))
        for i, v in slots:
            n += 1
            words = [apache_quote(v if j == i else a) for j, a in enumerate(args)]
            if section:
                inst = [b"<" + name.encode() + b" " + b" ".join(words) + b">"] + body + [b"</" + name.encode() + b">"]
            else:
                inst = [name.encode() + b" " + b" ".join(words)]
            if name == "setenv" and i == 1 and ctx in ("main", "location"):
                expect_env.append(v)
            if ctx == "location":
                inst = [b"<Location /c%d/>" % n, b"ProxyPass scgi://127.0.0.1:4000/"] + inst + [b"</Location>"]
            elif ctx == "virtualhost":
                inst = [b"<VirtualHost *:80>", b"ServerName v%d.example" % n, b"ProxyPass /v%d/ scgi://127.0.0.1:4000/" % n] + inst + [b"</VirtualHost>"]
            elif ctx == "proxy":
                inst = [b"<Proxy balancer://p%d>" % n, b"BalancerMember scgi://127.0.0.1:4001"] + inst + [b"</Proxy>",
                        b"ProxyPass /p%d/ balancer://p%d/" % (n, n)]
            lines += inst
    return b"\n".join(lines) + b"\n", expect_env


def check_sandboxed(d, out, expect_strings=()):
    out_path = os.path.join(d, "imported.lua")
    with open(out_path, "w", encoding="latin-1") as f:
        f.write(out)
    rows = sandbox(d, out_path)
    bad = [r for r in rows if r[0] in ("TRAP", "ERROR") or (r[0] == "REQUIRE" and r[1] != "moongate")]
    assert not bad, "the output did more than configure moongate: %s" % bad[:5]
    calls = {r[1] for r in rows if r[0] == "CALL"}
    assert calls <= {"listen", "set", "balancer", "route", "on"}, calls
    assert "route" in calls
    strings = {bytes.fromhex(r[1]) for r in rows if r[0] == "STR"}
    for s in expect_strings:
        assert s in strings, "%r did not come back as it was written" % s


def test_every_byte_in_every_slot_of_every_directive_stays_data():
    """For each byte 1-255 (but LF, which ends a directive; NUL is an error), a configuration with that byte
    around PAYLOAD in every argument of every example of the importer's own directive table;
    the output is printable ASCII, `moongate -t` on it creates nothing (and passes when the
    importer said 0), and the sandbox sees nothing but mg.* calls. The bytes are checked two at
    a time, each in a folder of its own (the work is three processes per byte)."""
    d = scratch()
    try:
        directives = importer_directives(d)
        assert len({x[0] for x in directives}) > 100 and any(x[1] for x in directives)

        def check(byte):
            bd = os.path.join(d, "b%d" % byte)
            os.mkdir(bd)
            text, expect_env = hostile_config(directives, byte)
            conf = os.path.join(bd, "apache.conf")
            with open(conf, "wb") as f:
                f.write(text)
            code, out, err = import_bytes(conf)
            if byte == 0:
                # Apache would read each line up to the NUL: the importer refuses it.
                assert code == 1 and out == "" and "apache.conf:3: a NUL byte" in err, err
                return
            assert code in (0, 3), "byte %d: exit %d\n%s" % (byte, code, err[-2000:])
            r = assert_inert(bd, out)
            if code == 0:
                assert r.returncode == 0, r.stderr
            check_sandboxed(bd, out, expect_env)
            assert not any(os.path.exists(os.path.join(bd, m)) for m in MARKERS), byte
            shutil.rmtree(bd)

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(check, b) for b in range(256) if b != 0x0a]:
                f.result()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_every_byte_in_included_file_names_stays_data():
    """An Include whose wildcard matches files named with every byte (but NUL and /) around
    PAYLOAD: the names reach the output (in file:line comments), as data."""
    d = scratch()
    try:
        inc = os.path.join(d, "inc")
        os.mkdir(inc)
        for byte in range(1, 256):
            if byte == ord("/"):
                continue
            c = bytes([byte])
            name = b"i" + c + c + PAYLOAD + c + c + b"%03d.conf" % byte
            with open(os.path.join(inc.encode(), name), "wb") as f:
                f.write(b"SetEnv INC_%d yes\n" % byte)
        conf = os.path.join(d, "apache.conf")
        with open(conf, "w") as f:
            f.write("Listen 127.0.0.1:8080\nInclude inc/*.conf\nProxyPass /app/ scgi://127.0.0.1:4000/\n")
        code, out, err = import_bytes(conf)
        assert code == 0, err
        assert out.count("SetEnv INC_") == 254
        r = assert_inert(d, out)
        assert r.returncode == 0, r.stderr
        check_sandboxed(d, out)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- ProxySCGISendfile: no root the importer could guess is safe ------------------------------------

@pytest.mark.parametrize("directive,in_location", [("ProxySCGISendfile On", False), ("ProxySCGISendfile X-Send-Static", True)])
def test_sendfile_gets_a_root_to_fill_in_and_exits_3(tmp_path, directive, in_location):
    """`sendfile_roots = { "/" }` let a backend's X-Sendfile send /etc/shadow. The importer
    cannot know where the application's files are: the route gets a commented-out root to fill
    in, it exits 3 naming the directive, and the output fails -t until the root is given."""
    body = '<Location /app/>\n%s\n</Location>\n' % directive if in_location else directive + "\n"
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\nProxyPass /app/ scgi://127.0.0.1:4000/\n" + body)
    code, out, err = import_apache(str(conf))
    assert code == 3, err
    line = 4 if in_location else 3
    assert "apache.conf:%d: to finish by hand: %s" % (line, directive) in err and "sendfile_roots" in err, err
    assert 'sendfile_roots = { "/" }' not in out
    placeholder = '-- sendfile_roots = { "/FILL/IN/the/folder/of/the/files" },'
    assert placeholder in out
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and "sendfile is on but sendfile_roots is not set" in r.stderr, r.stdout + r.stderr
    files = tmp_path / "files"
    files.mkdir()
    p.write_text(out.replace(placeholder, "sendfile_roots = { %s }," % json.dumps(str(files))))
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- what the importer reads, and the numbers it writes -------------------------------------------

def test_include_of_a_fifo_or_device_is_refused(tmp_path):
    """A FIFO would block the importer for good and /dev/zero never ends: neither is read."""
    (tmp_path / "conf.d").mkdir()
    os.mkfifo(str(tmp_path / "conf.d" / "pipe.conf"))
    os.mkfifo(str(tmp_path / "named.conf"))
    for include, shown in (("conf.d/*.conf", "conf.d/pipe.conf"), ("named.conf", "named.conf"),
                           ("/dev/zero", "/dev/zero")):
        conf = tmp_path / "apache.conf"
        conf.write_text("Listen 127.0.0.1:8080\nInclude %s\n" % include)
        code, out, err = import_apache(str(conf))
        assert code == 1 and out == "", err
        assert "apache.conf:2: Include: cannot read" in err and shown in err and "not a regular file" in err, err


def test_configuration_over_16_mib_is_refused(tmp_path):
    big = tmp_path / "big.conf"
    with open(str(big), "wb") as f:
        f.truncate(17 * 1024 * 1024)
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\nInclude big.conf\n")
    code, out, err = import_apache(str(conf))
    assert code == 1 and out == ""
    assert "apache.conf:2: Include: cannot read" in err and "more than 16 MiB of configuration" in err, err[:500]
    assert len(err) < 1000


def nested(depth):
    return ("Listen 127.0.0.1:8080\n" + "<IfModule m>\n" * depth + "ProxyPass /a/ scgi://127.0.0.1:4000/\n"
            + "</IfModule>\n" * depth)


def test_sections_nest_64_deep_and_no_deeper(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text(nested(64))
    code, out, err = import_apache(str(conf))
    assert code == 0, err
    conf.write_text(nested(10000))
    code, out, err = import_apache(str(conf))
    assert code == 1 and out == ""
    assert err.startswith("moongate import-apache: ") and err.endswith("/apache.conf:66: sections nested more than 64 deep\n"), err[:500]
    # Included files count the sections around their Include.
    (tmp_path / "inner.conf").write_text("<IfModule x>\n</IfModule>\n")
    conf.write_text("Listen 127.0.0.1:8080\n" + "<IfModule m>\n" * 64 + "Include inner.conf\n" + "</IfModule>\n" * 64)
    code, out, err = import_apache(str(conf))
    assert code == 1 and "inner.conf:1: sections nested more than 64 deep" in err, err


def test_100k_continuation_lines_are_joined_in_linear_time(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\nProxyPass /a/ scgi://127.0.0.1:4000/\n<Location /a/>\nSetEnv LONG \\\n"
                    + "0123456789\\\n" * 100000 + "y\n</Location>\n")
    start = time.time()
    code, out, err = import_apache(str(conf))
    elapsed = time.time() - start
    assert code == 0, err
    assert '["LONG"] = "%sy",' % ("0123456789" * 100000) in out
    assert elapsed < (5 if SANITIZED else 1), elapsed


@pytest.mark.parametrize("text,line,what", [
    ("<Proxy balancer://b>\nBalancerMember scgi://127.0.0.1:4001\nProxySet maxattempts=1e999\n</Proxy>\n"
     "ProxyPass /b/ balancer://b/\n", 5, "maxattempts=1e999"),
    ("ProxyPass /b/ balancer://b/ maxattempts=-1\nBalancerMember balancer://b scgi://127.0.0.1:4001\n", 3, "maxattempts=-1"),
    ("LimitRequestBody -5\n", 3, "LimitRequestBody -5"),
    ("LimitRequestFields 1e999\n", 3, "LimitRequestFields 1e999"),
    ("MaxKeepAliveRequests 1.5\n", 3, "MaxKeepAliveRequests 1.5"),
    ("Timeout 99999999999999999999\n", 3, "Timeout 99999999999999999999"),
    ("<Location /a/>\nLimitRequestBody 0x10\n</Location>\n", 4, "LimitRequestBody 0x10"),
])
def test_numbers_out_of_range_are_not_translated(tmp_path, text, line, what):
    """A number moongate's checks would refuse -- or read as a global (inf) -- is named with
    file:line and left out (exit 3); the rest of the output passes -t."""
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\nProxyPass /a/ scgi://127.0.0.1:4000/\n" + text)
    code, out, err = import_apache(str(conf))
    assert code == 3, err
    assert "apache.conf:%d: not translated: " % line in err and what in err, err
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + out


@pytest.mark.parametrize("text,line,message", [
    ("ProxyPass /x/ scgi://bad_host!:4000/\n", 2, "bad host in backend URL"),
    ("User no-such-user-here\n", 2, 'no user named "no-such-user-here"'),
    ('<VirtualHost *:80>\nServerName ""\nProxyPass /v/ scgi://127.0.0.1:4000/\n</VirtualHost>\n', 4, "host: expected a host name"),
    ("ProxyPass /x/ scgi://127.0.0.1:4000/\nProxySCGIInternalRedirect X(Location)\n", 2, "internal_redirect: expected"),
])
def test_output_that_fails_t_is_never_exit_0(tmp_path, text, line, message):
    """Whatever the importer does not check itself, moongate's own checks (those of -t) run on
    the output before it exits: an output -t refuses is exit 3, the reason named on stderr."""
    conf = tmp_path / "apache.conf"
    with open(str(conf), "w") as f:
        f.write("Listen 127.0.0.1:8080\n" + text)
    code, out, err = import_apache(str(conf))
    assert code == 3, err
    assert "(apache.conf:%d): the output does not pass `moongate -t` as it stands" % line in err and message in err, err
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and message in r.stderr


@pytest.mark.parametrize("text,line", [
    ('ProxyPass /u/ "unix:/run/%s.sock|scgi://"\n' % ("x" * 100), 2),
    ('<Proxy balancer://b>\nBalancerMember "unix:/run/%s.sock|scgi://"\nBalancerMember scgi://127.0.0.1:4001\n</Proxy>\n'
     "ProxyPass /b/ balancer://b/\n" % ("x" * 100), 3),
    ("Listen 70000\n", 2),
    ("Listen unix:/run/app.sock\n", 2),
    ("Listen [::1]\n", 2),
])
def test_addresses_moongate_cannot_use_are_not_translated(tmp_path, text, line):
    """A socket path longer than sockaddr_un holds, a port out of range, a Listen form Apache
    does not have: named with file:line (exit 3), and the rest of the output passes -t."""
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\n" + text + "ProxyPass /a/ scgi://127.0.0.1:4000/\n")
    code, out, err = import_apache(str(conf))
    assert code == 3, err
    assert "apache.conf:%d: not translated: " % line in err, err
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + out


def test_no_listener_is_not_exit_0(tmp_path):
    conf = tmp_path / "apache.conf"
    conf.write_text("ProxyPass /x/ scgi://127.0.0.1:4000/\n")
    code, out, err = import_apache(str(conf))
    assert code == 3 and "no listener" in err, err


def test_location_that_denies_and_sets_variables_gives_lua_that_loads(tmp_path):
    """Found by fuzz_import: `Require all denied` wrote `return req:exit(403)` before the
    SetEnvIf lines of the same access hook, and a return must end a Lua block."""
    conf = tmp_path / "apache.conf"
    conf.write_text("Listen 127.0.0.1:8080\nProxyPass /a/ scgi://127.0.0.1:4000/\n<Location /a/>\n"
                    "  SetEnvIf User-Agent ^curl IS_CURL=1\n  Require all denied\n</Location>\n")
    code, out, err = import_apache(str(conf))
    assert code == 0, err
    p = tmp_path / "init.lua"
    p.write_text(out)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + out
