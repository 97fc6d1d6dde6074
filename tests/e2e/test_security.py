"""Security cases: request smuggling shapes (RFC 9112 section 6 and llhttp's
strict mode), header injection from the backend, spoofing, never an open proxy."""
import socket
import time

import pytest

from conftest import raw, read_all, request, scgi_vars

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


@pytest.mark.parametrize("head,name", [
    (b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n", "X-A"),
    (b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A:\r\n\tb\r\nConnection: close\r\n\r\n", "X-A"),
    (b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n",
     "Transfer-Encoding"),
    (b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding"),
])
def test_obs_fold_is_refused(gateway, echo_backend, head, name):
    """RFC 9112 5.2 lets a server refuse obs-fold; a front end that folds differently from the
    hop behind it is a smuggling vector, so moongate refuses it as nginx and Apache do."""
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, head)
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:200]
    assert b"Connection: close" in out
    g.wait_log('obsolete line folding in header "%s"' % name)


def test_obs_fold_split_across_reads_is_refused(gateway, echo_backend):
    """The fold is found whatever the read boundaries: here the line break ends one read and
    the continuation starts the next."""
    g = gateway(BASIC, echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in [b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A: a", b"\r\n", b" ", b"b\r\n\r\n"]:
        s.sendall(piece)
        time.sleep(0.05)  # separate reads on the server side
    out = s.recv(65536)
    s.close()
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]


def test_empty_values_are_not_folds(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A: \r\nX-A:\r\nX-A: z\r\nX-B:\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"HTTP_X_A=, , z\n" in out and b"HTTP_X_B=\n" in out, out[:400]


def test_value_split_across_reads_is_not_a_fold(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in [b"GET /vars HTTP/1.1\r\nHost: x\r\nX-A: a ", b" ", b"b", b"\r\nConnection: close\r\n\r\n"]:
        s.sendall(piece)
        time.sleep(0.05)
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 200 ") and b"HTTP_X_A=a  b\n" in out, out[:300]


def test_transfer_encoding_in_http10_is_refused_and_closes(gateway, echo_backend):
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing."""
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"POST /vars HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\nGET /vars/smuggled HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:200]
    assert b"Connection: close" in out and b"smuggled" not in out
    g.wait_log("Transfer-Encoding in an HTTP/1.0 request")


# ---- request trailers: never merged, never seen by hooks ------------------------------------

IDENTITY = """
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  req.headers["X-User"] = "alice"
  req.headers["Authorization"] = nil
end } })
"""


def test_trailers_cannot_override_what_the_access_hook_decided(gateway, echo_backend):
    g = gateway(IDENTITY, echo_backend)
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-User: mallory\r\nAuthorization: Basic bWFsbG9yeTp4\r\n"
                      b"X-Trailer-Only: 1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    body = out.split(b"\r\n\r\n", 1)[1]
    d = dict(scgi_vars(body))
    assert d["HTTP_X_USER"] == "alice"
    assert "HTTP_AUTHORIZATION" not in d and "HTTP_X_TRAILER_ONLY" not in d
    assert d["CONTENT_LENGTH"] == "11" and b"BODY=hello world" in body


def test_trailers_are_invisible_to_later_hooks(gateway, echo_backend):
    """Even a hook that runs after the body was read (header_filter, log) sees the head only."""
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = {
  header_filter = function(req, res) res.headers["X-Seen"] = tostring(req.headers["X-Late"]) end } })
""", echo_backend)
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                      b"1\r\na\r\n0\r\nX-Late: yes\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"X-Seen: nil\r\n" in out, out[:300]


def test_trailers_count_against_header_limits(gateway, echo_backend):
    g = gateway('mg.set { max_headers = 6, max_header_size = "100" }\n' + BASIC, echo_backend)
    head = b"POST /vars HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nA: 1\r\n\r\n1\r\na\r\n0\r\n"
    ok = raw(g.port, head.replace(b"A: 1", b"Connection: close") + b"T1: 1\r\nT2: 2\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]
    many = raw(g.port, head + b"".join(b"T%d: x\r\n" % i for i in range(4)) + b"\r\n")
    assert many.startswith(b"HTTP/1.1 431 ") and b"Connection: close" in many, many[:200]
    big = raw(g.port, head + b"T: " + b"v" * 200 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 "), big[:200]
    g.wait_log("too many header and trailer fields")


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


# ---- the hostile probe's framing findings (docs/reliability.md, "The hostile probe") ----------

class RecordingBackend:
    """A listening socket that only counts the connections a gateway makes to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def connections(self, wait=0.3):
        """Connections accepted within `wait` seconds (the gateway connects before it answers,
        so one made for a request is already queued when its response arrives)."""
        self.sock.settimeout(wait)
        n = 0
        try:
            while True:
                c, _ = self.sock.accept()
                c.close()
                n += 1
                self.sock.settimeout(0.05)
        except socket.timeout:
            pass
        return n

    def close(self):
        self.sock.close()


@pytest.fixture
def recording_backend():
    b = RecordingBackend()
    yield b
    b.close()


def test_chunk_data_must_end_in_crlf_no_smuggling(gateway, echo_backend):
    """Loose llhttp took any two bytes after a chunk's data: `5\\r\\nAAAAAXX2\\r\\n28...` made the
    backend see body "AAAAA28" and then a smuggled GET. Strict framing: 400, one response."""
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAAXX2\r\n28\r\n0\r\n\r\n"
                      b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:300]
    assert b"smuggled" not in out and b"AAAAA" not in out
    g.wait_log("Expected CRLF after chunk")
    assert "HPE_" not in g.log(), "the log names the cause in words, not llhttp's error name"


@pytest.mark.parametrize("line", [b"GET  /vars HTTP/1.1", b"GET /vars  HTTP/1.1"])
def test_double_space_in_request_line_is_refused(gateway, echo_backend, line):
    g = gateway(BASIC, echo_backend)
    for split in (None, 1):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        data = line + b"\r\nHost: x\r\n\r\n"
        if split:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                time.sleep(0.001)
        else:
            s.sendall(data)
        out = read_all(s)
        assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, (split, out[:200])
    g.wait_log("more than one space in the request line")
    ok = raw(g.port, b"GET /vars HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("te", [b"xchunked", b"gzip", b"identity", b"chunkedx", b"chunked, gzip"])
def test_bad_transfer_encoding_never_reaches_the_backend(gateway, recording_backend, te):
    """The 400 used to come after the POST had been forwarded (CONTENT_LENGTH 0) and run."""
    g = gateway('mg.route("/", "scgi://127.0.0.1:%d/")\n' % recording_backend.port)
    out = raw(g.port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:200]
    assert recording_backend.connections() == 0, "the backend was contacted for a refused request"
    g.wait_log("Transfer-Encoding")


@pytest.mark.parametrize("host", [b"a b", b"x@evil", b"evil/../x", b"a, b", b"evil.com,good.com", b"x:80x", b"[::1", b"ex%zzample"])
def test_invalid_host_is_400_and_not_forwarded(gateway, recording_backend, host):
    g = gateway('mg.route("/", "scgi://127.0.0.1:%d/")\n' % recording_backend.port)
    out = raw(g.port, b"GET /t HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:200]
    assert b"Connection: close" in out
    assert recording_backend.connections() == 0
    g.wait_log("invalid Host")


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"[::1]:80", b"127.0.0.1", b"xn--bcher-kva.de",
                                  b"under_score.example", b""])
def test_valid_hosts_are_served(gateway, echo_backend, host):
    g = gateway(BASIC, echo_backend)
    out = raw(g.port, b"GET /vars HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), (host, out[:200])


def _pipelined_pair(port, first):
    """Sends `first` and a second GET on one connection; returns the two responses in order."""
    from conftest import read_response
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(first + b"GET /vars/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    f = s.makefile("rb")
    a = read_response(f)
    b = read_response(f)
    f.close()
    s.close()
    return a, b


@pytest.mark.parametrize("code", [100, 101, 103, 199])
def test_backend_1xx_status_is_502_not_a_final_response(gateway, demo_backend, code):
    """A `Status: 1xx` sent as the final answer made the client read the next pipelined
    response as this one's (behind a shared front-end connection: users' responses mixed)."""
    g = gateway(BASIC, demo_backend)
    a, b = _pipelined_pair(g.port, b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n" % code)
    assert a.status == 502 and a.body.startswith(b"502 ")
    assert b.status == 200 and b"SCRIPT_NAME=/vars/second" in b.body
    g.wait_log("a 1xx Status is not a final response")


@pytest.mark.parametrize("value", [b"a%01b", b"a%1Bb", b"a%7Fb", b"a%08b", b"%0Cx"])
def test_control_bytes_in_backend_header_values_are_502(gateway, demo_backend, value):
    g = gateway(BASIC, demo_backend)
    r = request(g.port, path="/rawhead?head=X-Ctl:%20" + value.decode())
    assert r.status == 502 and r.header("X-Ctl") is None
    g.wait_log("header value holds a control character")


def test_tab_and_obs_text_in_backend_header_values_pass(gateway, demo_backend):
    g = gateway(BASIC, demo_backend)
    r = request(g.port, path="/rawhead?head=X-Ok:%20a%09b%E9")
    assert r.status == 200 and r.header("X-Ok") == "a\tb\xe9"


def test_fields_named_by_backend_connection_header_are_dropped(gateway, demo_backend):
    """RFC 9110 7.6.1: what `Connection` names is for that hop only (Apache drops them too)."""
    g = gateway(BASIC, demo_backend)
    head = "X-Hop:%201%0D%0AConnection:%20close,%20x-hop%20,X-Other%0D%0AX-Other:%202%0D%0AX-Kept:%203"
    r = request(g.port, path="/rawhead?head=" + head)
    assert r.status == 200 and r.body == b"body"
    assert r.header("X-Hop") is None and r.header("X-Other") is None and r.header("Connection") is None
    assert r.header("X-Kept") == "3"


def test_content_length_with_trailing_tab_is_accepted(gateway, echo_backend):
    """OWS is SP or HTAB (RFC 9110 5.6.3); llhttp takes only SP after Content-Length's digits."""
    g = gateway(BASIC, echo_backend)
    for cl in (b"5\t", b"5 \t ", b"\t5\t"):
        out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + b"\r\nConnection: close\r\n\r\nhello")
        assert out.startswith(b"HTTP/1.1 200 ") and b"CONTENT_LENGTH=5\n" in out and b"BODY=hello" in out, (cl, out[:200])
    # A tab is white space only at the ends: inside the number it is still refused.
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nContent-Length: 5\t6\r\nConnection: close\r\n\r\nhello")
    assert out.startswith(b"HTTP/1.1 400 ")
    # Tabs elsewhere in the head and the body are left alone.
    out = raw(g.port, b"POST /vars HTTP/1.1\r\nHost: x\r\nX-T: a\tb\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhe\tl\t\r\n")
    assert b"HTTP_X_T=a\tb\n" in out and b"BODY=he\tl\t\r\n" in out, out[-200:]
