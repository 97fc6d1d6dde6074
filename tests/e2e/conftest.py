"""End-to-end harness: runs the real moongate binary on loopback against real backends.

MG_BUILD names the build folder (release or ASan). Each gateway gets its own folder with its
init.lua; the error log is captured, and a sanitizer report in it fails the test.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MG_BUILD", os.path.join(ROOT, "build"))
MOONGATE = os.path.join(BUILD, "moongate")
SCGI_ECHO = os.path.join(BUILD, "scgi-echo")
DEMO_APP = os.path.join(ROOT, "examples", "demo_app.py")
SANITIZED = os.environ.get("MG_SANITIZED") == "1"
# MG_VALGRIND=DIR runs every gateway under valgrind's memcheck, one log per process in DIR.
VALGRIND = os.environ.get("MG_VALGRIND")


sys.path.insert(0, os.path.join(ROOT, "bench"))
from common import free_port  # noqa: E402,F401  (shared with the benchmark and soak scripts)


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on port %d after %.0fs" % (port, timeout))


class Process:
    def __init__(self, args, port=None, env=None, cwd=None):
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        if port:
            wait_port(port, self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Gateway:
    """A moongate master with its workers, from an init.lua body."""

    def __init__(self, tmp_path, lua, backend_port=None, extra_files=None):
        self.dir = str(tmp_path)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "error.log")
        self.access_path = os.path.join(self.dir, "access.log")
        text = lua.replace("{PORT}", str(self.port)).replace("{BACKEND}", str(backend_port))
        header = 'local mg = require "moongate"\n'
        if "mg.listen" not in text:
            header += 'mg.listen("127.0.0.1:{}")\n'.format(self.port)
        if "access_log" not in text:
            header += 'mg.set { access_log = "access.log" }\n'
        self.config = os.path.join(self.dir, "init.lua")
        with open(self.config, "w") as f:
            f.write(header + text)
        for name, body in (extra_files or {}).items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(body)
        self.errlog = open(self.log_path, "wb")
        env = dict(os.environ)
        # A small quarantine: freed blocks are reused soon, so memory bounds can be asserted
        # under ASan too (use-after-free is still caught within the quarantine window).
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"
        argv = [MOONGATE, "-c", self.config]
        if VALGRIND:
            argv = ["valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite",
                    "--suppressions=" + os.path.join(ROOT, "tests", "valgrind.supp"),
                    "--log-file=" + os.path.join(VALGRIND, "vg.%p.log")] + argv
        self.proc = subprocess.Popen(argv, stdout=self.errlog, stderr=self.errlog, env=env)
        try:
            wait_port(self.port, self.proc, timeout=60 if VALGRIND else 10)
        except RuntimeError:
            # A gateway that never answers must not outlive the test (it could hold a port).
            self.proc.kill()
            self.proc.wait()
            raise
        self.fd_baseline = self._worker_fds()

    def workers(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def _worker_fds(self):
        """Descriptor counts of the workers once they run (the port answers before the fork)."""
        deadline = time.time() + 5
        while not self.workers() and time.time() < deadline:
            time.sleep(0.02)

        def counts():
            out = {}
            for pid in self.workers():
                try:
                    out[pid] = len(os.listdir("/proc/%d/fd" % pid))
                except OSError:
                    pass
            return out
        # A worker opens its descriptors (logs, listeners, its loop) after the fork: on a loaded
        # machine that takes a while, so the count is taken once it holds still for 100 ms.
        last = counts()
        deadline = time.time() + 3
        while time.time() < deadline:
            time.sleep(0.1)
            now = counts()
            if now == last:
                break
            last = now
        return last

    def check_descriptors(self):
        """Every worker that ran since the start is back to its starting descriptor count
        (lingering closes take up to 2 s): nothing a test did leaked a descriptor."""
        if VALGRIND:
            return
        for pid, start in self.fd_baseline.items():
            deadline = time.time() + 4
            while True:
                try:
                    now = len(os.listdir("/proc/%d/fd" % pid))
                except OSError:
                    break  # the worker is gone (a reload or a kill in the test)
                if now <= start or time.time() > deadline:
                    break
                time.sleep(0.05)
            try:
                now = len(os.listdir("/proc/%d/fd" % pid))
            except OSError:
                continue
            if now > start:
                fds = sorted(os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid))
                raise AssertionError("worker %d holds %d descriptors, %d at its start: %s" % (pid, now, start, fds))

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def access_log(self):
        try:
            with open(self.access_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, needle, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.log():
                return True
            time.sleep(0.05)
        raise AssertionError("log line %r not seen; log:\n%s" % (needle, self.log()))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        leak = None
        if self.proc.poll() is None:
            try:
                self.check_descriptors()
            except AssertionError as e:
                leak = e
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()
        log = self.log()
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert marker not in log, "sanitizer report in the error log:\n" + log
        if leak:
            raise leak


@pytest.fixture
def echo_backend():
    """The project's C SCGI backend."""
    port = free_port()
    p = Process([SCGI_ECHO, "127.0.0.1:%d" % port], port)
    yield port
    p.stop()


@pytest.fixture
def demo_backend():
    """The scriptable Python SCGI app (examples/demo_app.py)."""
    port = free_port()
    p = Process([sys.executable, DEMO_APP, "127.0.0.1:%d" % port], port)
    yield port
    p.stop()


@pytest.fixture
def gateway(tmp_path):
    made = []

    def start(lua, backend_port=None, extra_files=None, subdir=None):
        d = tmp_path / (subdir or "gw%d" % len(made))
        d.mkdir(exist_ok=True)
        g = Gateway(d, lua, backend_port, extra_files)
        made.append(g)
        return g

    yield start
    for g in made:
        g.stop()


# ---- a raw HTTP client, for exact bytes on the wire ---------------------------------------------

def raw(port, data, timeout=5.0, read_until_close=True):
    """Sends bytes, returns everything received until the server closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def read_all(sock):
    """Everything the server sends on sock until it closes; closes sock."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    sock.close()
    return out


class Response:
    def __init__(self, status, headers, body, raw_head):
        self.status, self.headers, self.body, self.raw_head = status, headers, body, raw_head

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def read_response(sock_file, head_request=False):
    """Reads one HTTP/1.1 response from a socket file, honouring its framing."""
    line = sock_file.readline()
    if not line:
        raise EOFError("connection closed before a status line")
    while line.startswith(b"HTTP/1.1 100"):
        sock_file.readline()
        line = sock_file.readline()
    status = int(line.split()[1])
    headers = []
    raw_head = line
    while True:
        h = sock_file.readline()
        raw_head += h
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers.append((k.strip(), v.strip()))
    r = Response(status, headers, b"", raw_head)
    if head_request or status in (204, 304) or status < 200:
        return r
    te = r.header("Transfer-Encoding")
    cl = r.header("Content-Length")
    if te and "chunked" in te.lower():
        body = b""
        while True:
            size_line = sock_file.readline()
            if not size_line:
                raise EOFError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                sock_file.readline()
                break
            data = sock_file.read(size)
            if len(data) < size:
                raise EOFError("connection closed inside a chunk")
            body += data
            sock_file.readline()
        r.body = body
    elif cl is not None:
        r.body = sock_file.read(int(cl))
        if len(r.body) < int(cl):
            raise EOFError("connection closed after %d of %s bytes" % (len(r.body), cl))
    else:
        r.body = sock_file.read()
    return r


def request(port, method="GET", path="/", headers=None, body=None, version="1.1"):
    """One request on a fresh connection; returns the Response."""
    hdrs = [("Host", "127.0.0.1:%d" % port)] + list(headers or [])
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    data = ("%s %s HTTP/%s\r\n" % (method, path, version)).encode("latin-1")
    data += b"".join(("%s: %s\r\n" % kv).encode("latin-1") for kv in hdrs) + b"\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data + (body or b""))
    f = s.makefile("rb")
    try:
        return read_response(f, head_request=(method == "HEAD"))
    finally:
        f.close()
        s.close()


def scgi_vars(body):
    """Parses the demo/echo backend's variable dump into an ordered list of (name, value)."""
    text, _, _ = body.partition(b"BODY=")
    out = []
    for line in text.decode("utf-8", "replace").splitlines():
        k, _, v = line.partition("=")
        out.append((k, v))
    return out
