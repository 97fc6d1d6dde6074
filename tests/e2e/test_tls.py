"""TLS listeners (docs/reference.md, "TLS"), checked with Debian's curl and openssl s_client:
SNI, ALPN, protocol versions, session resumption, HTTPS=on to backends, certificates re-read on
reload without failing a request in flight, a bad certificate as a load error, garbage and
stalled handshakes closed on time, a 1 MiB body intact."""
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import MOONGATE, free_port, request, scgi_vars


def make_cert(d, name, tag=""):
    cert, key = os.path.join(d, name + tag + ".pem"), os.path.join(d, name + tag + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=%s" % name, "-addext", "subjectAltName=DNS:%s" % name],
                   check=True, capture_output=True)
    return cert, key


def s_client(port, *args, data=b""):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=data, capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode("latin-1") + p.stderr.decode("latin-1")


def curl(port, name, path, cacert, *extra):
    p = subprocess.run(["curl", "-sS", "--cacert", cacert, "--resolve", "%s:%d:127.0.0.1" % (name, port)] + list(extra) +
                       ["https://%s:%d%s" % (name, port, path)], capture_output=True, timeout=20)
    return p.returncode, p.stdout, p.stderr.decode()


@pytest.fixture
def tls_gateway(gateway, tmp_path, echo_backend):
    certs = {n: make_cert(str(tmp_path), n) for n in ("a.test", "b.test")}
    tls_port = free_port()
    g = gateway("""
mg.set { client_header_timeout = "500ms" }
mg.listen("127.0.0.1:{PORT}")
mg.listen("127.0.0.1:%d", { tls = { certs = {
  { cert = "%s", key = "%s" },
  { cert = "%s", key = "%s" },
} } })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("=/scheme", function(req) return 200, req.scheme end)
""" % (tls_port, certs["a.test"][0], certs["a.test"][1], certs["b.test"][0], certs["b.test"][1]), echo_backend)
    g.tls_port, g.certs = tls_port, certs
    return g


def test_sni_picks_the_certificate(tls_gateway):
    g = tls_gateway
    for name in ("a.test", "b.test"):
        rc, out = s_client(g.tls_port, "-servername", name)
        assert "subject=CN = %s" % name in out, out[-800:]
    rc, out = s_client(g.tls_port, "-servername", "unknown.test")
    assert "subject=CN = a.test" in out  # the first certificate is the default


def test_https_reaches_the_backend_and_plain_runs_beside_it(tls_gateway):
    g = tls_gateway
    rc, body, err = curl(g.tls_port, "b.test", "/vars", g.certs["b.test"][0])
    assert rc == 0, err
    d = dict(scgi_vars(body))
    assert d["HTTPS"] == "on" and d["REQUEST_SCHEME"] == "https" and d["SERVER_NAME"] == "b.test"
    rc, body, err = curl(g.tls_port, "a.test", "/scheme", g.certs["a.test"][0])
    assert body == b"https"
    plain = request(g.port, path="/vars")
    d = dict(scgi_vars(plain.body))
    assert "HTTPS" not in d and d["REQUEST_SCHEME"] == "http"
    assert request(g.port, path="/scheme").body == b"http"


def test_alpn_and_protocol_versions(tls_gateway):
    g = tls_gateway
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-alpn", "h2,http/1.1")
    assert "ALPN protocol: h2" in out  # HTTP/2 first (SPEC 18)
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-alpn", "http/1.1")
    assert "ALPN protocol: http/1.1" in out
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-tls1_3")
    assert "Protocol  : TLSv1.3" in out or "TLSv1.3" in out, out[-500:]
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-tls1_2")
    assert "TLSv1.2" in out
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    # Refused: no session is made (a client that cannot offer TLS 1.1 at all fails the same way).
    assert "New, TLSv1.1" not in out and (rc != 0 or "Cipher is (NONE)" in out), out[-500:]


def test_session_resumption(tls_gateway, tmp_path):
    g = tls_gateway
    sess = str(tmp_path / "sess.pem")
    s_client(g.tls_port, "-servername", "a.test", "-tls1_2", "-sess_out", sess)
    rc, out = s_client(g.tls_port, "-servername", "a.test", "-tls1_2", "-sess_in", sess)
    assert "Reused, TLSv1.2" in out, out[-600:]


def test_a_large_body_arrives_intact(tls_gateway):
    g = tls_gateway
    rc, body, err = curl(g.tls_port, "a.test", "/bytes/1048576", g.certs["a.test"][0])
    assert rc == 0 and body == b"x" * 1048576
    data = os.urandom(300000)
    p = subprocess.run(["curl", "-sS", "--cacert", g.certs["a.test"][0], "--resolve", "a.test:%d:127.0.0.1" % g.tls_port,
                        "--data-binary", "@-", "https://a.test:%d/vars" % g.tls_port], input=data, capture_output=True,
                       timeout=20)
    assert p.returncode == 0 and hashlib.sha256(p.stdout.split(b"BODY=", 1)[1]).digest() == hashlib.sha256(data).digest()


def test_garbage_and_stalled_handshakes_are_closed_on_time(tls_gateway):
    g = tls_gateway
    s = socket.create_connection(("127.0.0.1", g.tls_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port: garbage
    t0 = time.time()
    got = s.recv(4096)
    assert time.time() - t0 < 1 and b"HTTP/1.1 200" not in got
    s.close()
    s = socket.create_connection(("127.0.0.1", g.tls_port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, then nothing
    t0 = time.time()
    assert s.recv(4096) == b""
    took = time.time() - t0
    assert 0.3 < took < 2.0, "a stalled handshake was closed after %.2f s (client_header_timeout 0.5 s)" % took
    s.close()


def test_reload_rereads_certificates_without_failing_a_request(gateway, tmp_path, demo_backend):
    cert, key = make_cert(str(tmp_path), "a.test")
    tls_port = free_port()
    g = gateway("""
mg.listen("127.0.0.1:{PORT}")
mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" } })
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""" % (tls_port, cert, key), demo_backend)
    before = s_client(tls_port, "-servername", "a.test")[1]
    fp = lambda out: out.split("-----BEGIN CERTIFICATE-----")[1].split("-----END")[0]  # noqa: E731
    result = {}

    def slow():
        result["r"] = curl(tls_port, "a.test", "/slow?ms=1500", cert)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    new_cert, new_key = make_cert(str(tmp_path), "a.test", tag="-new")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded")
    t.join(20)
    rc, body, err = result["r"]
    assert rc == 0 and body == b"slow\n", err  # the request in flight finished on the old workers
    deadline = time.time() + 5
    while time.time() < deadline and fp(s_client(tls_port, "-servername", "a.test")[1]) == fp(before):
        time.sleep(0.2)
    assert fp(s_client(tls_port, "-servername", "a.test")[1]) != fp(before)


def test_a_bad_certificate_is_a_load_error_with_its_line(tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    key = make_cert(str(tmp_path), "a.test")[1]
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.listen("127.0.0.1:2", { tls = { cert = "bad.pem", key = "%s" } })\n' % key)
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 1 and "init.lua:3: mg.listen: bad certificate" in p.stderr and "bad.pem" in p.stderr, p.stderr


@pytest.mark.parametrize("path", ["/vars", "/scheme"])
def test_close_notify_right_after_a_request_still_gets_the_response(tls_gateway, path):
    """A client that sends its request and then close_notify (TLS's half-close: a script that
    is done writing) gets the whole response and then the end of the connection. The
    close_notify used to stay unread in the TLS layer when the response had finished while its
    request was parsed (a Lua handler): the client waited for ever; and one read while a
    response was under way closed the connection at once."""
    import ssl
    g = tls_gateway
    ctx = ssl.create_default_context(cafile=g.certs["a.test"][0])
    # TLS 1.2: no session tickets after the handshake, which OpenSSL's client would process
    # (and then drop the data behind them) once it has sent its own close_notify.
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, outg, server_hostname="a.test")
    s = socket.create_connection(("127.0.0.1", g.tls_port), timeout=5)

    def pump():
        data = outg.read()
        if data:
            s.sendall(data)

    def feed():
        data = s.recv(65536)
        if not data:
            inc.write_eof()
        else:
            inc.write(data)
        return data

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
            feed()
    pump()
    tls.write(b"GET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % path.encode())
    try:
        tls.unwrap()  # queues close_notify; the server's own one has not come yet
    except ssl.SSLWantReadError:
        pass
    pump()
    got = b""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            got += chunk
        except ssl.SSLWantReadError:
            if not feed():
                break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    s.close()
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    if path == "/vars":
        assert b"HTTPS=on" in got and got.endswith(b"\r\n0\r\n\r\n"), "the whole response"
    else:
        assert got.endswith(b"\r\n\r\nhttps"), got
