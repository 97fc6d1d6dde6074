"""Security cases (issue 7): request smuggling shapes (RFC 9112 section 6 and llhttp's
strict mode), header injection from the backend, spoofing, never an open proxy."""
import pytest

from conftest import raw, request, scgi_vars

BASIC = 'mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n'


@pytest.mark.parametrize("req", [
    # Content-Length and Transfer-Encoding together (RFC 9112 6.1: must be treated as an error
    # by a gateway forwarding the message, or the lengths disagree between hops).
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    # Transfer-Encoding not ending in chunked, unknown codings, obfuscated names.
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    # Repeated, differing or malformed Content-Length.
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    # Chunk sizes: not hex, overflowing, with a bare LF, missing CRLF after data.
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    # Whitespace before the colon.
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    # Bad request lines: spaces in the target, missing version, bare CR.
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    # A NUL in a header value.
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
])
def test_smuggling_shapes_are_refused(gateway, echo_backend, req):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, req)
    assert out.startswith(b"HTTP/1.1 400 "), out[:120]
    assert out.count(b"HTTP/1.1 ") == 1, "a second response means a second request was read"
    assert b"Connection: close" in out


def test_obs_fold_becomes_one_line(gateway, echo_backend):
    """RFC 9112 5.2: a server replaces an obs-fold with SP (or refuses it); the next hop never
    sees the line break."""
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n")
    assert b"HTTP_X_A=a b\n" in out


def test_http09_request_line_is_refused(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET /\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 505 ") and out.count(b"HTTP/1.1 ") == 1


def test_pipelined_after_body_is_a_separate_request(gateway, echo_backend):
    """Bytes after a Content-Length body are the next request, never part of the first."""
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /vars/second HTTP/1.1\r\n"
                      b"Host: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2
    assert b"BODY=hello" in out and b"SCRIPT_NAME=/vars/second" in out


@pytest.mark.parametrize("path", ["/crlf"])
def test_header_injection_from_backend_is_502(gateway, demo_backend, path):
    g = gateway(BASIC, demo_backend)
    out = raw(g.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    assert out.startswith(b"HTTP/1.1 502") and b"X-Bad" not in out


def test_lua_cannot_inject_headers(gateway, echo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { header_filter = function(req, res) '
                'res.headers["X-A"] = "a\\r\\nSet-Cookie: evil=1" end } })\n', echo_backend)
    out = raw(g.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500") and b"evil" not in out
    g.wait_log("holds CR, LF or NUL")


def test_never_an_open_proxy(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    for target in [b"http://127.0.0.1:9/vars", b"https://example.com/vars", b"http://user@evil:80/vars"]:
        out = raw(g.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"SCRIPT_NAME=/vars" in out
    out = raw(g.port, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405")


def test_httpoxy_and_underscore_spoofing(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    r = request(g.port, path="/vars", headers=[("Proxy", "http://evil:8080"), ("X_Real_IP", "1.2.3.4"),
                                               ("Content_Length", "99"), ("REMOTE_ADDR", "6.6.6.6")])
    d = dict(scgi_vars(r.body))
    assert "HTTP_PROXY" not in d and "HTTP_X_REAL_IP" not in d
    assert d["CONTENT_LENGTH"] == "0" and "HTTP_CONTENT_LENGTH" not in d
    assert d["REMOTE_ADDR"] == "127.0.0.1"
