"""`moongate import-apache` (SPEC 16): Apache 2.4 from Debian runs a configuration, moongate
runs its translation, against the same SCGI backends; the same requests must give each backend
the same variables, variable by variable, and the client the same status and body.

Where Apache and moongate differ on purpose, the test names the difference (NAMED_* below)
rather than skipping the variable."""
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

from conftest import MOONGATE, Gateway, free_port, request, wait_port

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = ["mpm_event", "authz_core", "proxy", "proxy_scgi", "proxy_balancer", "slotmem_shm",
           "lbmethod_byrequests", "setenvif", "env"]

# Variables only Apache sends: its document root, the file paths derived from it and its admin
# (no meaning for a gateway), the process environment it leaks (PATH; SPEC 5 forbids it),
# CGI's interface version, and mod_proxy_balancer's bookkeeping (BALANCER_*: which balancer and
# member it chose; SPEC 5 does not send them -- docs/migrating-from-apache.md says so).
NAMED_APACHE_ONLY = {"PATH", "DOCUMENT_ROOT", "CONTEXT_DOCUMENT_ROOT", "CONTEXT_PREFIX", "SERVER_ADMIN",
                     "SCRIPT_FILENAME", "PATH_TRANSLATED", "SERVER_SIGNATURE", "GATEWAY_INTERFACE",
                     "BALANCER_NAME", "BALANCER_WORKER_NAME", "BALANCER_WORKER_ROUTE", "BALANCER_SESSION_ROUTE",
                     "BALANCER_SESSION_STICKY", "BALANCER_ROUTE_CHANGED"}
# After an internal redirect Apache copies every CGI variable of the previous hop with a
# REDIRECT_ prefix; SPEC 7 sends the four a redirect target needs (compared like the rest).
SPEC7_REDIRECT = {"REDIRECT_STATUS", "REDIRECT_URL", "REDIRECT_QUERY_STRING", "REDIRECT_REQUEST_METHOD"}
# Apache forwards the proxy-scgi-pathinfo switch itself; SPEC 5 does not.
NAMED_APACHE_ONLY.add("proxy-scgi-pathinfo")
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
                resp = ("Status: 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
                        % (extra, len(out))).encode() + out
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
        # Named: after a redirect SPEC 7 drops the body with its CONTENT_TYPE; Apache keeps
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
    # Named: Apache 2.4's "best guess" for an encoded path (SPEC 5) -- SCRIPT_NAME "/pi/a b",
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
