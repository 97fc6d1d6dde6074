#!/usr/bin/env python3
"""HTTP/2 side by side (issue 24): moongate and nginx (`listen ... ssl http2`), one worker each,
the same certificate (RSA 2048) and the same C SCGI backend; h2load over TLS.

    http2.py BUILD_DIR [--rounds N] [--seconds S] [--idle N] [--only TEXT] [--baseline OTHER_BUILD_DIR]

Cases, in alternating rounds: 12-byte responses with `h2load -c 16 -m 32`, 1 MiB responses
with `-c 16 -m 4`, and 12-byte responses over h2c (moongate only has a target there: nginx
serves h2c only on a listener that speaks nothing else, so it gets its own port). Prints
medians of req/s and of CPU microseconds per request (user + system time of each server's
processes over the run). Loopback only; every run is bounded by h2load's duration.
"""
import argparse
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import Server, cpu_seconds  # noqa: E402
from common import free_port, rss_kib, tls_bench_dir  # noqa: E402


def h2load(url, seconds, conns, streams):
    p = subprocess.run(["h2load", "-c", str(conns), "-m", str(streams), "-D", str(seconds), url],
                       capture_output=True, text=True, timeout=seconds + 60)
    done = int(re.search(r"(\d+) succeeded", p.stdout).group(1))
    m = re.search(r"finished in ([\d.]+)(m?s)", p.stdout)
    t = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return done / t, done


def idle_connections(port, n, tls):
    """n HTTP/2 connections, each after its handshake, SETTINGS and one request, left idle."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "GET"), (":scheme", "https" if tls else "http"),
                             (":authority", "localhost"), (":path", "/hello")], end_stream=True)
        s.sendall(c.data_to_send())
        done = False
        deadline = time.time() + 10
        while not done and time.time() < deadline:
            for e in c.receive_data(s.recv(65536)):
                done = done or isinstance(e, h2.events.StreamEnded)
            s.sendall(c.data_to_send())
        held.append(s)
    return held


def idle_memory(start_servers, n):
    """KiB of RSS per idle HTTP/2 connection, over TLS and h2c: each server freshly started,
    warmed by one connection, then n connections held open (the worker's RSS and, for nginx,
    its master's: every process of the server)."""
    out = {}
    for kind in ("TLS", "h2c"):
        servers = start_servers()
        try:
            for name, (s, tls_port, h2c_port) in servers.items():
                port = tls_port if kind == "TLS" else h2c_port
                for sock in idle_connections(port, 1, kind == "TLS"):
                    sock.close()
                time.sleep(0.5)
                pids = s.pids()
                before = rss_kib(pids)
                held = idle_connections(port, n, kind == "TLS")
                time.sleep(1)
                out[(kind, name)] = (rss_kib(pids) - before) / n
                for sock in held:
                    sock.close()
                print("idle %-4s %-9s %6.1f KiB per connection" % (kind, name, out[(kind, name)]), flush=True)
        finally:
            for s, _, _ in servers.values():
                s.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure (0: none)")
    ap.add_argument("--baseline", help="an earlier build directory, run beside this one (moongate@base)")
    ap.add_argument("--only", help="run only the cases whose name contains this text")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    d, cert, key, backend_port, backend = tls_bench_dir(build, "moongate-http2-bench-")
    mg_port, mg_h2c, ngx_port, ngx_h2c = free_port(), free_port(), free_port(), free_port()
    base_port, base_h2c = free_port(), free_port()
    for name, tls_port, h2c_port in (("init.lua", mg_port, mg_h2c), ("init-base.lua", base_port, base_h2c)):
        with open(os.path.join(d, name), "w") as f:
            f.write('''local mg = require "moongate"
mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" } })
mg.listen("127.0.0.1:%d", { http2 = true })
mg.set { keepalive_requests = 100000000, max_connections = 30000, keepalive_timeout = "300s" }
mg.route("/", "scgi://127.0.0.1:%d/")
''' % (tls_port, cert, key, h2c_port, backend_port))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write('''worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log error;
events { worker_connections 30000; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:%d ssl http2;
        listen 127.0.0.1:%d http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { scgi_pass 127.0.0.1:%d; include /etc/nginx/scgi_params; }
    }
}
''' % (d, d, ngx_port, ngx_h2c, cert, key, backend_port))
    def start_servers(baseline=None):
        out = {
            "moongate": (Server("moongate", [os.path.join(build, "moongate"), "-c", os.path.join(d, "init.lua")],
                                mg_port, d), mg_port, mg_h2c),
            "nginx": (Server("nginx", ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                                       os.path.join(d, "error.log")], ngx_port, d), ngx_port, ngx_h2c),
        }
        if baseline:
            out["moongate@base"] = (Server("moongate@base", [os.path.join(os.path.abspath(baseline), "moongate"), "-c",
                                                             os.path.join(d, "init-base.lua")], base_port, d),
                                    base_port, base_h2c)
        return out

    idle = idle_memory(start_servers, args.idle) if args.idle else {}
    servers = start_servers(args.baseline)
    names = ["moongate", "nginx"] + (["moongate@base"] if args.baseline else [])
    cases = [("12-byte, TLS, -c 16 -m 32", "https", "/hello", 16, 32),
             ("1 MiB, TLS, -c 16 -m 4", "https", "/bytes/1048576", 16, 4),
             ("12-byte, h2c, -c 16 -m 32", "http", "/hello", 16, 32)]
    cases = [c for c in cases if not args.only or args.only in c[0]]
    results = {}
    try:
        for rnd in range(args.rounds):
            for case, scheme, path, conns, streams in cases:
                order = names if rnd % 2 == 0 else names[::-1]
                for name in order:
                    s, tls_port, h2c_port = servers[name]
                    port = tls_port if scheme == "https" else h2c_port
                    pids = s.pids()
                    cpu0 = cpu_seconds(pids)
                    rps, total = h2load("%s://127.0.0.1:%d%s" % (scheme, port, path), args.seconds, conns, streams)
                    us = (cpu_seconds(pids) - cpu0) * 1e6 / max(total, 1)
                    results.setdefault((case, name), []).append((rps, us))
                    print("round %d  %-28s %-9s %9.0f req/s  %8.1f us CPU/req" % (rnd + 1, case, name, rps, us), flush=True)
    finally:
        for s, _, _ in servers.values():
            s.stop()
        backend.terminate()
    print()
    # The paired ratios: the median of each round's ratio (the two servers of a round ran side by
    # side, so a round's ratio cancels most of the machine's drift between rounds).
    print("| case | moongate req/s | nginx req/s | rate ratio | moongate CPU us/req | nginx CPU us/req | CPU ratio "
          "| paired rate | paired CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, *_ in cases:
        m, n = results[(case, "moongate")], results[(case, "nginx")]
        mr, nr = statistics.median(v[0] for v in m), statistics.median(v[0] for v in n)
        mc, nc = statistics.median(v[1] for v in m), statistics.median(v[1] for v in n)
        pr = statistics.median(a[0] / b[0] for a, b in zip(m, n))
        pc = statistics.median(a[1] / b[1] for a, b in zip(m, n))
        print("| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %.2fx | %.2fx |"
              % (case, mr, nr, mr / nr, mc, nc, mc / nc, pr, pc))
    if args.baseline:
        print()
        print("| case | moongate req/s | moongate@base req/s | rate ratio | CPU us/req | @base CPU us/req | CPU ratio |")
        print("|---|---|---|---|---|---|---|")
        for case, *_ in cases:
            m, b = results[(case, "moongate")], results[(case, "moongate@base")]
            mr, br = statistics.median(v[0] for v in m), statistics.median(v[0] for v in b)
            mc, bc = statistics.median(v[1] for v in m), statistics.median(v[1] for v in b)
            print("| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx |" % (case, mr, br, mr / br, mc, bc, mc / bc))
    if not idle:
        return
    print()
    print("| idle HTTP/2 connection | moongate KiB | nginx KiB | ratio |")
    print("|---|---|---|---|")
    for kind in ("TLS", "h2c"):
        m, n = idle[(kind, "moongate")], idle[(kind, "nginx")]
        print("| %s, %d connections | %.1f | %.1f | %.2fx |" % (kind, args.idle, m, n, m / n if n else float("nan")))


if __name__ == "__main__":
    main()
