"""The upstream path at the kernel's floor (docs/performance.md), pinned by counting system
calls: a backend socket is registered once in epoll and removed by its close, the request is
written right after connect, and no SO_ERROR query follows it; and by counting heap
allocations: a common proxied request allocates nothing. Counts, unlike timings, do not depend on the
machine's load."""
import os
import re
import struct
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import SANITIZED

HERE = os.path.dirname(os.path.abspath(__file__))


def strace_counts(pid, work):
    assert shutil.which("strace"), "strace is not installed: run `make deps` (package strace)"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", "/dev/stdout"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1.0)  # attached
    work()
    time.sleep(0.3)
    tracer.send_signal(signal.SIGINT)
    out = tracer.communicate(timeout=30)[0]
    counts = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
            counts[f[-1]] = (int(f[3]), int(f[4]) if len(f) == 6 else 0)
    return counts


def keepalive_requests(port, n):
    """n GET requests, one after the other, on one keep-alive connection."""
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    for _ in range(n):
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        line = f.readline()
        assert line.startswith(b"HTTP/1.1 200"), line
        length = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":")[1])
        assert f.read(length) == b"hello world\n"
    s.close()


def test_backend_syscalls_per_request(gateway, echo_backend):
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")', backend_port=echo_backend)
    worker = g.workers()[0]
    n = 300

    c = strace_counts(worker, lambda: keepalive_requests(g.port, n))
    per = {k: v[0] / n for k, v in c.items()}
    assert 0.99 <= per.get("socket", 0) <= 1.02 and 0.99 <= per.get("connect", 0) <= 1.02, per
    # One EPOLL_CTL_ADD per backend socket and nothing else (no MOD, no DEL, none failing).
    assert per.get("epoll_ctl", 0) <= 1.02 and c.get("epoll_ctl", (0, 0))[1] == 0, c
    # The connect is established by the first write: no getsockopt(SO_ERROR).
    assert per.get("getsockopt", 0) < 0.02, per
    # Quick ACKs off before connect and on again once the request is out (upstream.c): two
    # setsockopt per request, nothing else set per socket.
    assert per.get("setsockopt", 0) <= 2.02, per
    # The request leaves in one write, the 12-byte response is read in one read (its
    # Content-Length ends it): client read + backend read, response + request writes.
    if not SANITIZED:
        assert per.get("read", 0) <= 2.05, per
    # Socket writes: the response (writev) and the SCGI request (sendmsg); `write` is the
    # access log's line.
    writes = per.get("writev", 0) + per.get("sendmsg", 0)
    assert writes <= 2.05 and per.get("write", 0) <= 1.05, [kv for kv in sorted(per.items()) if kv[1] > 0.1]


@pytest.mark.skipif(SANITIZED, reason="AddressSanitizer replaces malloc, and the free lists are bypassed under it by design")
def test_no_heap_allocation_per_proxied_request(gateway, echo_backend, tmp_path, monkeypatch):
    """The request, its upstream, the SCGI netstring and the response head come from per-worker
    free lists and stack buffers: after warm-up, proxying a request calls malloc, calloc and
    realloc not at all (7 times before the free lists and stack buffers)."""
    assert shutil.which("gcc"), "gcc is needed to build the counting shim"
    shim = str(tmp_path / "malloc_count.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", shim, os.path.join(HERE, "helpers", "malloc_count.c")],
                   check=True)
    counter = str(tmp_path / "mallocs")
    monkeypatch.setenv("LD_PRELOAD", shim)
    monkeypatch.setenv("MG_MALLOC_COUNT", counter)
    g = gateway('mg.route("/", "scgi://127.0.0.1:{BACKEND}/")', backend_port=echo_backend)
    monkeypatch.delenv("LD_PRELOAD")

    def mallocs():
        with open(counter, "rb") as f:
            return struct.unpack("Q", f.read(8))[0]

    keepalive_requests(g.port, 300)  # warm-up: free lists, pools and libuv's buffers fill
    time.sleep(0.2)
    before = mallocs()
    assert before > 0, "the shim counted nothing: was it loaded?"
    n = 1000
    keepalive_requests(g.port, n)
    time.sleep(0.2)
    per = (mallocs() - before) / n
    assert per < 0.02, "%.2f heap allocations per proxied request" % per


def tcp_segments_in(conn):
    """Segments the kernel has received on this TCP socket (struct tcp_info's tcpi_segs_in)."""
    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 140)[0]


def scgi_backend_thread(handle, connections):
    """A listening socket whose first `connections` connections, each read up to the end of its
    SCGI request, go to handle(conn, segments) on a thread; segments: tcpi_segs_in by then."""
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)

    def run():
        for _ in range(connections):
            conn, _ = lsock.accept()
            with conn:
                data = b""
                while True:
                    head, sep, rest = data.partition(b":")
                    if sep and len(rest) > int(head):  # the netstring and its comma are in
                        break
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                handle(conn, tcp_segments_in(conn))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock, t


def test_backend_gets_its_connection_and_request_in_one_segment(gateway):
    """The handshake's last ACK leaves with the SCGI request (quick ACKs off before connect,
    HAProxy's tcp-smart-connect): the backend's socket has received the SYN and one more
    segment, not two, when the whole request is in. And quick ACKs are on again afterwards: a
    backend writing its head and then a first piece of body apart, with Nagle on, has both at
    the client at once, not after a delayed ACK (40 ms)."""
    segments, firsts = [], []

    def answer(conn, segs):
        segments.append(segs)
        conn.sendall(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        conn.send(b"one\n")
        time.sleep(0.3)
        conn.send(b"two\n")
    lsock, t = scgi_backend_thread(answer, 3)
    with lsock:
        g = gateway('mg.route("/", "scgi://127.0.0.1:%d/")' % lsock.getsockname()[1])
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", g.port))
            t0 = time.monotonic()
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got, first = b"", None
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
                if first is None and b"one\n" in got:
                    first = time.monotonic() - t0
            s.close()
            assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"one\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"), got
            firsts.append(first)
        t.join(5)
    assert segments == [2, 2, 2], "segments received by the backend for its connection and request: %s" % segments
    assert min(firsts) < 0.025, "the first piece of the body took %s s" % firsts
