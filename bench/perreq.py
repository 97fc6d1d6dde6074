#!/usr/bin/env python3
"""Deterministic per-request costs of one worker: system calls (strace -c -f) or user-space
instructions (valgrind --tool=callgrind), over a bounded number of keep-alive requests.

    perreq.py BUILD_DIR [--mode strace|callgrind] [--path /bal/hello] [--requests 2000]
              [--warmup 300] [--no-spec20] [--top 25]

Starts two scgi-echo backends and moongate with `mg.workers(1)` and bench.py's routes ("/",
"/bal/", "/hk/" with the hooked scenario's two hooks, and "/b20/" and "/nobuf/" unless
--no-spec20, for builds before SPEC 20), warms the worker up, then
sends REQUESTS requests one after the other on one keep-alive connection and divides:
  strace:    strace -c -f attached to the master and the worker for the measured requests only;
             prints syscalls per request by name.
  callgrind: the whole server under callgrind (it follows the fork), run twice: warm-up only,
             and warm-up + REQUESTS; the difference of the worker's counts, divided, leaves
             start-up and shutdown out; prints instructions per request and the functions with
             the most (exclusive) instructions per request.
Unlike wrk's numbers these do not depend on the machine's noise: two runs agree to a few
instructions per request. One connection at a time, so `epoll_wait` counts are those of an
unloaded server (about one per event), higher than under wrk's 50 connections.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import free_port, wait_port  # noqa: E402
import bench  # noqa: E402


def request_loop(port, path, n):
    """n keep-alive GETs on one connection, each read whole (Content-Length) before the next."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\nUser-Agent: perreq\r\nAccept: */*\r\n\r\n" % path).encode()
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:end + 2])
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) >= total:
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError("unexpected answer: %r" % buf[:200])
                    buf = buf[total:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed by the server")
            buf += chunk
    s.close()


def start(args, d, port, wrapper=()):
    init = os.path.join(d, "init.lua")
    with open(init, "w") as f:
        f.write(config(args, port))
    return subprocess.Popen(list(wrapper) + [os.path.join(args.build, "moongate"), "-c", init], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=os.setsid)


# bench.py's "moongate+hooks": the same two hooks on their own prefix, for what they cost.
HOOKED = ('mg.route("/hk/", "scgi://127.0.0.1:%d/", { hooks = { access = function(req) if req.headers["X-Deny"] then '
          'req:exit(403) end end, header_filter = function(req, res) res.headers["X-Gateway"] = "moongate" end } })\n')


def config(args, port):
    b20 = "" if args.no_spec20 else bench.SPEC20_BALANCER % (bench.B1, bench.B2) + bench.NOBUF % bench.B1
    return '''local mg = require "moongate"
mg.listen("127.0.0.1:%d")
mg.workers(1)
mg.set { max_connections = 30000, keepalive_requests = 1000000 }
mg.balancer("two", { members = { "scgi://127.0.0.1:%d", "scgi://127.0.0.1:%d" } })
mg.route("/bal/", "balancer://two/")
%s%smg.route("/", "scgi://127.0.0.1:%d/")
''' % (port, bench.B1, bench.B2, b20, HOOKED % bench.B1, bench.B1)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def stop(proc):
    try:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        proc.wait()


def run_strace(args, d):
    port = free_port()
    proc = start(args, d, port)
    try:
        wait_port(port)
        request_loop(port, args.path, args.warmup)  # the worker is forked once it answers
        argv = ["strace", "-c", "-f", "-o", os.path.join(d, "strace.out")]
        for pid in [proc.pid] + children(proc.pid):
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached
        request_loop(port, args.path, args.requests)
        time.sleep(0.2)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    finally:
        stop(proc)
    rows = []
    with open(os.path.join(d, "strace.out")) as f:
        for line in f:
            fl = line.split()
            if len(fl) >= 5 and re.match(r"^[\d.]+$", fl[0]):
                errs = int(fl[4]) if len(fl) == 6 else 0
                rows.append((fl[-1], int(fl[3]), errs))
    n = args.requests
    for name, calls, errs in sorted(rows, key=lambda r: -r[1]):
        print("%-16s %7.3f%s" % (name, calls / n, ("  (%.3f failing)" % (errs / n)) if errs else ""))


def callgrind_once(args, d, n):
    """The worker's exclusive instructions by function over its whole life, after warm-up + n."""
    port = free_port()
    sub = os.path.join(d, "cg%d" % n)
    os.makedirs(sub)
    proc = start(args, sub, port, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.join(sub, "cg.%p")])
    try:
        wait_port(port, 120)
        request_loop(port, args.path, args.warmup + n)
        worker = children(proc.pid)[0]  # forked by now: it answered
    finally:
        stop(proc)
    dump = os.path.join(sub, "cg.%d" % worker)
    if args.keep:
        shutil.copy(dump, "%s.%d" % (args.keep, n))
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", dump], capture_output=True, text=True).stdout
    total, fns = None, {}
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        ir, name = int(m.group(1).replace(",", "")), m.group(2).strip()
        if "PROGRAM TOTALS" in name:
            total = ir
        elif total is not None:
            fns[name] = fns.get(name, 0) + ir
    return total, fns


def run_callgrind(args, d):
    # Start-up and shutdown are the same in both runs: the difference is REQUESTS requests.
    # callgrind_control cannot reach a worker that sleeps in epoll_wait here, hence two runs.
    t0, f0 = callgrind_once(args, d, 0)
    t1, f1 = callgrind_once(args, d, args.requests)
    n = args.requests
    print("instructions per request: %.0f" % ((t1 - t0) / n))
    diff = sorted(((f1.get(k, 0) - f0.get(k, 0), k) for k in set(f1) | set(f0)), reverse=True)
    for ir, name in diff[:args.top]:
        print("%9.1f  %s" % (ir / n, re.sub(r" \[.*\]$", "", name)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--mode", choices=("strace", "callgrind"), default="strace")
    ap.add_argument("--path", default="/hello")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--no-spec20", action="store_true", help="leave out /b20/ (builds before SPEC 20)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep", help="copy the worker's callgrind dumps to KEEP.0 and KEEP.REQUESTS")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    echo = os.path.join(args.build, "scgi-echo")
    backends = [subprocess.Popen([echo, "127.0.0.1:%d" % p]) for p in (bench.B1, bench.B2)]
    d = tempfile.mkdtemp(prefix="moongate-perreq-")
    try:
        for p in (bench.B1, bench.B2):
            wait_port(p)
        (run_strace if args.mode == "strace" else run_callgrind)(args, d)
    finally:
        for b in backends:
            b.terminate()
            b.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
