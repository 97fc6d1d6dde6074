"""SPEC 19, static routes' options: `expires` and `cache_control` (on 200, 206, 301, 304 and 416,
never on 404/403), ETag + If-None-Match by RFC 9110's weak comparison (lists, W/, "*", the
precedence over If-Modified-Since, what a 304 carries, HEAD), `index` lists and the 301 of a
directory asked for without its slash, `fallback` to an SCGI or a Lua route (the URI, method and
body unchanged; not taken when the file exists), bad values as load errors naming init.lua:line,
and a differential check of status and header presence against Debian's nginx.

Basic file serving (types, ranges, confinement) is in test_responses.py::test_static_files and
precompressed siblings in test_compress.py; neither is repeated here."""
import calendar
import email.utils
import os
import subprocess
import time

import pytest

from conftest import MOONGATE, request, scgi_vars
from openresty import start_openresty, stop_openresty


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "both").mkdir()
    (root / "empty").mkdir()
    (root / "dirindex" / "index.html").mkdir(parents=True)
    (root / "a.txt").write_text("hello static\n")
    (root / "docs" / "index.html").write_text("<p>docs</p>\n")
    (root / "both" / "index.htm").write_text("htm first\n")
    (root / "both" / "index.html").write_text("html second\n")
    (root / "dirindex" / "index.htm").write_text("the file after a directory\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(str(secret), str(root / "escape"))
    return root


def http_time(value):
    return calendar.timegm(email.utils.parsedate(value))


def max_age(r):
    return int(r.header("Cache-Control").split("=", 1)[1])


def assert_expires(r, seconds):
    """Cache-Control: max-age=N and Expires = Date + N (a second of slack for the clock)."""
    assert r.header("Cache-Control") == "max-age=%d" % seconds, r.raw_head
    assert abs(http_time(r.header("Expires")) - http_time(r.header("Date")) - seconds) <= 1, r.raw_head


def no_cache_headers(r):
    return r.header("Expires") is None and r.header("Cache-Control") is None


# ---- expires, cache_control -------------------------------------------------------------------

def test_expires_forms(gateway, www):
    g = gateway('''
mg.route("/n/", { root = "%(w)s", expires = 600 })
mg.route("/combo/", { root = "%(w)s", expires = "1h 30m" })
mg.route("/days/", { root = "%(w)s", expires = "7d" })
mg.route("/year/", { root = "%(w)s", expires = "1y 2d" })
mg.route("/tight/", { root = "%(w)s", expires = "1h30m10" })
mg.route("/zero/", { root = "%(w)s", expires = 0 })
mg.route("/past/", { root = "%(w)s", expires = "-1h" })
mg.route("/max/", { root = "%(w)s", expires = "max" })
mg.route("/epoch/", { root = "%(w)s", expires = "epoch" })
mg.route("/off/", { root = "%(w)s", expires = "off" })
mg.route("/plain/", { root = "%(w)s" })
''' % {"w": www})
    assert_expires(request(g.port, path="/n/a.txt"), 600)
    assert_expires(request(g.port, path="/combo/a.txt"), 5400)
    assert_expires(request(g.port, path="/days/a.txt"), 7 * 86400)
    assert_expires(request(g.port, path="/year/a.txt"), 367 * 86400)
    assert_expires(request(g.port, path="/tight/a.txt"), 5410)
    assert_expires(request(g.port, path="/zero/a.txt"), 0)
    r = request(g.port, path="/past/a.txt")
    assert r.header("Cache-Control") == "no-cache"
    assert http_time(r.header("Expires")) < http_time(r.header("Date")) - 3000
    r = request(g.port, path="/max/a.txt")
    assert r.header("Cache-Control") == "max-age=315360000" and r.header("Expires") == "Thu, 31 Dec 2037 23:55:55 GMT"
    r = request(g.port, path="/epoch/a.txt")
    assert r.header("Cache-Control") == "no-cache" and r.header("Expires") == "Thu, 01 Jan 1970 00:00:01 GMT"
    for p in ("/off/a.txt", "/plain/a.txt"):
        r = request(g.port, path=p)
        assert r.status == 200 and no_cache_headers(r)


def test_expires_on_200_206_301_304_416_not_on_errors(gateway, www):
    g = gateway('mg.route("/s/", { root = "%s", expires = "10m" })\n' % www)
    r = request(g.port, path="/s/a.txt")
    assert r.status == 200 and r.body == b"hello static\n"
    assert_expires(r, 600)
    etag = r.header("ETag")
    r = request(g.port, path="/s/a.txt", headers=[("Range", "bytes=0-4")])
    assert r.status == 206 and r.body == b"hello"
    assert_expires(r, 600)
    r = request(g.port, path="/s/a.txt", headers=[("If-None-Match", etag)])
    assert r.status == 304
    assert_expires(r, 600)
    r = request(g.port, path="/s/docs")
    assert r.status == 301
    assert_expires(r, 600)
    r = request(g.port, path="/s/a.txt", headers=[("Range", "bytes=500-")])
    assert r.status == 416  # nginx's expires sees the 200 before its range filter makes it a 416
    assert_expires(r, 600)
    for p, status in (("/s/nope.txt", 404), ("/s/empty/", 403), ("/s/escape", 403)):
        r = request(g.port, path=p)
        assert r.status == status and no_cache_headers(r), p
    r = request(g.port, path="/s/a.txt", method="DELETE")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD" and no_cache_headers(r)


def test_cache_control_overrides_expires_and_stands_alone(gateway, www):
    g = gateway('''
mg.route("/both/", { root = "%(w)s", expires = "1d", cache_control = "public, max-age=60, immutable" })
mg.route("/cc/", { root = "%(w)s", cache_control = "no-store" })
''' % {"w": www})
    r = request(g.port, path="/both/a.txt")
    assert r.header("Cache-Control") == "public, max-age=60, immutable"
    assert r.headers.count(("Cache-Control", "public, max-age=60, immutable")) == 1
    assert abs(http_time(r.header("Expires")) - http_time(r.header("Date")) - 86400) <= 1  # Expires stays
    r = request(g.port, path="/cc/a.txt", headers=[("If-None-Match", r.header("ETag"))])
    assert r.status == 304 and r.header("Cache-Control") == "no-store" and r.header("Expires") is None
    assert request(g.port, path="/cc/nope").header("Cache-Control") is None


# ---- ETag and conditional requests -----------------------------------------------------------

def test_if_none_match_rfc9110(gateway, www):
    g = gateway('mg.route("/s/", { root = "%s", expires = 60 })\n' % www)
    r = request(g.port, path="/s/a.txt")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    assert etag.startswith('"') and etag.endswith('"')
    for inm in (etag, "W/" + etag, '"other", ' + etag, '"x",W/%s , "y"' % etag, "*"):
        r = request(g.port, path="/s/a.txt", headers=[("If-None-Match", inm)])
        assert r.status == 304 and r.body == b"", inm
    for inm in ('"other"', '"x' + etag[1:], etag[:-1], "w/" + etag, etag.strip('"')):
        r = request(g.port, path="/s/a.txt", headers=[("If-None-Match", inm)])
        assert r.status == 200 and r.body == b"hello static\n", inm
    # If-None-Match decides when present: a matching If-Modified-Since beside a failed one is ignored.
    r = request(g.port, path="/s/a.txt", headers=[("If-None-Match", '"other"'), ("If-Modified-Since", lm)])
    assert r.status == 200
    r = request(g.port, path="/s/a.txt", headers=[("If-None-Match", etag), ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:01 GMT")])
    assert r.status == 304
    assert request(g.port, path="/s/a.txt", headers=[("If-Modified-Since", lm)]).status == 304
    assert request(g.port, path="/s/a.txt", headers=[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:01 GMT")]).status == 200
    assert request(g.port, path="/s/a.txt", headers=[("If-Modified-Since", "yesterday")]).status == 200


def test_304_headers_get_and_head(gateway, www):
    g = gateway('mg.route("/s/", { root = "%s", expires = "1h" })\n' % www)
    etag = request(g.port, path="/s/a.txt").header("ETag")
    for method in ("GET", "HEAD"):
        r = request(g.port, method=method, path="/s/a.txt", headers=[("If-None-Match", etag)])
        assert r.status == 304, method
        assert r.header("ETag") == etag and r.header("Last-Modified")
        assert_expires(r, 3600)
        # nginx's 304 has no Content-Type, Content-Length or Accept-Ranges; no body follows.
        assert r.header("Content-Type") is None and r.header("Content-Length") is None
        assert r.header("Accept-Ranges") is None and r.header("Transfer-Encoding") is None
    r = request(g.port, method="HEAD", path="/s/a.txt")
    assert r.status == 200 and r.header("Content-Length") == "13" and r.header("ETag") == etag
    assert_expires(r, 3600)


def test_compressed_weak_etag_comes_back(gateway, tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "page.html").write_text("<p>%s</p>\n" % ("compress me " * 200))
    g = gateway('mg.set { compress = { min_length = 100 } }\nmg.route("/s/", { root = "%s", expires = 60 })\n' % root)
    r = request(g.port, path="/s/page.html", headers=[("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip" and r.header("ETag").startswith('W/"')
    weak = r.header("ETag")
    r = request(g.port, path="/s/page.html", headers=[("Accept-Encoding", "gzip"), ("If-None-Match", weak)])
    assert r.status == 304 and r.body == b"" and r.header("Cache-Control") == "max-age=60"
    r = request(g.port, path="/s/page.html", headers=[("If-None-Match", weak)])  # identity: the strong "x"
    assert r.status == 304 and r.header("ETag") == weak[2:]


# ---- index, directories ------------------------------------------------------------------------

def test_index_default_list_order_and_directories(gateway, www):
    g = gateway('''
mg.route("/d/", { root = "%(w)s" })
mg.route("/l/", { root = "%(w)s", index = { "missing.html", "index.htm", "index.html" } })
mg.route("/one/", { root = "%(w)s", index = "index.htm" })
mg.route("/none/", { root = "%(w)s", index = {} })
mg.route("/img", { root = "%(w)s" })
mg.route("=/", { root = "%(w)s/docs" })
''' % {"w": www})
    r = request(g.port, path="/d/docs/")
    assert r.status == 200 and r.body == b"<p>docs</p>\n" and r.header("Content-Type") == "text/html"
    assert request(g.port, path="/d/both/").body == b"html second\n"       # the default: index.html
    assert request(g.port, path="/l/both/").body == b"htm first\n"         # the list's order
    assert request(g.port, path="/l/docs/").body == b"<p>docs</p>\n"      # missing ones skipped
    assert request(g.port, path="/d/dirindex/").status == 403            # an index that is a directory
    assert request(g.port, path="/l/dirindex/").body == b"the file after a directory\n"
    assert request(g.port, path="/one/both/").body == b"htm first\n"
    assert request(g.port, path="/one/docs/").status == 403
    assert request(g.port, path="/none/docs/").status == 403             # no index at all
    r = request(g.port, path="/d/empty/")
    assert r.status == 403 and b"index" not in r.body                  # no listing
    g.wait_log("directory /d/empty/ has no index file")
    assert request(g.port, path="/d/docs/index.html").body == b"<p>docs</p>\n"
    assert request(g.port, path="/d/a.txt/").status == 404
    r = request(g.port, method="HEAD", path="/d/docs/")
    assert r.status == 200 and r.header("Content-Length") == "12" and r.body == b""
    assert request(g.port, path="/").body == b"<p>docs</p>\n"            # an exact route's directory
    r = request(g.port, path="/img")                                    # a prefix without a slash
    assert r.status == 301 and r.header("Location") == "/img/"


def test_directory_without_slash_301(gateway, www):
    g = gateway('mg.route("/s/", { root = "%s" })\n' % www)
    r = request(g.port, path="/s/docs")
    assert r.status == 301 and r.header("Location") == "/s/docs/"
    r = request(g.port, path="/s/docs?page=2&x=%20y")
    assert r.status == 301 and r.header("Location") == "/s/docs/?page=2&x=%20y"
    r = request(g.port, path="/s/empty")                               # 301 first, the 403 after it
    assert r.status == 301 and r.header("Location") == "/s/empty/"
    (www / "sp ace").mkdir()
    r = request(g.port, path="/s/sp%20ace")
    assert r.status == 301 and r.header("Location") == "/s/sp%20ace/"
    r = request(g.port, method="HEAD", path="/s/docs")
    assert r.status == 301 and r.header("Location") == "/s/docs/"


# ---- fallback ----------------------------------------------------------------------------------

def test_fallback_to_scgi_backend_sees_original_request(gateway, www, echo_backend):
    # scgi-echo dumps its variables for paths under /vars: the static route sits there.
    g = gateway('''
mg.route("/vars/", { root = "%s", expires = "1d", fallback = "/" })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
''' % www, echo_backend)
    r = request(g.port, path="/vars/a.txt")                             # the file exists: served
    assert r.body == b"hello static\n" and r.header("Cache-Control") == "max-age=86400"
    r = request(g.port, path="/vars/missing.css?v=3")
    assert r.status == 200 and no_cache_headers(r)                      # the app's answer, not the route's
    d = dict(scgi_vars(r.body))
    assert d["REQUEST_URI"] == "/vars/missing.css?v=3" and d["QUERY_STRING"] == "v=3"
    assert d["SCRIPT_NAME"] + d.get("PATH_INFO", "") == "/vars/missing.css"
    assert d["REQUEST_METHOD"] == "GET" and "REDIRECT_URL" not in d
    r = request(g.port, method="POST", path="/vars/form", body=b"name=value",
                headers=[("Content-Type", "application/x-www-form-urlencoded")])
    d = dict(scgi_vars(r.body))
    assert d["REQUEST_METHOD"] == "POST" and d["CONTENT_LENGTH"] == "10" and r.body.endswith(b"BODY=name=value")
    assert request(g.port, method="POST", path="/vars/a.txt", body=b"x").status == 405  # a file: GET and HEAD only
    d = dict(scgi_vars(request(g.port, path="/vars/empty/").body))       # a directory without an index
    assert d["REQUEST_URI"] == "/vars/empty/"
    assert request(g.port, path="/vars/docs").status == 301             # a directory: its slash first
    assert request(g.port, path="/vars/docs/").body == b"<p>docs</p>\n"
    assert request(g.port, path="/vars/escape").status == 403           # escaping the root is no miss
    r = request(g.port, method="HEAD", path="/vars/nothing")
    assert r.status == 200 and r.body == b""


def test_fallback_to_lua_route_hooks_once(gateway, www):
    g = gateway('''
local counted = 0
mg.on("access", function(req) counted = counted + 1; req.ctx.trail = (req.ctx.trail or "") .. "global," end)
mg.route("/s/", { root = "%s", fallback = "/_app/" }, { hooks = { access = function(req) req.ctx.trail = req.ctx.trail .. "static," end } })
mg.route("/_app/", function(req)
  return 200, req.method .. " " .. req.uri .. " " .. req.ctx.trail .. " " .. counted .. "\\n", { ["X-App"] = "lua" }
end, { internal = true, hooks = { access = function(req) req.ctx.trail = req.ctx.trail .. "app," end } })
''' % www)
    r = request(g.port, path="/s/missing/page")
    assert r.status == 200 and r.header("X-App") == "lua"
    # The global access hook ran once, then the static route's and the app's own.
    assert r.body == b"GET /s/missing/page global,static,app, 1\n"
    assert request(g.port, path="/s/a.txt").body == b"hello static\n"
    assert request(g.port, path="/s/empty/").body.startswith(b"GET /s/empty/ ")
    # An internal fallback target is not a route for clients.
    assert request(g.port, path="/_app/").status in (400, 404)


def test_fallback_chain_and_app_limits(gateway, www, tmp_path, echo_backend):
    other = tmp_path / "other"
    (other / "s").mkdir(parents=True)
    (other / "t").mkdir(parents=True)
    (other / "s" / "only-here.txt").write_text("second root\n")
    (other / "t" / "mine.txt").write_text("under /t/\n")
    g = gateway('''
mg.route("/s/", { root = "%s", fallback = "/t/" }, { client_max_body_size = "1m" })
mg.route("/t/", { root = "%s", fallback = "/app/" })
mg.route("/app/", function(req) return 200, "app " .. req.uri .. "\\n" end, { client_max_body_size = 4 })
mg.route("/vars/", { root = "%s", fallback = "/py/" })
mg.route("/py/", "scgi://127.0.0.1:{BACKEND}/", { pathinfo = true })
''' % (www, other, www), echo_backend)
    assert request(g.port, path="/s/a.txt").body == b"hello static\n"
    # A URI from outside /t/'s prefix is looked up whole below /t/'s root.
    assert request(g.port, path="/s/only-here.txt").body == b"second root\n"
    assert request(g.port, path="/t/mine.txt").body == b"app /t/mine.txt\n"  # /t/ strips its own prefix
    assert request(g.port, path="/t/t/mine.txt").body == b"under /t/\n"
    assert request(g.port, path="/s/nothing").body == b"app /s/nothing\n"
    # The app's own client_max_body_size holds after the hand-over.
    assert request(g.port, method="POST", path="/s/nothing", body=b"too long a body").status == 413
    # An SCGI app reached from outside its prefix: mounted at the root for it.
    # (scgi-echo dumps its variables for SCRIPT_NAME + PATH_INFO under /vars)
    d = dict(scgi_vars(request(g.port, path="/vars/y").body))
    assert d["SCRIPT_NAME"] == "" and d["PATH_INFO"] == "/vars/y"
    # The app's own client_max_body_size holds after the hand-over.
    assert request(g.port, method="POST", path="/s/nothing", body=b"too long a body").status == 413


# ---- load errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    ('expires = "30m 1h"', 'expires: expected seconds, a time like'),
    ('expires = "1ms"', 'got "1ms"'),
    ('expires = "1 h"', 'got "1 h"'),
    ('expires = "1.5h"', 'got "1.5h"'),
    ('expires = "soon"', 'got "soon"'),
    ('expires = 2.5', 'got 2.5'),
    ('expires = true', 'got boolean'),
    ('cache_control = ""', 'cache_control: expected a header value'),
    ('cache_control = "a\\r\\nX-Evil: 1"', 'cache_control: the value holds a control character'),
    ('cache_control = 3600', 'cache_control: expected a header value'),
    ('index = "sub/index.html"', 'index[1]: expected a file name (no "/")'),
    ('index = { "index.html", ".." }', 'index[2]: expected a file name'),
    ('index = 7', 'index: expected a file name or a list of them'),
    ('fallback = "/nowhere/"', 'fallback: no route "/nowhere/" is declared'),
    ('fallback = "/s/"', 'fallback: the route "/s/" cannot fall back to itself'),
    ('fallback = "/loop/"', 'fallback: the chain of fallbacks loops (/loop/ -> /s/ -> /loop/)'),
    ('fallback = 1', 'fallback: expected the path of another route'),
    ('listing = true', 'mg.route: unknown static option "listing"'),
])
def test_bad_options_are_load_errors(tmp_path, www, options, message):
    init = tmp_path / "init.lua"
    init.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n'
                    'mg.route("/loop/", { root = "%s", fallback = "/s/" })\n'
                    'mg.route("/s/", { root = "%s", %s })\n' % (www, www, options))
    p = subprocess.run([MOONGATE, "-t", "-c", str(init)], capture_output=True, text=True)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    if "loop" in message:
        assert "%s:3: %s" % (init, message) in out, out  # the first route of the loop is named
    else:
        assert "%s:4: " % init in out and message in out, out


def test_good_options_load(tmp_path, www):
    init = tmp_path / "init.lua"
    init.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n'
                    'mg.route("/s/", { root = "%s", expires = "1y 2M 3w 4d 5h 6m 7s", cache_control = "public",'
                    ' index = { "index.htm", "default.html" }, fallback = "/", precompressed = true })\n'
                    'mg.route("/e/", { root = "%s", expires = -60, index = false })\n'
                    'mg.route("/", "scgi://127.0.0.1:9/")\n' % (www, www))
    p = subprocess.run([MOONGATE, "-t", "-c", str(init)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# ---- against nginx ---------------------------------------------------------------------------------

def test_differential_against_nginx(gateway, www, tmp_path):
    """The same files behind nginx (alias + expires + index + try_files $uri $uri/ @app) and moongate:
    the same statuses, and the same cache and validator headers present."""
    ng = tmp_path / "nginx"
    w = str(www) + "/"
    proc, nport = start_openresty(ng, {
        "/s/": ("raw_prefix", "alias %s; expires 1h; index index.htm index.html;" % w),
        "/f/": ("raw_prefix", "alias %s; expires 1h; try_files $uri $uri/ @app;" % w),
        "@app": ("raw_prefix", 'content_by_lua_block { ngx.say("app ", ngx.var.uri) }'),
    })
    try:
        g = gateway('''
mg.route("/s/", { root = "%(w)s", expires = "1h", index = { "index.htm", "index.html" } })
mg.route("/f/", { root = "%(w)s", expires = "1h", fallback = "/_app/" })
mg.route("/_app/", function(req) ngx.say("app ", req.uri) end, { internal = true })
''' % {"w": www})
        etag = request(g.port, path="/s/a.txt").header("ETag")
        assert etag == request(nport, path="/s/a.txt").header("ETag")  # the same "mtime-size" tag
        cases = [
            ("GET", "/s/a.txt", []), ("HEAD", "/s/a.txt", []),
            ("GET", "/s/a.txt", [("If-None-Match", etag)]), ("HEAD", "/s/a.txt", [("If-None-Match", etag)]),
            ("GET", "/s/a.txt", [("If-None-Match", "W/" + etag)]),
            ("GET", "/s/a.txt", [("If-None-Match", '"x", ' + etag)]),
            ("GET", "/s/a.txt", [("If-None-Match", "*")]),
            ("GET", "/s/a.txt", [("If-None-Match", '"x"')]),
            ("GET", "/s/a.txt", [("Range", "bytes=1-3")]), ("GET", "/s/a.txt", [("Range", "bytes=99-")]),
            ("GET", "/s/docs", []), ("GET", "/s/docs/", []), ("GET", "/s/both/", []),
            ("GET", "/s/empty/", []), ("GET", "/s/nope", []),
            ("GET", "/f/a.txt", []), ("GET", "/f/nope", []), ("GET", "/f/docs/", []),
            ("GET", "/f/docs", []), ("POST", "/f/nope", []),
            # ("GET", "/f/empty/"): nginx's `$uri/` takes a directory without an index (403);
            # moongate's fallback takes it to the app (docs/reference.md).
        ]
        # (nginx drops Accept-Ranges from a 206, moongate keeps it: not compared)
        watched = ("Expires", "Cache-Control", "ETag", "Last-Modified", "Location", "Content-Type", "Content-Range")
        for method, path, headers in cases:
            a = request(g.port, method=method, path=path, headers=headers)
            b = request(nport, method=method, path=path, headers=headers)
            what = "%s %s %s" % (method, path, headers)
            assert a.status == b.status, what
            if a.status >= 400:
                continue  # error pages: nginx's are HTML, moongate's text
            for h in watched:
                assert (a.header(h) is None) == (b.header(h) is None), "%s: %s\nmoongate:\n%s\nnginx:\n%s" % (
                    what, h, a.raw_head.decode(), b.raw_head.decode())
            if method == "GET" and a.status in (200, 206):
                assert a.body == b.body, what
    finally:
        stop_openresty(proc)


def test_fallback_whose_access_hook_waits_keeps_the_body(gateway, www, echo_backend):
    """The target's access hook sleeps (the body is held meanwhile), then the backend gets the
    whole upload; over HTTP/1.1 and HTTP/2 (h2c, curl)."""
    g = gateway('''
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("/vars/", { root = "%s", fallback = "/" })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req) ngx.sleep(0.05); ngx.req.set_header("X-Slept", "yes") end } })
''' % www, echo_backend)
    body = b"z" * 200000
    r = request(g.port, method="POST", path="/vars/upload", body=body)
    assert r.status == 200 and r.body.endswith(b"BODY=" + body)
    assert dict(scgi_vars(r.body))["HTTP_X_SLEPT"] == "yes"
    base = "http://127.0.0.1:%d" % g.port
    for extra in ([], ["--http2-prior-knowledge"]):
        out = subprocess.run(["curl", "-s", "--data-binary", "@-", base + "/vars/upload"] + extra,
                             input=body, capture_output=True, timeout=10).stdout
        assert out.endswith(b"BODY=" + body), extra
        out = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", base + "/vars/a.txt"] + extra,
                             capture_output=True, timeout=10).stdout.decode()
        assert out.split()[1] == "200" and "etag:" in out.lower(), out
