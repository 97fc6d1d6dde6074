"""Members given by host name, looked up again (SPEC 20, docs/balancer.md "Names resolved
again"), against Debian's dnsmasq on a loopback port whose answers change (its hosts file is
rewritten and re-read on HUP; TTL 1 s): traffic follows the name to the new address without a
reload, every address (A and AAAA) is a member, a failed lookup keeps the last good set and is
logged, a name that does not resolve at load is a load error unless resolve = true (then 503
until it resolves)."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import MOONGATE, free_port, request

pytestmark = pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq-base is not installed")


class Backend:
    """An SCGI backend on host:port that answers its own host and counts requests."""

    def __init__(self, host, port):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ls = socket.socket(fam)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((host, port))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.host, self.count, self.stop = host, 0, False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(5)
                c.recv(65536)
                self.count += 1
                c.sendall(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + self.host.encode())
            except OSError:
                pass
            c.close()

    def close(self):
        self.stop = True
        self.ls.close()


class Dns:
    """dnsmasq answering from a hosts file only, on a loopback UDP port, TTL 1 s."""

    def __init__(self, d, records):
        self.hosts = os.path.join(d, "hosts")
        self.port = free_port()
        self.write(records)
        self.proc = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=%d" % self.port, "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--addn-hosts=" + self.hosts, "--local-ttl=1",
             "--user=" + os.environ.get("USER", "root")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def write(self, records):
        with open(self.hosts, "w") as f:
            f.write("".join("%s %s\n" % (ip, name) for ip, name in records))

    def change(self, records):
        self.write(records)
        self.proc.send_signal(signal.SIGHUP)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def start(gateway, dns, member_opts="", extra=""):
    return gateway('''
mg.workers(2)
mg.set { resolver = { "127.0.0.1:%d" }, resolve_every = "2s" }
mg.balancer("app", { members = { { "scgi://app.test:%d"%s } } })
mg.route("/", "balancer://app/")
%s''' % (dns.port, PORT, member_opts, extra))


PORT = None


@pytest.fixture
def port():
    global PORT
    PORT = free_port()
    return PORT


def answers(g, n=20):
    seen = {}
    for _ in range(n):
        r = request(g.port, path="/x")
        k = r.body.decode() if r.status == 200 else r.status
        seen[k] = seen.get(k, 0) + 1
    return seen


def test_traffic_follows_the_name_to_its_new_address(gateway, tmp_path, port):
    a, b = Backend("127.0.0.2", port), Backend("127.0.0.3", port)
    dns = Dns(str(tmp_path), [("127.0.0.2", "app.test")])
    try:
        g = start(gateway, dns)
        assert answers(g) == {"127.0.0.2": 20}
        dns.change([("127.0.0.3", "app.test")])
        deadline = time.time() + 6
        while time.time() < deadline and answers(g, 4) != {"127.0.0.3": 4}:
            time.sleep(0.2)
        assert answers(g) == {"127.0.0.3": 20}, "both workers follow the new address without a reload"
        log = open(g.log_path).read()
        assert "app.test now resolves to 127.0.0.3:%d (was 127.0.0.2:%d)" % (port, port) in log
    finally:
        dns.close(), a.close(), b.close()


def test_every_address_is_a_member_a_and_aaaa(gateway, tmp_path, port):
    a, b = Backend("127.0.0.2", port), Backend("::1", port)
    dns = Dns(str(tmp_path), [("127.0.0.2", "app.test"), ("::1", "app.test")])
    try:
        g = start(gateway, dns)
        seen = answers(g, 40)
        assert set(seen) == {"127.0.0.2", "::1"} and min(seen.values()) >= 10, seen
    finally:
        dns.close(), a.close(), b.close()


def test_a_failed_lookup_keeps_the_last_good_set(gateway, tmp_path, port):
    a = Backend("127.0.0.2", port)
    dns = Dns(str(tmp_path), [("127.0.0.2", "app.test")])
    try:
        g = start(gateway, dns)
        assert answers(g, 5) == {"127.0.0.2": 5}
        dns.close()  # the resolver stops answering
        time.sleep(4.5)
        assert answers(g) == {"127.0.0.2": 20}
        log = open(g.log_path).read()
        assert "looking up app.test again failed" in log and "keeping 127.0.0.2:%d" % port in log
    finally:
        a.close()


def test_unresolvable_name_at_load_is_a_load_error(tmp_path, port):
    dns = Dns(str(tmp_path), [("127.0.0.2", "other.test")])
    try:
        cfg = tmp_path / "init.lua"
        cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:%d")\nmg.set { resolver = { "127.0.0.1:%d" } }\n'
                       'mg.balancer("app", { members = { "scgi://app.test:%d" } })\nmg.route("/", "balancer://app/")\n'
                       % (free_port(), dns.port, port))
        r = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert "init.lua:4" in r.stderr and "cannot resolve backend host app.test" in r.stderr, r.stderr
    finally:
        dns.close()


def test_resolve_true_starts_empty_with_503_until_it_resolves(gateway, tmp_path, port):
    a = Backend("127.0.0.2", port)
    dns = Dns(str(tmp_path), [("127.0.0.9", "other.test")])
    try:
        g = start(gateway, dns, member_opts=", resolve = true")
        assert answers(g, 4) == {503: 4}
        dns.change([("127.0.0.2", "app.test")])
        deadline = time.time() + 8
        while time.time() < deadline and answers(g, 2) != {"127.0.0.2": 2}:
            time.sleep(0.2)
        assert answers(g) == {"127.0.0.2": 20}
    finally:
        dns.close(), a.close()
