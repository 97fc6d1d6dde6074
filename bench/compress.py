#!/usr/bin/env python3
"""Response compression, side by side (SPEC 19): a 100 KB HTML page (generated table rows, not
repeated bytes) from a static root, served gzip-compressed by moongate (libdeflate level 1, one
buffer) and by nginx (gzip on; gzip_comp_level 1), one worker each, in alternating wrk rounds
with Accept-Encoding: gzip. Reports the median requests/s and the CPU time per request (user +
system of the server's processes, from /proc), then brotli and zstd on moongate: bytes and CPU
per request relative to gzip.

    compress.py BUILD_DIR [--rounds N] [--seconds N] [--connections N]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def page(n):
    rows, i = [], 0
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    while sum(map(len, rows)) < n:
        rows.append('<tr class="row-%d"><td><a href="/products/%d/%s">%s %s</a></td><td class="price">%d.%02d</td>'
                    '<td>%s</td></tr>\n' % (i % 5, (i * 7919) % 100000, words[i % 12], words[(i * 3) % 12].title(),
                                            words[(i * 5) % 12], (i * 37) % 900, (i * 13) % 100,
                                            " ".join(words[(i + k) % 12] for k in range(i % 6 + 1))))
        i += 1
    head = "<!doctype html>\n<html><head><title>Catalogue</title></head><body><table>\n"
    return (head + "".join(rows))[:n - len("</table></body></html>\n")] + "</table></body></html>\n"


def procs_of(pid):
    out = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def wrk(url, enc, seconds, conns, pids):
    c0 = cpu_ticks(pids)
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "-H", "Accept-Encoding: " + enc, url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    c1 = cpu_ticks(pids)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    if "Non-2xx" in out or "errors" in out.lower() and "Socket errors" in out:
        raise SystemExit("wrk saw errors:\n" + out)
    return rps, (c1 - c0) / TICK / max(n, 1) * 1e6  # requests/s, CPU µs per request


def size_of(url, enc):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Accept-Encoding: " + enc, "-w", "%{size_download}", url],
                         capture_output=True, text=True).stdout
    return int(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moongate-compress-")
    os.chmod(tmp, 0o755)
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    os.chmod(www, 0o755)
    with open(os.path.join(www, "page.html"), "w") as f:
        f.write(page(100 * 1000))
    os.chmod(os.path.join(www, "page.html"), 0o644)
    mg_port, ngx_port = free_port(), free_port()
    cfg = os.path.join(tmp, "init.lua")
    with open(cfg, "w") as f:
        f.write('''local mg = require "moongate"
mg.workers(1)
mg.listen("127.0.0.1:%d")
mg.set { compress = { types = { "text/html" }, levels = { gzip = 1, br = 4, zstd = 3 } } }
mg.route("/", { root = "%s" })
''' % (mg_port, www))
    mg = subprocess.Popen([os.path.join(os.path.abspath(args.build), "moongate"), "-c", cfg])
    ngx = os.path.join(tmp, "nginx")
    os.makedirs(ngx)
    for sub in ("client_body_temp", "scgi_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp"):
        os.makedirs(os.path.join(ngx, sub))
    with open(os.path.join(ngx, "nginx.conf"), "w") as f:
        f.write('''worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    gzip on;
    gzip_comp_level 1;
    gzip_types text/html;
    server {
        listen 127.0.0.1:%d;
        root %s;
    }
}
''' % (ngx, ngx, ngx_port, www))
    nginx = subprocess.Popen(["nginx", "-p", ngx, "-c", os.path.join(ngx, "nginx.conf")])
    try:
        wait_port(mg_port)
        wait_port(ngx_port)
        time.sleep(0.5)
        urls = {"moongate": "http://127.0.0.1:%d/page.html" % mg_port, "nginx": "http://127.0.0.1:%d/page.html" % ngx_port}
        pids = {"moongate": procs_of(mg.pid), "nginx": procs_of(nginx.pid)}
        for name in urls:  # warm up
            wrk(urls[name], "gzip", 1, args.connections, pids[name])
        res = {"moongate": [], "nginx": []}
        for r in range(args.rounds):
            for name in (("moongate", "nginx") if r % 2 == 0 else ("nginx", "moongate")):
                res[name].append(wrk(urls[name], "gzip", args.seconds, args.connections, pids[name]))
        med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in res.items()}
        print("100 KB HTML, gzip level 1, 1 worker, %d connections, %d rounds of %d s" % (args.connections, args.rounds, args.seconds))
        for n in ("moongate", "nginx"):
            print("  %-9s %9.0f req/s  %7.1f µs CPU/request  %d bytes" % (n, med[n][0], med[n][1], size_of(urls[n], "gzip")))
        print("  moongate/nginx: %.2fx requests/s, %.2fx CPU per request" % (med["moongate"][0] / med["nginx"][0],
                                                                            med["moongate"][1] / med["nginx"][1]))
        gz_bytes = size_of(urls["moongate"], "gzip")
        print("moongate by encoding (relative to its gzip):")
        base = None
        for enc in ("gzip", "br", "zstd"):
            runs = [wrk(urls["moongate"], enc, args.seconds, args.connections, pids["moongate"]) for _ in range(3)]
            rps, cpu = statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs)
            b = size_of(urls["moongate"], enc)
            if base is None:
                base = (cpu, gz_bytes)
            print("  %-5s %9.0f req/s  %7.1f µs CPU/request (%.2fx)  %d bytes (%.2fx)" % (enc, rps, cpu, cpu / base[0], b, b / base[1]))
    finally:
        for p in (mg, nginx):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
