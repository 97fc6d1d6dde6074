#!/usr/bin/env python3
"""TLS side by side: moongate and nginx, one worker each, the same certificate (RSA 2048,
self-signed) and the same C SCGI backend; wrk over HTTPS.

    tls.py BUILD_DIR [--rounds N] [--seconds S]

Two cases, in alternating rounds: 12-byte responses on keep-alive connections (the cost of
TLS records on the request path) and `Connection: close` (a new TLS connection and a full
handshake per request). Prints medians of req/s and of CPU microseconds per request (user +
system time of each server's processes over the run). Loopback only; every run is bounded by
wrk's duration.
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import Server, cpu_seconds, wrk  # noqa: E402
from common import free_port, tls_bench_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    d, cert, key, backend_port, backend = tls_bench_dir(build, "moongate-tls-bench-")
    mg_port, ngx_port = free_port(), free_port()
    with open(os.path.join(d, "init.lua"), "w") as f:
        f.write('''local mg = require "moongate"
mg.listen("127.0.0.1:%d", { tls = { cert = "%s", key = "%s" } })
mg.set { keepalive_requests = 1000000, max_connections = 30000 }
mg.route("/", "scgi://127.0.0.1:%d/")
''' % (mg_port, cert, key, backend_port))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write('''worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log error;
events { worker_connections 30000; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        location / { scgi_pass 127.0.0.1:%d; include /etc/nginx/scgi_params; }
    }
}
''' % (d, d, ngx_port, cert, key, backend_port))
    servers = {
        "moongate": Server("moongate", [os.path.join(build, "moongate"), "-c", os.path.join(d, "init.lua")], mg_port, d),
        "nginx": Server("nginx", ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                                  os.path.join(d, "error.log")], ngx_port, d),
    }
    cases = [("TLS keep-alive, 12-byte responses", [], 50), ("new TLS connection per request", ["Connection: close"], 20)]
    results = {}
    try:
        for rnd in range(args.rounds):
            for case, headers, conns in cases:
                order = ["moongate", "nginx"] if rnd % 2 == 0 else ["nginx", "moongate"]
                for name in order:
                    s = servers[name]
                    pids = s.pids()
                    cpu0 = cpu_seconds(pids)
                    rps, lat, total = wrk(s.port, "/hello", args.seconds, conns, https=True, headers=headers)
                    us = (cpu_seconds(pids) - cpu0) * 1e6 / max(total, 1)
                    results.setdefault((case, name), []).append((rps, us))
                    print("round %d  %-36s %-9s %9.0f req/s  %7.1f us CPU/req" % (rnd + 1, case, name, rps, us), flush=True)
    finally:
        for s in servers.values():
            s.stop()
        backend.terminate()
    print()
    print("| case | moongate req/s | nginx req/s | rate ratio | moongate CPU us/req | nginx CPU us/req | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for case, _, _ in cases:
        m, n = results[(case, "moongate")], results[(case, "nginx")]
        mr, nr = statistics.median(v[0] for v in m), statistics.median(v[0] for v in n)
        mc, nc = statistics.median(v[1] for v in m), statistics.median(v[1] for v in n)
        print("| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx |" % (case, mr, nr, mr / nr, mc, nc, mc / nc))


if __name__ == "__main__":
    main()
