"""Shielding pre-fork SCGI workers from slow clients (SPEC 19, docs/reference.md "Buffering"),
as a user of uWSGI behind the gateway would notice it: with the defaults a slow upload reaches
the backend only once it is complete (the backend's connection opens after the client's last
byte), and a slow download does not hold the backend (its connection is closed long before the
client has the body), with the worker's memory bounded; with the options off, the streaming of
SPEC 5 and 6. Every backend here is a raw SCGI server in a thread that records when things
happen; every loop has a count and a deadline; loopback only."""
import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, read_response
from test_http2 import worker_pids

MIB = 1 << 20


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


class TimedScgi:
    """An SCGI backend that records, per connection, when it was accepted and when its request
    was complete, then answers. `answer(env, body)` returns the bytes to send; after sending
    them the backend shuts its side and records when the gateway closed the connection."""

    def __init__(self, answer):
        self.answer = answer
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.stop = False
        self.conns = []  # dicts: accepted, first_byte, complete, sent, closed, env, body
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            rec = {"accepted": time.time()}
            self.conns.append(rec)
            threading.Thread(target=self.one, args=(c, rec), daemon=True).start()

    def one(self, c, rec):
        c.settimeout(30)
        try:
            buf = c.recv(65536)
            rec["first_byte"] = time.time()
            while b":" not in buf:
                buf += c.recv(65536)
            n, _, buf = buf.partition(b":")
            while len(buf) < int(n) + 1:
                buf += c.recv(65536)
            head, body = buf[:int(n)], buf[int(n) + 1:]
            env = head.split(b"\0")
            env = dict(zip(env[0::2], env[1::2]))
            want = int(env[b"CONTENT_LENGTH"])
            while len(body) < want:
                d = c.recv(1 << 20)
                if not d:
                    break
                body += d
            rec["complete"] = time.time()
            rec["env"], rec["body"] = env, body
            c.sendall(self.answer(env, body))
            rec["sent"] = time.time()
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
            rec["closed"] = time.time()
        except OSError as e:
            rec["error"] = repr(e)
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.ls.close()


def body_digest(env, body):
    text = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    return b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + text


@pytest.fixture
def digest_backend():
    b = TimedScgi(body_digest)
    yield b
    b.close()


def slow_upload(port, path, total, piece, pause, headers=b""):
    """Sends a POST of `total` bytes in pieces with pauses; returns (the time of the last byte,
    the response, the body's sha256)."""
    body = os.urandom(total)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), total, headers))
    for at in range(0, total, piece):
        s.sendall(body[at:at + piece])
        time.sleep(pause)
    last = time.time()
    f = s.makefile("rb")
    r = read_response(f)
    f.close()
    s.close()
    return last, r, hashlib.sha256(body).hexdigest().encode()


CONF = '''mg.set { client_max_body_size = "10m" }
mg.route("/buffered/", "scgi://127.0.0.1:{BACKEND}")
mg.route("/streamed/", "scgi://127.0.0.1:{BACKEND}", { request_buffering = false })
'''


def test_a_slow_upload_reaches_the_backend_only_when_complete(gateway, digest_backend):
    g = gateway(CONF, digest_backend.port)
    total = 2 * MIB
    last, r, digest = slow_upload(g.port, "/buffered/up", total, 64 * 1024, 0.04)
    assert r.status == 200, r.body
    assert r.body == b"%d %s" % (total, digest)
    rec = digest_backend.conns[-1]
    # The whole upload took about 1.3 s; the backend's connection opened after its last byte.
    assert rec["accepted"] >= last - 0.05, "backend contacted %.2f s before the last client byte" % (last - rec["accepted"])
    assert rec["complete"] - rec["accepted"] < 0.5, "the backend waited %.2f s for the body" % (rec["complete"] - rec["accepted"])
    assert rec["env"][b"CONTENT_LENGTH"] == b"%d" % total


def test_without_request_buffering_the_upload_streams(gateway, digest_backend):
    g = gateway(CONF, digest_backend.port)
    total = 2 * MIB
    last, r, digest = slow_upload(g.port, "/streamed/up", total, 64 * 1024, 0.04)
    assert r.status == 200 and r.body == b"%d %s" % (total, digest)
    rec = digest_backend.conns[-1]
    assert rec["accepted"] < last - 0.8, "with request_buffering = false the backend was contacted only at the end"


def test_a_small_body_is_buffered_and_sent_with_the_head(gateway, digest_backend):
    g = gateway(CONF, digest_backend.port)
    last, r, digest = slow_upload(g.port, "/buffered/small", 12, 12, 0)
    assert r.status == 200 and r.body == b"12 " + digest


def test_a_chunked_upload_is_buffered_too(gateway, digest_backend):
    g = gateway(CONF, digest_backend.port)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(b"POST /streamed/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    data = b""
    for i in range(5):
        piece = os.urandom(30000)
        data += piece
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.05)
    last = time.time()
    s.sendall(b"0\r\n\r\n")
    r = read_response(s.makefile("rb"))
    s.close()
    assert r.status == 200 and r.body == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())
    # SCGI needs the exact length: chunked is spooled whatever request_buffering says.
    assert digest_backend.conns[-1]["accepted"] >= last - 0.05


def test_client_body_timeout_applies_while_buffering(gateway, digest_backend):
    g = gateway(CONF.replace('"10m" }', '"10m", client_body_timeout = 1 }'), digest_backend.port)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    t0 = time.time()
    s.sendall(b"POST /buffered/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 30000)
    r = read_response(s.makefile("rb"))
    took = time.time() - t0
    s.close()
    assert r.status == 408, (r.status, r.body)
    assert 0.8 < took < 3, took
    assert digest_backend.conns == [], "the backend was contacted for a body that never completed"


# ---- response buffering ------------------------------------------------------------------------

BIG = 20 * MIB


def big_answer(env, body):
    path = env[b"REQUEST_URI"]
    n = BIG if b"big" in path else 2 * MIB
    blob = (hashlib.sha256(path).digest() * (n // 32 + 1))[:n]
    return b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s" % (n, blob)


@pytest.fixture
def big_backend():
    b = TimedScgi(big_answer)
    yield b
    b.close()


def curl_slow(port, path, rate, extra=()):
    t0 = time.time()
    out = subprocess.run(["curl", "-sS", "--limit-rate", rate, "-o", "-", "-w", "\n%{http_code}", *extra,
                          "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, timeout=60)
    body, _, code = out.stdout.rpartition(b"\n")
    return time.time() - t0, int(code), body


RCONF = '''mg.workers(1)
mg.route("/buffered/", "scgi://127.0.0.1:{BACKEND}")
mg.route("/tiny/", "scgi://127.0.0.1:{BACKEND}", { response_buffer_size = "16k" })
mg.route("/streamed/", "scgi://127.0.0.1:{BACKEND}", { response_buffering = false })
mg.route("/smallfile/", "scgi://127.0.0.1:{BACKEND}", { response_temp_max = "1m" })
'''


def slow_read(port, path, rate):
    """GET path over HTTP/1.1 and read it at about `rate` bytes/s with a small receive buffer
    (so the kernel holds little for us). Returns (seconds, status, body)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.settimeout(20)
    t0 = time.time()
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    data = bytearray()
    while True:
        d = s.recv(16384)
        if not d:
            break
        data += d
        lag = len(data) / rate - (time.time() - t0)
        if lag > 0:
            time.sleep(lag)
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return time.time() - t0, int(head.split()[1]), body


def expected(path, n):
    return (hashlib.sha256(path.encode()).digest() * (n // 32 + 1))[:n]


@pytest.mark.parametrize("proto", ["http1", "h2c"])
def test_a_slow_reader_of_20mb_does_not_hold_the_backend(gateway, big_backend, proto):
    conf = RCONF if proto == "http1" else RCONF.replace("mg.workers(1)", 'mg.workers(1)\nmg.listen("127.0.0.1:{PORT}", { http2 = true })')
    g = gateway(conf, big_backend.port)
    pid = worker_pids(g)[0]
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    extra = ("--http2-prior-knowledge",) if proto == "h2c" else ()
    t0 = time.time()
    if proto == "http1":
        took, code, body = slow_read(g.port, "/buffered/big", 8 * MIB)
    else:
        took, code, body = curl_slow(g.port, "/buffered/big", "8M", extra)
    done.set()
    sampler.join(2)
    assert code == 200 and body == expected("/buffered/big", BIG)
    rec = big_backend.conns[-1]
    held = rec["closed"] - rec["accepted"]
    # About 2.5 s for the client (curl's limit is an average: it may go faster at first); the
    # backend is released as fast as loopback and the disk go.
    assert took > 1.5, took
    assert held < took / 2, "the backend was held %.2f s of the client's %.2f s" % (held, took)
    assert rec["closed"] < t0 + took - 1.0
    print("%s: client %.2f s, backend held %.2f s, worker RSS %+d KiB at peak" % (proto, took, held, peak[0] - before))
    assert peak[0] - before < 16 * 1024, "worker RSS grew %d KiB for a 20 MB response" % (peak[0] - before)


def test_without_response_buffering_the_slow_reader_paces_the_backend(gateway, big_backend):
    g = gateway(RCONF, big_backend.port)
    took, code, body = slow_read(g.port, "/streamed/big", 8 * MIB)
    assert code == 200 and body == expected("/streamed/big", BIG)
    rec = big_backend.conns[-1]
    # Streaming: the backend writes only as fast as the client reads, ahead by the socket
    # buffers between them (several MB on loopback).
    held = rec["sent"] - rec["accepted"]
    print("streamed: client %.2f s, backend writing for %.2f s" % (took, held))
    assert held > took / 3, "the backend finished in %.2f s of the client's %.2f s" % (held, took)


def test_a_full_temporary_file_pauses_the_backend_and_loses_nothing(gateway, big_backend):
    g = gateway(RCONF, big_backend.port)
    took, code, body = slow_read(g.port, "/smallfile/big", 8 * MIB)
    assert code == 200 and body == expected("/smallfile/big", BIG)
    rec = big_backend.conns[-1]
    # At most 1 MiB waits on disk: the backend is paced by the client, as when streaming.
    held = rec["sent"] - rec["accepted"]
    print("1 MiB file: client %.2f s, backend writing for %.2f s" % (took, held))
    assert held > took / 3, "the backend finished in %.2f s of the client's %.2f s" % (held, took)


def test_fast_clients_and_keepalive_are_unchanged(gateway, big_backend):
    g = gateway(RCONF, big_backend.port)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=20)
    f = s.makefile("rb")
    for i in range(3):
        s.sendall(b"GET /buffered/k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        r = read_response(f)
        assert r.status == 200 and r.body == expected("/buffered/k%d" % i, 2 * MIB)
    f.close()
    s.close()


def test_the_client_going_away_mid_download_frees_the_buffer(gateway, big_backend):
    g = gateway(RCONF, big_backend.port)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /buffered/big HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")
    deadline = time.time() + 10
    while "closed" not in big_backend.conns[-1] and time.time() < deadline:
        time.sleep(0.05)
    assert "closed" in big_backend.conns[-1], "the backend was not released while the client waited"
    s.close()
    # The worker serves on, and conftest checks that no descriptor (the temporary file) leaked.
    took, code, body = curl_slow(g.port, "/buffered/after", "100M")
    assert code == 200 and body == expected("/buffered/after", 2 * MIB)


def h2c_gets(port, paths, window, conn_window=None):
    """HTTP/2 (h2c) GETs on one connection, with `window` bytes of flow-control window on each
    stream and `conn_window` (default: window for each stream) on the connection: (socket,
    h2 connection). Nothing is read yet."""
    import h2.config
    import h2.connection
    import h2.settings
    s = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    conn.increment_flow_control_window(conn_window or window * len(paths))
    for i, path in enumerate(paths):
        conn.send_headers(1 + 2 * i, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")],
                          end_stream=True)
    s.sendall(conn.data_to_send())
    return s, conn


def h2_read(s, conn, bodies, ended, seconds, acked=None, unacked=None, until_ended=0):
    """Reads the connection for up to `seconds`: DATA into bodies[stream], its window opened
    again for the streams in `acked` (None: all), else counted in unacked[stream]; the streams
    that end go into `ended`, and reading stops once `until_ended` of them have."""
    import h2.events
    s.settimeout(0.2)
    t_end = time.time() + seconds
    while time.time() < t_end and not (until_ended and len(ended) >= until_ended):
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] += ev.data
                if acked is None or ev.stream_id in acked:
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    unacked[ev.stream_id] += ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
        s.sendall(conn.data_to_send())  # acks of SETTINGS and PING, and the WINDOW_UPDATEs


def test_h2_a_reader_that_stops_does_not_hold_the_backend(gateway, big_backend):
    """Three 20 MB downloads on one connection whose windows are wide open: while the socket
    takes bytes, a stream waiting for its turn over response_buffer_size makes its backend
    wait (as nginx's upstream waits while its downstream is ready), not the file. When the
    client stops reading, the rest goes into the file all the same and every backend is let
    go; then the client reads everything, and nothing is lost."""
    g = gateway(RCONF.replace("mg.workers(1)", 'mg.workers(1)\nmg.listen("127.0.0.1:{PORT}", { http2 = true })'),
                big_backend.port)
    paths = ["/buffered/big%d" % i for i in range(3)]
    s, conn = h2c_gets(g.port, paths, 64 * MIB)
    t0 = time.time()
    while time.time() < t0 + 5 and not (len(big_backend.conns) == 3 and all(r.get("closed") for r in big_backend.conns)):
        time.sleep(0.05)  # the client reads nothing: its socket fills up
    held = [round(r["closed"] - t0, 2) if r.get("closed") else None for r in big_backend.conns]
    assert len(held) == 3 and all(h is not None and h < 2.5 for h in held), "backends held: %s s" % held
    bodies, ended = {1 + 2 * i: bytearray() for i in range(3)}, set()
    h2_read(s, conn, bodies, ended, 60, until_ended=3)
    s.close()
    assert len(ended) == 3
    for i, path in enumerate(paths):
        assert bytes(bodies[1 + 2 * i]) == expected(path, BIG), path


def test_h2_a_stream_whose_window_stays_shut_does_not_hold_the_backend(gateway, big_backend):
    """The client reads its socket but never opens the stream's window again after 600 KiB:
    the stream's backend, waiting for the client while it took bytes, gets its turn again once
    the window is shut (checked every 100 ms), and goes on into the file; then the window
    opens and the whole body arrives."""
    g = gateway(RCONF.replace("mg.workers(1)", 'mg.workers(1)\nmg.listen("127.0.0.1:{PORT}", { http2 = true })'),
                big_backend.port)
    s, conn = h2c_gets(g.port, ["/buffered/big"], 600 * 1024, conn_window=64 * MIB)
    bodies, unacked, ended = {1: bytearray()}, {1: 0}, set()
    t0 = time.time()
    h2_read(s, conn, bodies, ended, 3, acked=(), unacked=unacked)  # no WINDOW_UPDATE
    rec = big_backend.conns[-1]
    assert len(bodies[1]) <= 600 * 1024 < BIG
    assert rec.get("closed") and rec["closed"] - t0 < 2.0, "the backend is held by a stream whose window is shut"
    conn.acknowledge_received_data(unacked[1], 1)
    s.sendall(conn.data_to_send())
    h2_read(s, conn, bodies, ended, 60, until_ended=1)
    s.close()
    assert ended and bytes(bodies[1]) == expected("/buffered/big", BIG)


def test_a_buffer_smaller_than_one_read_still_answers(gateway, big_backend):
    """response_buffer_size below one read from the backend (64 KiB) counts as 64 KiB: the
    2 MB body arrives whole (it used to wait in the file for a drain that never came)."""
    g = gateway(RCONF, big_backend.port)
    took, code, body = curl_slow(g.port, "/tiny/small", "100M")
    assert code == 200 and body == expected("/tiny/small", 2 * MIB), (code, len(body))


def test_h2_streams_that_hold_the_connection_do_not_hold_another_streams_backend(gateway, big_backend):
    """Six streams whose windows stay shut after 600 KiB hold more than the connection's share
    of queued bytes; a seventh stream with its window open still gets its backend let go (its
    rest waits in the file), and then everything arrives whole."""
    g = gateway(RCONF.replace("mg.workers(1)", 'mg.workers(1)\nmg.listen("127.0.0.1:{PORT}", { http2 = true })'),
                big_backend.port)
    paths = ["/buffered/small%d" % i for i in range(6)] + ["/buffered/big6"]
    s, conn = h2c_gets(g.port, paths[:6], 600 * 1024, conn_window=256 * MIB)
    bodies = {1 + 2 * i: bytearray() for i in range(7)}
    unacked, ended = {sid: 0 for sid in bodies}, set()
    h2_read(s, conn, bodies, ended, 1.0, acked=(), unacked=unacked)  # the six fill their windows and stop
    t0 = time.time()
    conn.send_headers(13, [(":method", "GET"), (":path", paths[6]), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    conn.increment_flow_control_window(64 * MIB, stream_id=13)
    s.sendall(conn.data_to_send())
    h2_read(s, conn, bodies, ended, 3.0, acked=(13,), unacked=unacked)
    rec = [r for r in big_backend.conns if r.get("env", {}).get(b"REQUEST_URI", b"").endswith(b"big6")]
    assert rec and rec[0].get("closed") and rec[0]["closed"] - t0 < 2.5, "the seventh stream's backend is held"
    for sid in range(1, 13, 2):
        conn.acknowledge_received_data(unacked[sid], sid)
    s.sendall(conn.data_to_send())
    h2_read(s, conn, bodies, ended, 30, until_ended=len(paths))
    s.close()
    for i, path in enumerate(paths):
        assert bytes(bodies[1 + 2 * i]) == expected(path, BIG if "big" in path else 2 * MIB), (path, len(bodies[1 + 2 * i]))
