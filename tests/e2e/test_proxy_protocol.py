"""PROXY protocol listeners (SPEC 19; docs/reference.md, mg.listen's proxy_protocol): versions 1
and 2 ahead of HTTP/1.1, TLS and h2c, each checked by what the SCGI backend's REMOTE_ADDR, a Lua
route's req.remote_addr and the access log show; bad, missing and late headers close the
connection with an error-log line; a PROXY line on a listener without the option gets 400."""
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import free_port, scgi_vars
from test_tls import make_cert

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd, fam, addr=b"", tlv=b""):
    """A version 2 header: cmd 0 LOCAL / 1 PROXY, fam the family-and-transport byte."""
    body = addr + tlv
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_inet(src, sport, dst="10.0.0.1", dport=443, tlv=b""):
    return v2(1, 0x11, socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst) +
              struct.pack("!HH", sport, dport), tlv)


def v2_inet6(src, sport, dst="2001:db8::1", dport=443):
    return v2(1, 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
              struct.pack("!HH", sport, dport))


def get(path, extra=b"", close=True):
    return (b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + extra + (b"Connection: close\r\n" if close else b"") +
            b"\r\n")


def exchange(port, pieces, timeout=5.0, pause=0.0):
    """Sends each piece (pausing between them), returns what comes back until the close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    for i, p in enumerate(pieces):
        if i and pause:
            time.sleep(pause)
        s.sendall(p)
    out = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            out += c
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def backend_vars(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), resp[:300]
    return dict(scgi_vars(body))


@pytest.fixture
def pgw(gateway, tmp_path, echo_backend):
    cert, key = make_cert(str(tmp_path), "p.test")
    g = None
    ports = {"plain": free_port(), "tls": free_port(), "h2c": free_port()}
    g = gateway("""
mg.set { client_header_timeout = "1s" }
mg.listen("127.0.0.1:{PORT}", { proxy_protocol = true })
mg.listen("127.0.0.1:%(plain)d")
mg.listen("127.0.0.1:%(tls)d", { proxy_protocol = true, tls = { cert = "%(cert)s", key = "%(key)s" } })
mg.listen("127.0.0.1:%(h2c)d", { proxy_protocol = true, http2 = true })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("=/lua", function(req)
  return 200, table.concat({ req.remote_addr, tostring(req.remote_port), req.peer_addr, tostring(req.peer_port),
                             ngx.var.remote_addr }, " ")
end)
""" % dict(ports, cert=cert, key=key), echo_backend)
    g.ports = ports
    return g


CASES = [
    # (name, header, REMOTE_ADDR, REMOTE_PORT)
    ("v1 IPv4", b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", "192.0.2.7", "56324"),
    ("v1 IPv6", b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n", "2001:db8::7", "40000"),
    ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", "127.0.0.1", None),
    ("v2 IPv4", v2_inet("203.0.113.9", 8080), "203.0.113.9", "8080"),
    ("v2 IPv4 with TLVs", v2_inet("203.0.113.10", 1234, tlv=b"\x01\x00\x02h2\x04\x00\x03abc"), "203.0.113.10", "1234"),
    ("v2 IPv6", v2_inet6("2001:db8:cafe::17", 4711), "2001:db8:cafe::17", "4711"),
    ("v2 LOCAL", v2(0, 0x00), "127.0.0.1", None),
    ("v2 UNSPEC", v2(1, 0x00), "127.0.0.1", None),
    ("v2 AF_UNIX", v2(1, 0x31, b"/run/lb.sock".ljust(216, b"\0")), "unix:", "0"),
]


@pytest.mark.parametrize("name,header,addr,port", CASES, ids=[c[0] for c in CASES])
def test_the_header_gives_the_backend_lua_and_the_access_log_the_client(pgw, name, header, addr, port):
    d = backend_vars(exchange(pgw.port, [header + get(b"/vars/" + name.replace(" ", "_").encode())]))
    assert d["REMOTE_ADDR"] == addr
    if port is not None:
        assert d["REMOTE_PORT"] == port
    else:
        assert d["REMOTE_PORT"] != "" and d["REMOTE_PORT"] != "0"  # the socket's own port
    out = exchange(pgw.port, [header + get(b"/lua")])
    assert out.startswith(b"HTTP/1.1 200"), out
    fields = out.partition(b"\r\n\r\n")[2].decode().split()
    assert fields[0] == addr and fields[2] == addr and fields[4] == addr  # remote, peer, ngx.var
    assert fields[1] == fields[3]
    if port is not None:
        assert fields[1] == port
    deadline = time.time() + 3
    while time.time() < deadline and ("/vars/" + name.replace(" ", "_")) not in pgw.access_log():
        time.sleep(0.05)
    line = [l for l in pgw.access_log().splitlines() if ("/vars/" + name.replace(" ", "_")) in l][0]
    assert line.startswith(addr + " - - ["), line


def test_a_header_split_over_many_writes(pgw):
    h = b"PROXY TCP4 192.0.2.99 198.51.100.1 5000 80\r\n"
    pieces = [h[i:i + 3] for i in range(0, len(h), 3)] + [get(b"/vars")]
    d = backend_vars(exchange(pgw.port, pieces, pause=0.02))
    assert d["REMOTE_ADDR"] == "192.0.2.99" and d["REMOTE_PORT"] == "5000"
    h = v2_inet6("2001:db8::99", 6000)
    pieces = [h[:5], h[5:13], h[13:17], h[17:30], h[30:], get(b"/vars")]
    d = backend_vars(exchange(pgw.port, pieces, pause=0.02))
    assert d["REMOTE_ADDR"] == "2001:db8::99" and d["REMOTE_PORT"] == "6000"
    # the header and the request in one write, and the request's first bytes with the header's end
    d = backend_vars(exchange(pgw.port, [h[:20], h[20:] + get(b"/vars")[:7], get(b"/vars")[7:]], pause=0.02))
    assert d["REMOTE_ADDR"] == "2001:db8::99"


def test_keep_alive_requests_keep_the_address(pgw):
    s = socket.create_connection(("127.0.0.1", pgw.port), timeout=5)
    s.sendall(b"PROXY TCP4 192.0.2.55 198.51.100.1 1111 80\r\n")
    f = s.makefile("rb")
    from conftest import read_response
    for i in range(3):
        s.sendall(get(b"/vars/%d" % i, close=False))
        r = read_response(f)
        d = dict(scgi_vars(r.body))
        assert r.status == 200 and d["REMOTE_ADDR"] == "192.0.2.55" and d["REMOTE_PORT"] == "1111"
    # pipelined, in the same write as nothing else
    s.sendall(get(b"/lua", close=False) + get(b"/vars/p", close=False))
    assert read_response(f).body.split()[0] == b"192.0.2.55"
    assert dict(scgi_vars(read_response(f).body))["REMOTE_ADDR"] == "192.0.2.55"
    f.close()
    s.close()


BAD = [
    ("garbage", b"\x01\x02\x03garbage\r\n\r\n", "does not begin with a PROXY protocol header"),
    ("plain HTTP", get(b"/vars"), "begins like a plain HTTP request"),
    ("bad v1 address", b"PROXY TCP4 999.0.2.7 198.51.100.1 1 2\r\n" + get(b"/vars"), "bad TCP4 address"),
    ("v1 too long", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "longer than 107 bytes"),
    ("v1 bare LF", b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n" + get(b"/vars"), "LF without CR"),
    ("v2 bad command", SIG + b"\x25\x11\x00\x0c" + b"\0" * 12, "unknown command"),
    ("v2 short", SIG + b"\x21\x21\x00\x0c" + b"\0" * 12, "too short for its addresses"),
    ("v2 too long", SIG + b"\x21\x11\xff\xff" + b"\0" * 100, "longer than 4096 bytes"),
]


@pytest.mark.parametrize("name,data,why", BAD, ids=[b[0] for b in BAD])
def test_a_bad_or_missing_header_closes_the_connection_with_a_reason(pgw, name, data, why):
    before = pgw.log().count("PROXY protocol")
    assert exchange(pgw.port, [data]) == b""  # closed, nothing answered
    pgw.wait_log(why)
    assert pgw.log().count("PROXY protocol: client 127.0.0.1") > before
    assert "/vars" not in pgw.access_log()


def test_no_header_within_client_header_timeout_closes(pgw):
    t = time.time()
    assert exchange(pgw.port, [b"PROXY TCP4 192.0.2.7"], timeout=5) == b""
    assert 0.8 < time.time() - t < 4
    pgw.wait_log("sent no complete PROXY header within client_header_timeout")
    # nothing at all is sent: the same
    assert exchange(pgw.port, [b""], timeout=5) == b""


def test_a_proxy_line_on_a_listener_without_the_option_gets_400(pgw):
    out = exchange(pgw.ports["plain"], [b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n" + get(b"/vars")])
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert len(out.partition(b"\r\n\r\n")[2]) < 100
    pgw.wait_log("bad request: a PROXY protocol header on a listener without proxy_protocol = true")
    out = exchange(pgw.ports["plain"], [v2_inet("203.0.113.9", 8080) + get(b"/vars")])
    assert out.startswith(b"HTTP/1.1 400 "), out
    # and the plain listener still serves a plain client
    d = backend_vars(exchange(pgw.ports["plain"], [get(b"/vars")]))
    assert d["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_header_ahead_of_tls(pgw):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", pgw.ports["tls"]), timeout=5)
    raw.sendall(v2_inet("198.51.100.77", 2222))
    s = ctx.wrap_socket(raw, server_hostname="p.test")
    s.sendall(get(b"/vars"))
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    s.close()
    d = backend_vars(out)
    assert d["REMOTE_ADDR"] == "198.51.100.77" and d["REMOTE_PORT"] == "2222" and d["HTTPS"] == "on"
    # a TLS handshake without the header is refused as such
    raw = socket.create_connection(("127.0.0.1", pgw.ports["tls"]), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        ctx.wrap_socket(raw, server_hostname="p.test").sendall(get(b"/vars"))
    pgw.wait_log("it begins with a TLS handshake")


def test_proxy_header_ahead_of_h2c(pgw):
    s = socket.create_connection(("127.0.0.1", pgw.ports["h2c"]), timeout=5)
    s.sendall(b"PROXY TCP6 2001:db8::abc 2001:db8::1 3333 80\r\n")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/lua"), (":scheme", "http"), (":authority", "t")],
                      end_stream=True)
    s.sendall(conn.data_to_send())
    body, done = b"", False
    while not done:
        data = s.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded):
                done = True
        s.sendall(conn.data_to_send())
    s.close()
    assert body.split()[:4] == [b"2001:db8::abc", b"3333", b"2001:db8::abc", b"3333"]
    # HTTP/1.1 on the same listener still works after a header
    d = backend_vars(exchange(pgw.ports["h2c"], [b"PROXY TCP4 192.0.2.3 198.51.100.1 9 80\r\n" + get(b"/vars")]))
    assert d["REMOTE_ADDR"] == "192.0.2.3"


def test_bad_listen_options_are_load_errors(tmp_path):
    import subprocess
    from conftest import MOONGATE
    for opts, msg in [
        ('{ proxy_protocol = "yes" }', "proxy_protocol must be true or false"),
        ('{ proxy_protcol = true }', 'unknown option "proxy_protcol"'),
    ]:
        p = tmp_path / "init.lua"
        p.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1", %s)\n' % opts)
        r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
        assert r.returncode != 0 and msg in r.stderr + r.stdout and "init.lua:2" in r.stderr + r.stdout, r.stderr
