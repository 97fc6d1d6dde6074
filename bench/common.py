"""Helpers shared by the benchmark and soak scripts: loopback ports, and the TLS benchmarks'
folder (a certificate, an SCGI backend, nginx's temp folders)."""
import os
import re
import socket
import subprocess
import tempfile
import time


_ports = os.environ.get("MG_PORTS")  # "lo-hi": hand out ports from this range only
_next = None


def free_port():
    """A loopback TCP port nothing listens on. With MG_PORTS=lo-hi, taken in turn from that
    range (outside the kernel's ephemeral range, so that two test runs side by side, each with
    its own range, never pick the same port before their servers bind it); otherwise the
    kernel's choice."""
    global _next
    if not _ports:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port
    lo, hi = (int(x) for x in _ports.split("-"))
    if _next is None:
        _next = lo + os.getpid() % (hi - lo + 1)
    for _ in range(hi - lo + 1):
        port, _next = _next, lo + (_next + 1 - lo) % (hi - lo + 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in MG_PORTS=%s" % _ports)


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on port %d after %d s" % (port, timeout))


def tls_bench_dir(build, prefix):
    """A folder with an RSA 2048 certificate, nginx's temp folders, and a scgi-echo backend
    started: (folder, cert, key, backend port, backend process)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    for sub in ("client_body_temp", "scgi_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    port = free_port()
    backend = subprocess.Popen([os.path.join(build, "scgi-echo"), "127.0.0.1:%d" % port])
    wait_port(port)
    return d, cert, key, port, backend


def rss_kib(pids):
    """Resident memory of the processes, summed (KiB)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
    return total
