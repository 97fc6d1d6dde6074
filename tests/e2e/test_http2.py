"""HTTP/2 from clients (SPEC 18, docs/reference.md "HTTP/2"), with Debian's real clients (curl,
nghttp, h2load, openssl s_client) and hand-made frames from python3-h2 for the RFC 9113 8.2
rules and the floods: the offending stream or connection gets its error, a fresh client still
gets 200, and the worker did not restart."""
import hashlib
import os
import signal
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import hpack
import hyperframe.frame
import pytest

from conftest import free_port, scgi_vars
from openresty import require_openresty, start_openresty, stop_openresty
from test_tls import make_cert


ROUTES = """
mg.set { client_body_timeout = "1s", client_max_body_size = "10m", lua_body_max = "10m" }
mg.route("=/lua", function(req) ngx.say("proto ", ngx.var.server_protocol, " ", ngx.req.http_version()) end)
mg.route("=/stream", function(req)
  ngx.say("first"); ngx.flush(true); mg.sleep(0.3); ngx.say("second")
end)
mg.route("=/capture", function(req)
  local r = ngx.location.capture("/vars", { args = "a=1" })
  ngx.print(r.status, " ", #r.body > 0 and "body" or "empty")
end)
mg.route("=/readbody", function(req) ngx.print(ngx.ctx.md5) end, { hooks = { access = function(req)
  mg.sleep(0.05)
  ngx.req.read_body()
  ngx.ctx.md5 = ngx.md5(ngx.req.get_body_data() or "")
end } })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
"""


@pytest.fixture
def h2gw(gateway, echo_backend):
    """An h2c listener (prior knowledge, HTTP/1.1 beside it) in front of scgi-echo."""
    return gateway('mg.listen("127.0.0.1:{PORT}", { http2 = true })\n' + ROUTES, echo_backend)


@pytest.fixture
def h2gw_all(gateway, tmp_path, echo_backend):
    """The same, plus a plain listener without http2, a TLS one, and a TLS one with http2 = false.
    Only the tests that need them take the extra ports (each is a chance of a port race)."""
    cert, key = make_cert(str(tmp_path), "localhost")
    ports = [free_port(), free_port(), free_port()]
    listens = """mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.listen("127.0.0.1:%d")
mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" } })
mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" }, http2 = false })
""" % (ports[0], ports[1], cert, key, ports[2], cert, key)
    g = gateway(listens + ROUTES, echo_backend)
    g.plain_port, g.tls_port, g.tls1_port = ports
    return g


def curl(*args, timeout=30):
    p = subprocess.run(["curl", "-sS", "-k"] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode()


def worker_pids(g):
    return sorted(g.workers())


# ---- a small blocking client on python3-h2 ------------------------------------------------------

class H2:
    def __init__(self, port, validate=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate, normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.events = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path="/", method="GET", extra=(), end=True, authority="localhost"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)] + list(extra)
        self.conn.send_headers(sid, hdrs, end_stream=end)
        self.flush()
        return sid

    def read(self, until, timeout=5.0):
        """Reads events until until(events) is true or the connection closes."""
        deadline = time.time() + timeout
        while not until(self.events) and time.time() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                self.events.append("closed")
                break
            if not data:
                self.events.append("closed")
                break
            try:
                self.events += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.events.append("closed")
                break
            self.flush()
        return self.events

    def response(self, sid, timeout=5.0):
        self.read(lambda ev: "closed" in ev or any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                                                    and e.stream_id == sid for e in ev), timeout)
        status, body, reset = None, b"", None
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                status = int(dict(e.headers)[":status"])
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamReset):
                reset = e.error_code
        self.flush()
        return status, body, reset

    def goaway(self):
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e.error_code
        return None

    def close(self):
        self.sock.close()


def fresh_get(g):
    c = H2(g.port)
    sid = c.headers("/hello")
    status, body, _ = c.response(sid)
    c.close()
    return status, body


# ---- real clients ------------------------------------------------------------------------------

def test_h2c_prior_knowledge_reaches_the_backend_with_the_same_variables(h2gw):
    g = h2gw
    rc, out, err = curl("--http2-prior-knowledge", "-H", "Cookie: a=1", "http://127.0.0.1:%d/vars?x=1" % g.port,
                        "-w", "\n%{http_version}")
    assert rc == 0, err
    body, version = out.rsplit(b"\n", 1)
    assert version == b"2"
    d = dict(scgi_vars(body))
    assert d["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert d["HTTP_HOST"] == "127.0.0.1:%d" % g.port and d["SERVER_NAME"] == "127.0.0.1"
    assert d["REQUEST_URI"] == "/vars?x=1" and d["QUERY_STRING"] == "x=1" and d["REQUEST_METHOD"] == "GET"
    assert d["HTTP_COOKIE"] == "a=1"
    # The line is written when the stream is done, which may be just after the client has its
    # answer.
    deadline = time.time() + 5
    while '"GET /vars?x=1 HTTP/2.0" 200' not in g.access_log() and time.time() < deadline:
        time.sleep(0.05)
    assert '"GET /vars?x=1 HTTP/2.0" 200' in g.access_log()
    # The same listener still serves HTTP/1.1 to clients that do not start with the preface.
    rc, out, err = curl("http://127.0.0.1:%d/lua" % g.port, "-w", "%{http_version}")
    assert out == b"proto HTTP/1.1 1.1\n1.1"


def test_cookie_crumbs_are_joined_and_host_comes_from_authority(h2gw):
    c = H2(h2gw.port)
    sid = c.headers("/vars", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-thing", "v")], authority="example.test:81")
    status, body, _ = c.response(sid)
    d = dict(scgi_vars(body))
    assert status == 200
    assert d["HTTP_COOKIE"] == "a=1; b=2"
    assert d["HTTP_HOST"] == "example.test:81" and d["SERVER_NAME"] == "example.test"
    assert d["HTTP_X_THING"] == "v"


def test_static_sizes_and_head_and_no_body_statuses(h2gw):
    g = h2gw
    rc, out, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/bytes/1048576" % g.port)
    assert rc == 0 and out == b"x" * 1048576, err
    rc, out, err = curl("--http2-prior-knowledge", "-I", "http://127.0.0.1:%d/bytes/100" % g.port)
    assert rc == 0 and b"HTTP/2 200" in out and b"content-length: 100" in out.lower(), out
    rc, out, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/stream/300000" % g.port)
    assert out == b"y" * 300000


def test_request_bodies_with_and_without_length_arrive_whole(h2gw, tmp_path):
    g = h2gw
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "up.bin"
    path.write_bytes(data)
    for extra in ([], ["-H", "Content-Length:"]):
        rc, out, err = curl("--http2-prior-knowledge", "--data-binary", "@%s" % path, *extra,
                            "http://127.0.0.1:%d/vars" % g.port)
        assert rc == 0, err
        body = out.split(b"BODY=", 1)[1]
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        d = dict(scgi_vars(out))
        assert d["CONTENT_LENGTH"] == str(len(data))
    # nghttp's upload, in DATA frames paced by our WINDOW_UPDATEs.
    p = subprocess.run(["nghttp", "-d", str(path), "http://127.0.0.1:%d/vars" % g.port], capture_output=True, timeout=30)
    assert p.returncode == 0
    assert hashlib.sha256(p.stdout.split(b"BODY=", 1)[1]).digest() == hashlib.sha256(data).digest()
    # read_body in an access hook that first waited: no byte lost.
    small = data[:5000]
    (tmp_path / "small.bin").write_bytes(small)
    rc, out, err = curl("--http2-prior-knowledge", "--data-binary", "@%s" % (tmp_path / "small.bin"),
                        "http://127.0.0.1:%d/readbody" % g.port)
    assert out.decode() == hashlib.md5(small).hexdigest()


def test_h2load_many_streams_all_succeed(h2gw):
    g = h2gw
    p = subprocess.run(["h2load", "-c", "4", "-m", "32", "-n", "2000", "http://127.0.0.1:%d/hello" % g.port],
                       capture_output=True, timeout=60)
    out = p.stdout.decode()
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "2000 2xx" in out


def test_nghttp_sees_one_headers_and_data_for_a_small_response(h2gw):
    p = subprocess.run(["nghttp", "-nv", "http://127.0.0.1:%d/hello" % h2gw.port], capture_output=True, timeout=20)
    out = p.stdout.decode()
    assert "recv HEADERS frame" in out and "recv DATA frame <length=12, flags=0x01" in out, out
    assert ":status: 200" in out


def test_lua_streaming_subrequests_and_version_over_h2(h2gw):
    g = h2gw
    rc, out, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/lua" % g.port)
    assert out == b"proto HTTP/2.0 2\n"
    rc, out, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/capture" % g.port)
    assert out == b"200 body"  # lua-nginx-module refuses this under HTTP/2 (#1195); moongate does not
    # Streaming: the first DATA arrives before the handler's sleep ends.
    c = H2(g.port)
    sid = c.headers("/stream")
    t0 = time.time()
    c.read(lambda ev: any(isinstance(e, h2.events.DataReceived) for e in ev))
    first = time.time() - t0
    status, body, _ = c.response(sid)
    assert first < 0.25 and body == b"first\nsecond\n"


def test_a_reset_stream_leaves_its_siblings_alone(h2gw):
    c = H2(h2gw.port)
    big = c.headers("/stream/50000000")
    small = [c.headers("/hello") for _ in range(5)]
    c.read(lambda ev: any(isinstance(e, h2.events.DataReceived) and e.stream_id == big for e in ev))
    c.conn.reset_stream(big, error_code=8)
    c.flush()
    for sid in small:
        status, body, _ = c.response(sid)
        assert status == 200 and body == b"hello world\n"
    c.close()
    assert fresh_get(h2gw) == (200, b"hello world\n")
    h2gw.wait_log("reset stream %d" % big)


def test_preface_on_a_listener_without_http2_is_refused_with_a_clear_line(h2gw_all):
    g = h2gw_all
    rc, out, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hello" % g.plain_port)
    assert rc != 0
    g.wait_log("HTTP/2 is not enabled on this listener")


# ---- TLS and ALPN -----------------------------------------------------------------------------

def test_alpn_chooses_h2_on_tls_and_http2_false_keeps_http1(h2gw_all):
    g = h2gw_all
    rc, out, err = curl("https://127.0.0.1:%d/lua" % g.tls_port, "-w", "%{http_version}")
    assert out == b"proto HTTP/2.0 2\n2", err
    rc, out, err = curl("--http1.1", "https://127.0.0.1:%d/lua" % g.tls_port, "-w", "%{http_version}")
    assert out == b"proto HTTP/1.1 1.1\n1.1"
    rc, out, err = curl("--http2", "https://127.0.0.1:%d/lua" % g.tls1_port, "-w", "%{http_version}")
    assert out == b"proto HTTP/1.1 1.1\n1.1"
    rc, out, err = curl("https://127.0.0.1:%d/bytes/1048576" % g.tls_port)
    assert out == b"x" * 1048576
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % g.tls_port, "-alpn", "h2,http/1.1"],
                       input=b"", capture_output=True, timeout=20)
    assert "ALPN protocol: h2" in p.stdout.decode()
    # RFC 9113 9.2.2: a TLS 1.2 client on a CBC suite is not given h2, but HTTP/1.1.
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % g.tls_port, "-tls1_2", "-cipher",
                        "AES128-SHA", "-alpn", "h2,http/1.1"], input=b"", capture_output=True, timeout=20)
    assert "ALPN protocol: http/1.1" in p.stdout.decode()


# ---- RFC 9113 8.2: malformed requests never reach the backend ---------------------------------

MALFORMED = [
    ("uppercase name", [("X-Upper", "1")]),
    ("connection", [("connection", "keep-alive")]),
    ("keep-alive", [("keep-alive", "5")]),
    ("proxy-connection", [("proxy-connection", "x")]),
    ("transfer-encoding", [("transfer-encoding", "chunked")]),
    ("upgrade", [("upgrade", "websocket")]),
    ("te gzip", [("te", "gzip")]),
    ("control byte", [("x-bad", "a\x01b")]),
    ("host differs", [("host", "other.test")]),
    ("unknown pseudo", [(":bogus", "1")]),
]


@pytest.mark.parametrize("name,extra", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_protocol_error(h2gw, name, extra):
    g = h2gw
    pids = worker_pids(g)
    c = H2(g.port, validate=False)
    sid = c.headers("/vars", extra=extra)
    status, body, reset = c.response(sid)
    assert status is None and (reset == 1 or c.goaway() == 1), (status, reset, c.events)
    c.close()
    assert fresh_get(g) == (200, b"hello world\n")
    assert worker_pids(g) == pids
    assert "/vars" not in open(g.access_path).read()


def test_pseudo_header_after_a_regular_field_is_refused(h2gw):
    c = H2(h2gw.port, validate=False)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/vars"),
                              (":authority", "localhost")], end_stream=True)
    c.flush()
    status, body, reset = c.response(sid)
    assert status is None and (reset == 1 or c.goaway() == 1)
    assert fresh_get(h2gw)[0] == 200


def test_oversized_header_lists_get_431_and_the_connection_lives(h2gw):
    c = H2(h2gw.port)
    sid = c.headers("/vars", extra=[("x-big", "v" * 9000)])
    status, _, _ = c.response(sid)
    assert status == 431
    sid = c.headers("/vars", extra=[("x-n%d" % i, "v") for i in range(101)])
    assert c.response(sid)[0] == 431
    sid = c.headers("/hello")
    assert c.response(sid)[:2] == (200, b"hello world\n")


# ---- floods ----------------------------------------------------------------------------------

def raw_h2(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hyperframe.frame.SettingsFrame(0).serialize())
    return s


def read_frames(s, until, timeout=10.0):
    """Frames from a raw socket until until(frames) or the close: a list of hyperframe frames."""
    buf, frames, deadline = b"", [], time.time() + timeout
    while not until(frames) and time.time() < deadline:
        try:
            d = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not d:
            break
        buf += d
        while len(buf) >= 9:
            f, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            f.parse_body(memoryview(buf[9:9 + length]))
            buf = buf[9 + length:]
            frames.append(f)
    return frames


def read_goaway(s, timeout=5.0):
    """Reads frames until a GOAWAY or the close: its error code, or None."""
    frames = read_frames(s, lambda fr: any(isinstance(f, hyperframe.frame.GoAwayFrame) for f in fr), timeout)
    goaways = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    return goaways[0].error_code if goaways else None


def request_block(enc, path="/hello"):
    return enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", path)])


def test_rapid_reset_ends_the_connection_and_reaches_no_backend(h2gw):
    g = h2gw
    pids = worker_pids(g)
    s = raw_h2(g.port)
    enc = hpack.Encoder()
    out = b""
    for i in range(10000):
        sid = 1 + 2 * i
        h = hyperframe.frame.HeadersFrame(sid, request_block(enc, "/vars"))
        h.flags.add("END_HEADERS")
        h.flags.add("END_STREAM")
        out += h.serialize() + hyperframe.frame.RstStreamFrame(sid, error_code=8).serialize()
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    code = read_goaway(s)
    s.close()
    assert code is not None and code != 0, code
    assert fresh_get(g)[0] == 200
    assert worker_pids(g) == pids
    assert "/vars" not in open(g.access_path).read()


def test_continuation_flood_gets_goaway(h2gw):
    g = h2gw
    pids = worker_pids(g)
    s = raw_h2(g.port)
    h = hyperframe.frame.HeadersFrame(1, request_block(hpack.Encoder()))
    out = h.serialize()
    for i in range(10000):  # each a valid field ("a: b"), so only the count can end it
        out += hyperframe.frame.ContinuationFrame(1, b"\x00\x01a\x01b").serialize()
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert read_goaway(s) == 0xb  # ENHANCE_YOUR_CALM
    s.close()
    assert fresh_get(g)[0] == 200 and worker_pids(g) == pids
    g.wait_log("CONTINUATION flood")


@pytest.mark.parametrize("kind", ["ping", "settings", "empty-data"])
def test_control_frame_floods_end_the_connection(h2gw, kind):
    g = h2gw
    pids = worker_pids(g)
    s = raw_h2(g.port)
    if kind == "ping":
        frame = hyperframe.frame.PingFrame(0, b"12345678").serialize()
    elif kind == "settings":
        frame = hyperframe.frame.SettingsFrame(0, {4: 65535}).serialize()
    else:
        h = hyperframe.frame.HeadersFrame(1, request_block(hpack.Encoder(), "/stream/100000000"))
        h.flags.add("END_HEADERS")
        s.sendall(h.serialize())
        frame = hyperframe.frame.DataFrame(1, b"").serialize()
    code = None
    try:
        for _ in range(20):
            s.sendall(frame * 5000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    code = read_goaway(s, timeout=3)
    s.close()
    assert code in (0xb, None)
    assert fresh_get(g)[0] == 200 and worker_pids(g) == pids


def test_a_trickled_header_block_times_out(gateway, echo_backend):
    g = gateway("""
mg.set { client_header_timeout = "500ms" }
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""", echo_backend)
    s = raw_h2(g.port)
    h = hyperframe.frame.HeadersFrame(1, request_block(hpack.Encoder())[:3])
    s.sendall(h.serialize())
    t0 = time.time()
    code = read_goaway(s, timeout=5)
    assert code == 0 and time.time() - t0 < 3
    s.close()


# ---- lifecycle -------------------------------------------------------------------------------

def test_idle_connection_gets_goaway_after_keepalive_timeout(gateway, echo_backend):
    g = gateway("""
mg.set { keepalive_timeout = "500ms" }
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""", echo_backend)
    c = H2(g.port)
    assert c.response(c.headers("/hello"))[0] == 200
    t0 = time.time()
    c.read(lambda ev: "closed" in ev, timeout=5)
    assert c.goaway() == 0 and 0.3 < time.time() - t0 < 3


def test_keepalive_requests_counts_streams(gateway, echo_backend):
    g = gateway("""
mg.set { keepalive_requests = 10 }
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""", echo_backend)
    p = subprocess.run(["h2load", "-c", "1", "-m", "1", "-n", "100", "http://127.0.0.1:%d/hello" % g.port],
                       capture_output=True, timeout=60)
    out = p.stdout.decode()
    # h2load does not reconnect: the connection serves exactly 10 streams, then GOAWAY.
    assert "10 succeeded" in out, out


def test_reload_sends_goaway_and_the_stream_in_flight_completes(h2gw):
    # A raw client: python3-h2's state machine refuses every frame after a GOAWAY, which
    # RFC 9113 6.8 allows for streams up to its last id.
    g = h2gw
    s = raw_h2(g.port)
    h = hyperframe.frame.HeadersFrame(1, request_block(hpack.Encoder(), "/stream"))
    h.flags.add("END_HEADERS")
    h.flags.add("END_STREAM")
    s.sendall(h.serialize())
    frames = read_frames(s, lambda fr: any(isinstance(f, hyperframe.frame.DataFrame) for f in fr))
    g.signal(signal.SIGHUP)
    frames += read_frames(s, lambda fr: False, timeout=5)
    s.close()
    body = b"".join(f.data for f in frames if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == 1)
    goaways = [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert body == b"first\nsecond\n"
    assert goaways == [(2 ** 31 - 1, 0), (1, 0)], goaways
    assert fresh_get(g)[0] == 200


def test_protocol_names_match_openresty_over_h2c(gateway, tmp_path):
    """The same Lua under Debian's nginx + lua-nginx-module (`listen ... http2`) and moongate."""
    require_openresty()
    lua = ('ngx.say(ngx.req.http_version(), " ", ngx.var.server_protocol, " ", ngx.var.scheme, " ", '
           'ngx.req.get_headers()["host"] == ngx.var.http_host, " [", ngx.var.http2, "]")')
    h2c_port = free_port()
    proc, _ = start_openresty(tmp_path / "openresty", {"/plain": lua},
                              http="server { listen 127.0.0.1:%d http2; location /v { content_by_lua_block { %s } } }"
                              % (h2c_port, lua))
    try:
        rc, want, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/v" % h2c_port)
    finally:
        stop_openresty(proc)
    g = gateway("""
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.route("=/v", function(req) %s end)
""" % lua)
    rc, got, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/v" % g.port)
    assert want == b"2 HTTP/2.0 http true [h2c]\n" and got == want, (got, want)
