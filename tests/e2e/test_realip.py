"""realip (SPEC 19; docs/reference.md, real_ip_from): a DIFFERENTIAL test against Debian's nginx
with ngx_http_realip_module on the same requests -- X-Forwarded-For chains with trusted and
untrusted hops, recursive off and on, IPv6, ports, garbage, X-Real-IP, another header name, an
untrusted peer -- comparing the address (and port) each reports: nginx's `$remote_addr
$remote_port`, moongate's req.remote_addr in Lua and REMOTE_ADDR at the SCGI backend. nginx does
not read `Forwarded:` (RFC 7239): that one is checked against the RFC's own examples. Also the
trust check against a PROXY header's source, the listener overriding mg.set, and load errors."""
import socket
import subprocess

import pytest

from conftest import MOONGATE, free_port, scgi_vars
from openresty import start_openresty, stop_openresty

TRUST = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]

# mode: (nginx directives, moongate listen options)
MODES = {
    "xff": ("real_ip_header X-Forwarded-For;", 'real_ip_header = "X-Forwarded-For"'),
    "xff_rec": ("real_ip_header X-Forwarded-For; real_ip_recursive on;",
                'real_ip_header = "X-Forwarded-For", real_ip_recursive = true'),
    "xri": ("", ""),  # nginx's default header, X-Real-IP
    "xri_rec": ("real_ip_recursive on;", "real_ip_recursive = true"),
    "custom": ("real_ip_header X-Client;", 'real_ip_header = "x-client"'),
    "untrusted": ("real_ip_header X-Forwarded-For; real_ip_recursive on;",
                  'real_ip_header = "X-Forwarded-For", real_ip_recursive = true, real_ip_from = { "10.0.0.0/8" }'),
}

XFF = [
    ["203.0.113.5"],
    ["203.0.113.5, 10.0.0.2"],
    ["203.0.113.5, 10.0.0.2, 10.0.0.3"],
    ["198.51.100.1, 203.0.113.5, 10.0.0.2"],
    ["10.0.0.9, 10.0.0.2"],
    ["garbage"],
    ["203.0.113.5, garbage, 10.0.0.2"],
    ["garbage, 10.0.0.2"],
    ["2001:db8::5, 2001:db9::7"],
    ["2001:db9::7, 2001:db8::5"],
    ["2001:DB8:0:0::A"],
    ["[2001:db9::7]:8443"],
    ["203.0.113.5:4444"],
    ["203.0.113.5:4444, 10.0.0.7:99"],
    ["203.0.113.5:0"],
    ["::ffff:10.0.0.5, ::ffff:203.0.113.9"],
    ["203.0.113.9, ::ffff:10.0.0.5"],
    ["203.0.113.5,,10.0.0.2 ,"],
    ["203.0.113.5 10.0.0.2"],
    [",203.0.113.5"],
    ["1..2.3"],
    ["01.2.3.4"],
    ["256.1.1.1"],
    ["unknown"],
    ["::1"],
    ["1:2:3:4:5:6:7::"],
    ["::"],
    ["203.0.113.5", "10.0.0.2"],
    ["198.51.100.1, 10.0.0.3", "10.0.0.2"],
    ["198.51.100.1", "garbage, 10.0.0.3"],
    ["garbage", "10.0.0.3"],
    [],
]

OTHER = [  # X-Real-IP and X-Client values
    ["203.0.113.7"],
    ["203.0.113.7, 10.0.0.1"],
    ["10.0.0.1, 203.0.113.7"],
    ["garbage"],
    ["203.0.113.7:8080"],
    ["2001:db9::1"],
    ["198.51.100.2", "203.0.113.8"],
    [],
]


def ask(port, path, name, values):
    """One request with a header `name` per value; the body the server answers."""
    head = "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % path
    head += "".join("%s: %s\r\n" % (name, v) for v in values) + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(head.encode())
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    s.close()
    h, _, body = out.partition(b"\r\n\r\n")
    assert h.startswith(b"HTTP/1.1 200"), out[:300]
    return body.decode()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    """One nginx, a server per mode (realip at server level: a location's `return` would run
    before a location's realip, in the rewrite phase)."""
    d = tmp_path_factory.mktemp("realip")
    ports, http = {}, ""
    for mode, (directives, _) in MODES.items():
        ports[mode] = free_port()
        sets = "".join("set_real_ip_from %s; " % c for c in (["10.0.0.0/8"] if mode == "untrusted" else TRUST))
        http += ('server { listen 127.0.0.1:%d; %s %s location / { return 200 "$remote_addr $remote_port"; } }\n'
                 % (ports[mode], sets, directives))
    proc, _ = start_openresty(d, {"/unused": ("raw", "return 204;")}, http=http)
    request.addfinalizer(lambda: stop_openresty(proc))
    return ports


@pytest.fixture
def mg(gateway, echo_backend):
    ports = {m: free_port() for m in MODES}
    lua = 'mg.set { real_ip_from = { "%s" } }\nmg.listen("127.0.0.1:{PORT}")\n' % '", "'.join(TRUST)
    for m, (_, opts) in MODES.items():
        lua += 'mg.listen("127.0.0.1:%d", { %s })\n' % (ports[m], opts)
    lua += """
mg.route("/vars", "scgi://127.0.0.1:{BACKEND}/")
mg.route("/", function(req) return 200, req.remote_addr .. " " .. ngx.var.remote_port end)
"""
    g = gateway(lua, echo_backend)
    g.ports = ports
    return g


def peer_port_out(answer):
    """The peer's own port differs between two connections: an unchanged address says PEER."""
    addr, _, port = answer.partition(" ")
    return addr + " PEER" if addr == "127.0.0.1" and port else answer


def check(servers, mg, mode, name, values):
    want = peer_port_out(ask(servers[mode], "/", name, values))
    got = peer_port_out(ask(mg.ports[mode], "/", name, values))
    assert got == want, "%s %s %r: nginx %r, moongate %r" % (mode, name, values, want, got)
    d = dict(scgi_vars(ask(mg.ports[mode], "/vars", name, values).encode()))
    addr, _, port = want.partition(" ")
    assert d["REMOTE_ADDR"] == addr
    if port != "PEER":
        assert d["REMOTE_PORT"] == port
    return want


@pytest.mark.parametrize("mode", ["xff", "xff_rec", "untrusted"])
def test_x_forwarded_for_as_nginx(servers, mg, mode):
    answers = [check(servers, mg, mode, "X-Forwarded-For", v) for v in XFF]
    # the test means something: answers differ, and some are not the peer
    assert len(set(answers)) > 3 or mode == "untrusted"
    if mode == "untrusted":
        assert all(a == "127.0.0.1 PEER" for a in answers)


@pytest.mark.parametrize("mode,name", [("xri", "X-Real-IP"), ("xri_rec", "X-Real-IP"), ("custom", "X-Client"),
                                       ("xff", "X-Real-IP")])
def test_x_real_ip_and_other_names_as_nginx(servers, mg, mode, name):
    for v in OTHER:
        check(servers, mg, mode, name, v)


def test_known_answers(mg):
    """Hand-checked results, so that the differential is not comparing two wrong answers."""
    p = mg.ports
    assert ask(p["xff"], "/", "X-Forwarded-For", ["203.0.113.5, 10.0.0.2"]) == "10.0.0.2 "
    assert ask(p["xff_rec"], "/", "X-Forwarded-For", ["198.51.100.1, 203.0.113.5, 10.0.0.2"]) == "203.0.113.5 "
    assert ask(p["xff_rec"], "/", "X-Forwarded-For", ["10.0.0.9, 10.0.0.2"]) == "10.0.0.9 "
    assert ask(p["xff_rec"], "/", "X-Forwarded-For", ["203.0.113.5:4444"]) == "203.0.113.5 4444"
    assert ask(p["xff_rec"], "/", "X-Forwarded-For", ["[2001:db9::7]:8443"]) == "2001:db9::7 8443"
    assert ask(p["untrusted"], "/", "X-Forwarded-For", ["203.0.113.5"]).startswith("127.0.0.1 ")
    assert ask(p["xri"], "/", "X-Real-IP", ["203.0.113.7"]) == "203.0.113.7 "
    # peer_addr stays the socket's
    r = ask(mg.port, "/vars", "X-Real-IP", ["203.0.113.7"])
    assert dict(scgi_vars(r.encode()))["REMOTE_ADDR"] == "203.0.113.7"


FORWARDED = [
    # (values, recursive, expected address, expected port); RFC 7239 sections 4 and 7
    (['for="_gazonk"'], False, "127.0.0.1", None),
    (['For="[2001:db8:cafe::17]:4711"'], False, "2001:db8:cafe::17", "4711"),
    (["for=192.0.2.60;proto=http;by=203.0.113.43"], False, "192.0.2.60", ""),
    (["for=192.0.2.43, for=198.51.100.17"], False, "198.51.100.17", ""),
    (["for=192.0.2.43, for=10.0.0.5"], False, "10.0.0.5", ""),
    (["for=192.0.2.43, for=10.0.0.5"], True, "192.0.2.43", ""),
    (["for=192.0.2.43", "for=10.0.0.5;proto=https"], True, "192.0.2.43", ""),
    (["for=unknown, for=10.0.0.5"], True, "10.0.0.5", ""),
    (['for="192.0.2.43:_hidden"'], False, "192.0.2.43", ""),
    (['for="[2001:db8::1]"'], False, "2001:db8::1", ""),
    (["for=2001:db8::1"], False, "127.0.0.1", None),  # IPv6 must be bracketed
    (["proto=https;by=203.0.113.43"], False, "127.0.0.1", None),
    (['for="198.51.100.9";proto=https, for=10.1.1.1'], True, "198.51.100.9", ""),
    (["for=garbage"], False, "127.0.0.1", None),
]


@pytest.mark.parametrize("values,recursive,addr,port", FORWARDED)
def test_forwarded_rfc7239(gateway, echo_backend, values, recursive, addr, port):
    g = gateway("""
mg.set { real_ip_from = { "127.0.0.1", "10.0.0.0/8" }, real_ip_header = "Forwarded", real_ip_recursive = %s }
mg.route("/vars", "scgi://127.0.0.1:{BACKEND}/")
mg.route("/", function(req) return 200, req.remote_addr .. " " .. ngx.var.remote_port .. " " .. req.peer_addr end)
""" % ("true" if recursive else "false"), echo_backend)
    got_addr, got_port, peer = ask(g.port, "/", "Forwarded", values).split(" ")
    assert got_addr == addr and peer == "127.0.0.1"
    if port is not None:
        assert got_port == port
    assert dict(scgi_vars(ask(g.port, "/vars", "Forwarded", values).encode()))["REMOTE_ADDR"] == addr


def test_trust_is_checked_against_the_proxy_source_and_logs_show_the_client(gateway, echo_backend):
    g = gateway("""
mg.set { real_ip_from = { "127.0.0.1" }, real_ip_header = "X-Forwarded-For", access_log = "access.log" }
mg.listen("127.0.0.1:{PORT}", { proxy_protocol = true, real_ip_from = { "192.0.2.0/24" } })
mg.route("/", function(req) return 200, req.remote_addr .. " " .. req.peer_addr end)
""", echo_backend)

    def via(src, xff, path):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(("PROXY TCP4 %s 10.9.9.9 5555 80\r\nGET %s HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: %s\r\n"
                   "Connection: close\r\n\r\n" % (src, path, xff)).encode())
        out = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            out += c
        return out.partition(b"\r\n\r\n")[2].decode()
    # the PROXY source is a trusted load balancer: the header is believed
    assert via("192.0.2.10", "203.0.113.50", "/a") == "203.0.113.50 192.0.2.10"
    # the socket peer (127.0.0.1, trusted by mg.set) does not count: the listener's list is
    # matched against the PROXY source, which is not in it
    assert via("198.51.100.10", "203.0.113.50", "/b") == "198.51.100.10 198.51.100.10"
    import time
    deadline = time.time() + 3
    while time.time() < deadline and "/b " not in g.access_log():
        time.sleep(0.05)
    log = g.access_log().splitlines()
    assert any(l.startswith("203.0.113.50 - - [") and "/a " in l for l in log), log
    assert any(l.startswith("198.51.100.10 - - [") and "/b " in l for l in log), log


def test_limit_req_keys_by_the_client_address(gateway):
    g = gateway("""
mg.set { real_ip_from = { "127.0.0.1" }, real_ip_header = "X-Forwarded-For" }
local lim = mg.limit_req("per_ip", { rate = "1r/m", burst = 0, size = "1m" })
mg.on("access", function(req)
  local delay, err = lim:incoming(req.remote_addr, true)
  if not delay then return req:exit(429, err) end
end)
mg.route("/", function(req) return 200, req.remote_addr end)
""")
    assert ask_status(g.port, "203.0.113.1") == 200
    assert ask_status(g.port, "203.0.113.1") == 429  # the same client, over its rate
    assert ask_status(g.port, "203.0.113.2") == 200  # another client behind the same proxy


def ask_status(port, xff):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: %s\r\nConnection: close\r\n\r\n" % xff).encode())
    out = s.recv(65536)
    s.close()
    return int(out.split()[1])


@pytest.mark.parametrize("lua,msg", [
    ('mg.set { real_ip_from = { "10.0.0.0/33" } }', 'real_ip_from[1]: cannot read "10.0.0.0/33"'),
    ('mg.set { real_ip_from = { "127.0.0.1", "localhost" } }', 'real_ip_from[2]: cannot read "localhost"'),
    ('mg.set { real_ip_from = 5 }', "real_ip_from: expected a list"),
    ('mg.set { real_ip_header = "X Bad" }', "real_ip_header: expected a header name"),
    ('mg.set { real_ip_header = "proxy_protocol" }', "the PROXY header's source already is the peer address"),
    ('mg.set { real_ip_recursive = "on" }', "real_ip_recursive: expected true or false"),
    ('mg.listen("127.0.0.1:1", { real_ip_from = { "::1/200" } })', 'real_ip_from[1]: cannot read "::1/200"'),
])
def test_bad_realip_options_are_load_errors_with_the_line(tmp_path, lua, msg):
    p = tmp_path / "init.lua"
    p.write_text('local mg = require "moongate"\n%s\nmg.listen("127.0.0.1:2")\n' % lua)
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and msg in out and "init.lua:2:" in out, out
