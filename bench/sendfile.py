#!/usr/bin/env python3
"""X-Sendfile throughput, side by side: a 1 GiB file named by the same SCGI app, sent by
moongate (X-Sendfile, sendfile_roots) and by nginx (X-Accel-Redirect to an internal location),
in alternating rounds; one stream at a time, read by curl into /dev/null.

    sendfile.py BUILD_DIR [--rounds N] [--size-mib N]
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






def curl_speed(url, size):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url],
                         capture_output=True, text=True, timeout=300).stdout.split()
    code, got, speed = int(out[0]), int(out[1]), float(out[2])
    if code != 200 or got != size:
        raise SystemExit("bad transfer from %s: status %d, %d of %d bytes" % (url, code, got, size))
    return speed / (1024 * 1024)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moongate-sendfile-")
    os.chmod(tmp, 0o755)
    media = os.path.join(tmp, "media")
    os.makedirs(media)
    os.chmod(media, 0o755)
    big = os.path.join(media, "big.bin")
    block = os.urandom(1024 * 1024)
    with open(big, "wb") as f:
        for _ in range(args.size_mib):
            f.write(block)
    os.chmod(big, 0o644)
    size = os.path.getsize(big)
    subprocess.run(["cat", big], stdout=subprocess.DEVNULL)  # into the page cache for both
    app = free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "demo_app.py"), "127.0.0.1:%d" % app])]
    wait_port(app)
    mg_port, ngx_port = free_port(), free_port()
    cfg = os.path.join(tmp, "init.lua")
    with open(cfg, "w") as f:
        f.write('''local mg = require "moongate"
mg.listen("127.0.0.1:%d")
mg.route("/", "scgi://127.0.0.1:%d/", { sendfile = true, sendfile_roots = { "%s" } })
''' % (mg_port, app, media))
    procs.append(subprocess.Popen([os.path.join(os.path.abspath(args.build), "moongate"), "-c", cfg]))
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
    sendfile on;
    server {
        listen 127.0.0.1:%d;
        location /protected/ { internal; alias %s/; }
        location / { scgi_pass 127.0.0.1:%d; include /etc/nginx/scgi_params; }
    }
}
''' % (ngx, ngx, ngx_port, media, app))
    procs.append(subprocess.Popen(["nginx", "-p", ngx, "-c", os.path.join(ngx, "nginx.conf"), "-e",
                                   os.path.join(ngx, "error.log")], preexec_fn=os.setsid))
    wait_port(mg_port)
    wait_port(ngx_port)
    urls = {
        "moongate X-Sendfile": "http://127.0.0.1:%d/sendfile?path=%s" % (mg_port, big),
        "nginx X-Accel-Redirect": "http://127.0.0.1:%d/sendfile?header=X-Accel-Redirect&path=/protected/big.bin" % ngx_port,
    }
    results = {k: [] for k in urls}
    try:
        for rnd in range(args.rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(list(urls)))
            for name in order:
                mib_s = curl_speed(urls[name], size)
                results[name].append(mib_s)
                print("round %d  %-24s %8.0f MiB/s" % (rnd + 1, name, mib_s), flush=True)
    finally:
        for p in procs:
            try:
                os.killpg(os.getpgid(p.pid), signal.SIGTERM) if p is procs[-1] else p.terminate()
            except ProcessLookupError:
                pass
    m = statistics.median(results["moongate X-Sendfile"])
    n = statistics.median(results["nginx X-Accel-Redirect"])
    print("\n| %d MiB file | median MiB/s |\n|---|---|\n| moongate X-Sendfile | %.0f |\n| nginx X-Accel-Redirect | %.0f |"
          % (args.size_mib, m, n))
    print("moongate / nginx: %.2fx" % (m / n))
    os.remove(big)


if __name__ == "__main__":
    main()
