"""Backend-driven responses: internal redirect, X-Sendfile, static files."""
import hashlib
import os
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import raw, read_response, request, scgi_vars


def q(s):
    return urllib.parse.quote(s, safe="")


def test_redirect_post_becomes_get_with_redirect_vars(gateway, demo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', demo_backend)
    r = request(g.port, method="POST", path="/redirect?to=%s&orig=1" % q("/final/page?k=v"), body=b"payload",
                headers=[("Content-Type", "text/plain")])
    assert r.status == 200
    assert b"body to discard" not in r.body and r.header("Location") is None
    d = dict(scgi_vars(r.body))
    assert d["REQUEST_METHOD"] == "GET" and d["CONTENT_LENGTH"] == "0" and "CONTENT_TYPE" not in d
    assert d["SCRIPT_NAME"] == "/final/page" and d["QUERY_STRING"] == "k=v"
    assert d["REQUEST_URI"] == "/redirect?to=%s&orig=1" % q("/final/page?k=v")
    assert d["REDIRECT_STATUS"] == "200" and d["REDIRECT_URL"] == "/redirect"
    assert d["REDIRECT_QUERY_STRING"] == "to=%s&orig=1" % q("/final/page?k=v")
    assert d["REDIRECT_REQUEST_METHOD"] == "POST"
    assert r.body.endswith(b"BODY=")


def test_redirect_head_stays_head(gateway, demo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', demo_backend)
    out = raw(g.port, b"HEAD /redirect?to=/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("opt,header,follows", [
    ("", "Location", True),
    ("internal_redirect = true", "Location", True),
    ("internal_redirect = \"On\"", "Location", True),
    ("internal_redirect = false", "Location", False),
    ("internal_redirect = \"Off\"", "Location", False),
    ("internal_redirect = \"X-Location\"", "X-Location", True),
    ("internal_redirect = \"X-Location\"", "Location", False),
])
def test_redirect_modes(gateway, demo_backend, opt, header, follows):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { %s })\n' % opt, demo_backend)
    endpoint = "xlocation" if header == "X-Location" else "redirect"
    r = request(g.port, path="/%s?to=/landed" % endpoint)
    if follows:
        assert dict(scgi_vars(r.body))["SCRIPT_NAME"] == "/landed"
    else:
        assert r.header(header) == "/landed" and r.body == b"body to discard"


def test_redirect_only_for_200_and_local(gateway, demo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', demo_backend)
    r = request(g.port, path="/redirect?to=%s" % q("http://elsewhere/x"))
    assert r.header("Location") == "http://elsewhere/x" and r.body == b"body to discard"


def test_redirect_to_static_lua_and_balancer(gateway, demo_backend, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.html").write_text("<p>static</p>\n")
    lua = '''
mg.balancer("c", { members = { "scgi://127.0.0.1:{BACKEND}" } })
mg.route("/static/", { root = "%s" })
mg.route("=/lua", function(req) return 200, "lua saw " .. req.uri .. "\\n" end)
mg.route("/bal/", "balancer://c/")
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
''' % root
    g = gateway(lua, demo_backend)
    r = request(g.port, path="/redirect?to=/static/page.html")
    assert r.body == b"<p>static</p>\n" and r.header("Content-Type") == "text/html"
    assert request(g.port, path="/redirect?to=/lua").body == b"lua saw /lua\n"
    d = dict(scgi_vars(request(g.port, path="/redirect?to=/bal/x").body))
    assert d["SCRIPT_NAME"] == "/bal/x" and d["REDIRECT_URL"] == "/redirect"


def test_redirect_loop_ends_in_500(gateway, demo_backend):
    g = gateway('mg.set { internal_redirect_limit = 3 }\nmg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', demo_backend)
    r = request(g.port, path="/loop")
    assert r.status == 500
    g.wait_log("exceeds internal_redirect_limit (3)")
    assert request(g.port, path="/still/serving").status == 200


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"0123456789" * 10)
    (root / "sub").mkdir()
    (root / "sub" / "deep.bin").write_bytes(b"deep")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(str(secret), str(root / "escape-link"))
    os.symlink("hello.txt", str(root / "inner-link"))
    return root


def sendfile_lua(root, header=True, missing=None):
    opt = "true" if header is True else '"%s"' % header
    extra = ", sendfile_missing = %d" % missing if missing else ""
    return 'mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { sendfile = %s, sendfile_roots = { "%s" }%s })\n' % (opt, root, extra)


def sf(g, path, header="X-Sendfile", headers=None):
    return request(g.port, path="/sendfile?path=%s&header=%s" % (q(path), header), headers=headers)


def test_sendfile_serves_file_with_backend_headers(gateway, demo_backend, media):
    g = gateway(sendfile_lua(media), demo_backend)
    r = sf(g, str(media / "hello.txt"))
    assert r.status == 200 and r.body == b"0123456789" * 10
    assert r.header("Content-Length") == "100" and r.header("Last-Modified")
    assert r.header("Content-Type") == "application/x-test" and r.header("X-Kept") == "yes"
    assert r.header("X-Sendfile") is None
    assert sf(g, str(media / "inner-link")).body == b"0123456789" * 10


def test_sendfile_custom_header_and_off(gateway, demo_backend, media):
    g = gateway(sendfile_lua(media, header="X-Send-Static"), demo_backend)
    assert sf(g, str(media / "sub/deep.bin"), header="X-Send-Static").body == b"deep"
    r = sf(g, str(media / "sub/deep.bin"), header="X-Sendfile")
    assert r.body == b"backend body" and r.header("X-Sendfile") == str(media / "sub/deep.bin")


@pytest.mark.parametrize("path,status", [
    ("{root}/../secret.txt", 403),
    ("{root}/escape-link", 403),
    ("/etc/passwd", 403),
    ("relative/hello.txt", 403),
    ("{root}/sub", 403),
    ("{root}/missing.txt", 500),
])
def test_sendfile_confinement(gateway, demo_backend, media, path, status):
    g = gateway(sendfile_lua(media), demo_backend)
    r = sf(g, path.format(root=media))
    assert r.status == status
    assert b"top secret" not in r.body and b"root:" not in r.body


def test_sendfile_missing_404(gateway, demo_backend, media):
    g = gateway(sendfile_lua(media, missing=404), demo_backend)
    assert sf(g, str(media / "nope")).status == 404


def test_sendfile_range(gateway, demo_backend, media):
    g = gateway(sendfile_lua(media), demo_backend)
    r = sf(g, str(media / "hello.txt"), headers=[("Range", "bytes=10-19")])
    assert r.status == 206 and r.body == b"0123456789" and r.header("Content-Range") == "bytes 10-19/100"
    r = sf(g, str(media / "hello.txt"), headers=[("Range", "bytes=-5")])
    assert r.status == 206 and r.body == b"56789"
    r = sf(g, str(media / "hello.txt"), headers=[("Range", "bytes=500-")])
    assert r.status == 416 and r.header("Content-Range") == "bytes */100"


def test_sendfile_large_file_while_serving_others(gateway, demo_backend, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    big = root / "big.bin"
    size = 300 * 1024 * 1024
    with open(big, "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            f.write(block)
    want = hashlib.sha256(open(big, "rb").read()).hexdigest()
    g = gateway(sendfile_lua(root), demo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=30)
    s.sendall(("GET /sendfile?path=%s HTTP/1.1\r\nHost: x\r\n\r\n" % q(str(big))).encode())
    f = s.makefile("rb")
    # Read the head, then read the body slowly at first: other requests are answered meanwhile.
    line = f.readline()
    assert line.startswith(b"HTTP/1.1 200")
    while f.readline() not in (b"\r\n", b""):
        pass
    h = hashlib.sha256()
    got = 0
    first = f.read(1024 * 1024)
    h.update(first)
    got += len(first)
    t0 = time.time()
    assert request(g.port, path="/other").status == 200
    assert time.time() - t0 < 2
    while got < size:
        chunk = f.read(min(4 * 1024 * 1024, size - got))
        if not chunk:
            break
        h.update(chunk)
        got += len(chunk)
    s.close()
    assert got == size and h.hexdigest() == want


def test_static_files(gateway, tmp_path):
    root = tmp_path / "static"
    (root / "css").mkdir(parents=True)
    (root / "css" / "site.css").write_text("body{}\n")
    (root / "a b.txt").write_text("spaced\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(str(secret), str(root / "escape"))
    g = gateway('mg.route("/static/", { root = "%s" })\n' % root)
    r = request(g.port, path="/static/css/site.css")
    assert r.status == 200 and r.body == b"body{}\n" and r.header("Content-Type") == "text/css"
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    assert etag and lm and r.header("Accept-Ranges") == "bytes"
    assert request(g.port, path="/static/css/site.css", headers=[("If-None-Match", etag)]).status == 304
    assert request(g.port, path="/static/css/site.css", headers=[("If-Modified-Since", lm)]).status == 304
    r = request(g.port, path="/static/css/site.css", headers=[("Range", "bytes=0-3")])
    assert r.status == 206 and r.body == b"body"
    assert request(g.port, path="/static/a%20b.txt").body == b"spaced\n"
    assert request(g.port, path="/static/css/").status == 403
    assert request(g.port, path="/static/nope.txt").status == 404
    assert request(g.port, path="/static/escape").status == 403
    assert request(g.port, path="/static/%2e%2e/secret.txt").status in (400, 404)
    assert request(g.port, path="/static/css/site.css", method="POST", body=b"x").status == 405
    r = request(g.port, path="/static/css/site.css", method="HEAD")
    assert r.status == 200 and r.header("Content-Length") == "7"
