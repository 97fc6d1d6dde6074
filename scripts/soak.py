#!/usr/bin/env python3
"""`make soak`: mixed traffic against moongate for a set time (default 10 minutes), with a
reload every 30 s, sampling the workers' resident memory and open descriptors every second.

    soak.py BUILD_DIR [--seconds N] [--clients N]

Traffic: small responses, 1 MiB responses, uploads (Content-Length and chunked), internal
redirects, X-Sendfile, static files, Lua handlers, and Lua that waits (a sleep and a
subrequest, a shared-dictionary counter that must only grow across workers and reloads,
req:read_body/set_body, a body_filter). Every response is checked (status and body
length or content); the run fails on any unexpected status, error, or when memory or
descriptors at the end exceed the start by more than a small margin. Loopback only; every
loop is bounded by the duration.
"""
import argparse
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from common import free_port, wait_port  # noqa: E402






def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def sample(master):
    rss = fds = 0
    for pid in children(master):
        try:
            with open("/proc/%d/status" % pid) as f:
                rss += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
            fds += len(os.listdir("/proc/%d/fd" % pid))
        except (OSError, AttributeError):
            pass
    return rss, fds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="moongate-soak-")
    media = os.path.join(tmp, "media")
    os.makedirs(media)
    big = os.path.join(media, "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(4 * 1024 * 1024))
    with open(os.path.join(media, "small.txt"), "w") as f:
        f.write("small file\n")
    echo, demo, port = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([os.path.join(build, "scgi-echo"), "127.0.0.1:%d" % echo]),
             subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "demo_app.py"), "127.0.0.1:%d" % demo],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    wait_port(echo)
    wait_port(demo)
    cfg = os.path.join(tmp, "init.lua")
    version = [0]

    def write_config():
        version[0] += 1
        with open(cfg, "w") as f:
            f.write('''local mg = require "moongate"
mg.listen("127.0.0.1:%d")
mg.workers(2)
mg.set { client_max_body_size = "20m", error_log = "error.log" }
mg.route("/d/", "scgi://127.0.0.1:%d/", { sendfile = true, sendfile_roots = { "%s" } })
mg.route("/static/", { root = "%s" })
mg.route("=/lua", function(req) return 200, "v%d\\n" end, { hooks = { access = function(req) req.ctx.x = 1 end } })
-- Lua that waits and state shared by workers: the count must only grow,
-- across workers and across the reloads below (same dictionary name and size).
local counts = mg.shared("soak", "1m")
mg.route("/_inner/", "scgi://127.0.0.1:%d/", { internal = true })
mg.route("=/wait", function(req)
  mg.sleep(0.001)
  local r = req:subrequest("/_inner/hello")
  if not r or r.body ~= "hello world\\n" then return 500, "subrequest failed" end
  return 200, string.format("%%d", counts:incr("n", 1, 0))
end)
mg.route("/vars/up", "scgi://127.0.0.1:%d/", { hooks = { access = function(req)
  req:read_body()
  req:set_body("[" .. (req:body() or "in file") .. "]")
end } })
mg.route("/bytes/", "scgi://127.0.0.1:%d/", { hooks = { body_filter = function(req, res, chunk, eof)
  return chunk:upper()
end } })
mg.route("/", "scgi://127.0.0.1:%d/")
''' % (port, demo, media, media, version[0], echo, echo, echo, echo))

    write_config()
    mg = subprocess.Popen([os.path.join(build, "moongate"), "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    stop = time.time() + args.seconds
    stats = {"requests": 0, "unexpected": 0, "errors": 0}
    last_count = {}
    problems = []
    lock = threading.Lock()
    big_size = os.path.getsize(big)

    def check(cond, what):
        if not cond:
            with lock:
                stats["unexpected"] += 1
                if len(problems) < 20:
                    problems.append(what)

    def client(seed):
        rnd = random.Random(seed)
        conn = None
        while time.time() < stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                kind = rnd.choice(["small", "small", "small", "large", "upload", "chunked", "redirect", "sendfile",
                                   "static", "lua", "wait", "wait", "readbody", "filtered"])
                if kind == "small":
                    conn.request("GET", "/hello")
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body == b"hello world\n", (kind, r.status, len(body)))
                elif kind == "large":
                    conn.request("GET", "/bytes/1048576")
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and len(body) == 1048576, (kind, r.status, len(body)))
                elif kind == "upload":
                    data = os.urandom(rnd.randint(1, 2 * 1024 * 1024))
                    conn.request("POST", "/vars", body=data)
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body.endswith(data), (kind, r.status, len(body)))
                elif kind == "chunked":
                    parts = [os.urandom(rnd.randint(1, 100000)) for _ in range(rnd.randint(1, 5))]
                    conn.request("POST", "/vars", body=iter(parts), encode_chunked=True,
                                 headers={"Transfer-Encoding": "chunked"})
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body.endswith(b"".join(parts)), (kind, r.status, len(body)))
                elif kind == "redirect":
                    conn.request("GET", "/d/redirect?to=/lua")
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body.startswith(b"v"), (kind, r.status, body[:20]))
                elif kind == "sendfile":
                    conn.request("GET", "/d/sendfile?path=%s" % big)
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and len(body) == big_size, (kind, r.status, len(body)))
                elif kind == "static":
                    conn.request("GET", "/static/small.txt")
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body == b"small file\n", (kind, r.status, body[:20]))
                elif kind == "wait":
                    conn.request("GET", "/wait")
                    r = conn.getresponse(); body = r.read()
                    ok = r.status == 200 and body.isdigit()
                    check(ok, (kind, r.status, body[:40]))
                    if ok:
                        with lock:
                            # Each client's counts only grow: the dictionary is shared and kept over reloads.
                            check(int(body) > last_count.get(seed, 0), (kind, "went back", body, last_count.get(seed)))
                            last_count[seed] = int(body)
                elif kind == "readbody":
                    data = os.urandom(rnd.randint(1, 3000)).hex().encode()
                    conn.request("POST", "/vars/up", body=data)
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body.endswith(b"BODY=[" + data + b"]"), (kind, r.status, body[-40:]))
                elif kind == "filtered":
                    conn.request("GET", "/bytes/100000")  # the body_filter route: upper case
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body == b"X" * 100000, (kind, r.status, len(body)))
                else:
                    conn.request("GET", "/lua")
                    r = conn.getresponse(); body = r.read()
                    check(r.status == 200 and body.startswith(b"v"), (kind, r.status, body[:20]))
                with lock:
                    stats["requests"] += 1
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # every failure is counted and shown
                with lock:
                    stats["errors"] += 1
                    if len(problems) < 20:
                        problems.append(repr(e))
                if conn:
                    conn.close()
                conn = None

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    samples = []
    next_reload = time.time() + 30
    reloads = 0
    while time.time() < stop:
        time.sleep(1)
        samples.append(sample(mg.pid))
        if time.time() >= next_reload:
            write_config()
            mg.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += 30
    for t in threads:
        t.join()
    time.sleep(3)
    end = sample(mg.pid)
    mg.terminate()
    mg.wait(30)
    for p in procs:
        p.terminate()
    # The first samples include start-up; compare against the state after warm-up.
    base = samples[min(5, len(samples) - 1)] if samples else end
    peak_rss = max(s[0] for s in samples) if samples else 0
    print("soak: %d s, %d clients, %d reloads" % (args.seconds, args.clients, reloads))
    print("soak: requests %d, unexpected responses %d, errors %d" % (stats["requests"], stats["unexpected"], stats["errors"]))
    print("soak: workers' RSS %d KiB after warm-up, %d KiB peak, %d KiB at the end" % (base[0], peak_rss, end[0]))
    print("soak: workers' descriptors %d after warm-up, %d at the end" % (base[1], end[1]))
    for p in problems:
        print("  problem:", p)
    ok = stats["unexpected"] == 0 and stats["errors"] == 0 and end[1] <= base[1] + 4 and end[0] <= base[0] * 1.5 + 4096
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
