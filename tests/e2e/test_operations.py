"""Operating it (the parts without TLS): log reopening for logrotate, and listener options that
are refused rather than ignored; reload and stop when workers misbehave."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from conftest import MOONGATE, raw, request


def wait_for(fn, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_usr1_and_s_reopen_reopen_every_log_in_master_and_workers(gateway, echo_backend):
    g = gateway("""
mg.workers(2)
mg.set { error_log = "app-error.log", access_log = "app-access.log", pid = "moongate.pid" }
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""", echo_backend)
    d = g.dir
    access, error = os.path.join(d, "app-access.log"), os.path.join(d, "app-error.log")
    for _ in range(4):
        request(g.port, path="/before")
    assert wait_for(lambda: read(access).count("/before") == 4)
    # What logrotate does: move the files away, then ask for new ones.
    os.rename(access, access + ".1")
    os.rename(error, error + ".1")
    g.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read(error)), read(error + ".1")
    time.sleep(0.3)  # the workers get USR1 from the master
    for _ in range(6):
        request(g.port, path="/after")  # both workers serve some of them
    assert wait_for(lambda: read(access).count("/after") == 6), read(access)
    assert "/after" not in read(access + ".1")
    # The same through the command line and the pid file.
    os.rename(access, access + ".2")
    p = subprocess.run([MOONGATE, "-s", "reopen", "-c", g.config], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert wait_for(lambda: os.path.exists(access))  # the master made the new file
    time.sleep(0.3)
    for _ in range(4):
        request(g.port, path="/third")
    assert wait_for(lambda: read(access).count("/third") >= 4), read(access)


def test_json_access_log(gateway, echo_backend):
    g = gateway("""
mg.set { access_log = "access.json", access_log_format = "json" }
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("=/lua", function(req) return 201, "made" end)
""", echo_backend)
    r = request(g.port, path="/vars?x=1", headers=[("User-Agent", 'quote" back\\slash caf\xe9'), ("Referer", "http://r/")])
    request(g.port, path="/lua")
    path = os.path.join(g.dir, "access.json")
    assert wait_for(lambda: read(path).count("\n") >= 2)
    lines = [json.loads(l) for l in read(path).splitlines()]  # every line is valid JSON
    a, b = lines[0], lines[1]
    assert a["method"] == "GET" and a["uri"] == "/vars?x=1" and a["protocol"] == "HTTP/1.1"
    assert a["status"] == 200 and a["bytes_sent"] == len(r.body) and a["referer"] == "http://r/"
    assert a["user_agent"] == 'quote" back\\slash caf\xe9'  # the byte 0xE9 as \u00e9
    assert a["route"] == "/" and a["upstream"] == "127.0.0.1:%d" % echo_backend
    assert a["upstream_status"] == 200 and 0 <= a["upstream_time_us"] <= a["request_time_us"]
    assert a["request_id"] and a["request_id"] != b["request_id"] and a["remote_addr"] == "127.0.0.1"
    assert b["route"] == "/lua" and b["status"] == 201 and b["upstream"] is None and b["upstream_status"] is None


def uid_gid(pid):
    with open("/proc/%d/status" % pid) as f:
        status = f.read()
    uid = int(status.split("Uid:")[1].split()[0])
    gid = int(status.split("Gid:")[1].split()[0])
    return uid, gid


def test_workers_run_as_the_configured_user_and_logs_stay_writable(gateway, echo_backend, tmp_path):
    assert os.geteuid() == 0, "this test runs as root, as the master must to bind and drop"
    import grp
    import pwd
    import tempfile
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    logs = tempfile.mkdtemp(prefix="moongate-logs-")  # traversable by nobody, as /var/log/moongate is
    os.chmod(logs, 0o755)
    g = gateway("""
mg.workers(2)
mg.set { user = "nobody", group = "nogroup", access_log = "%s/access.log" }
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
""" % logs, echo_backend)
    workers = g.workers()
    assert len(workers) == 2 and all(uid_gid(w) == (nobody, nogroup) for w in workers)
    assert uid_gid(g.proc.pid)[0] == 0  # the master keeps root (it binds and reloads)
    access = os.path.join(logs, "access.log")
    assert os.stat(access).st_uid == nobody
    request(g.port, path="/one")
    os.rename(access, access + ".1")
    g.signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(access))
    time.sleep(0.3)
    for _ in range(4):
        request(g.port, path="/two")
    assert wait_for(lambda: read(access).count("/two") == 4), read(access)
    # After a reload the new workers drop too.
    g.signal(signal.SIGHUP)
    assert wait_for(lambda: set(g.workers()) and not set(g.workers()) & set(workers) and len(g.workers()) == 2, 10)
    assert all(uid_gid(w) == (nobody, nogroup) for w in g.workers())
    request(g.port, path="/three")
    assert wait_for(lambda: "/three" in read(access))


def test_unknown_user_is_a_load_error(tmp_path):
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.set { user = "no-such-user-x" }\n')
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 1 and 'init.lua:3: user: no user named "no-such-user-x"' in p.stderr, p.stderr


def test_reload_into_workers_that_die_at_start_keeps_the_old_ones_serving(gateway):
    """A reload starts the new workers first and retires the old ones only once every new one
    reported ready; new workers that die before that leave the old ones serving, with the
    reason in the log. Requests in a loop meanwhile: none fails."""
    g = gateway("""
mg.workers(2)
mg.route("/", function(req) return 200, "old" end)
""")
    old = set(g.workers())
    assert len(old) == 2
    results, stop = [], threading.Event()

    def loop():
        for _ in range(2000):  # bounded in count; each request in 3 s
            if stop.is_set():
                return
            results.append(raw(g.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=3))

    t = threading.Thread(target=loop)
    t.start()
    try:
        assert wait_for(lambda: len(results) >= 20)
        with open(g.config) as f:
            text = f.read()
        with open(g.config, "w") as f:
            f.write(text.replace('"old"', '"new"') + 'mg.on("init_worker", function() os.exit(3) end)\n')
        g.signal(signal.SIGHUP)
        g.wait_log("reload failed, the running configuration stays in force: new worker")
        seen = len(results)
        assert wait_for(lambda: len(results) >= seen + 50)
    finally:
        stop.set()
        t.join(10)
    bad = [r for r in results if not (r.startswith(b"HTTP/1.1 200") and r.endswith(b"old"))]
    assert not bad and len(results) >= 70, (len(bad), bad[:3])
    assert old <= set(g.workers())  # the old generation was never told to go
    assert wait_for(lambda: set(g.workers()) == old)  # and the failed one is gone
    assert "exited with status 3 before it was ready" in g.log()
    # Fixed, the next reload goes through.
    with open(g.config, "w") as f:
        f.write(text.replace('"old"', '"new"'))
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded ")
    assert request(g.port).body == b"new"
    assert wait_for(lambda: not set(g.workers()) & old)


SPIN = """
mg.set { shutdown_timeout = 1, pid = "moongate.pid" }
mg.route("/spin", function(req)
  io.stderr:write("SPINNING\\n")
  local t = os.clock() + 30
  while os.clock() < t do end  -- no yield: the worker runs nothing else, signals included
  return 200, "spun"
end)
mg.route("/", function(req) return 200, "ok" end)
"""


def start_spinning(g):
    """Sends a request to /spin and returns once the worker spins (and the socket)."""
    s = socket.create_connection(("127.0.0.1", g.port))
    s.sendall(b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
    g.wait_log("SPINNING")
    return s


def kill_leftovers(pids):
    """A worker the tree under test failed to reclaim must not spin on after the test."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_s_stop_completes_with_a_worker_spinning_in_lua(gateway):
    """TERM (here through `moongate -s stop`) gives workers shutdown_timeout; one that is still
    alive a second after that cannot run its loop, and the master kills it, says so, and exits."""
    g = gateway(SPIN)
    workers = g.workers()
    s = start_spinning(g)
    try:
        t0 = time.time()
        p = subprocess.run([MOONGATE, "-s", "stop", "-c", g.config], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        g.proc.wait(6)  # shutdown_timeout 1 s + 1 s grace, with room for a loaded machine
        assert g.proc.returncode == 0 and time.time() - t0 < 5
        log = g.log()
        assert re.search(r"worker %d \(slot 0\) still running 2\.\d s after TERM \(shutdown_timeout 1\.0 s\); "
                         r"killing it \(SIGKILL\)" % workers[0], log), log
        assert not os.path.exists("/proc/%d" % workers[0])
    finally:
        s.close()
        kill_leftovers(workers)


def test_reload_kills_an_old_worker_still_spinning_after_shutdown_timeout(gateway):
    """A reload's old workers drain (QUIT); one still alive a second after shutdown_timeout
    is killed with a log line, while the new generation serves."""
    g = gateway(SPIN)
    old = g.workers()
    s = start_spinning(g)
    try:
        g.signal(signal.SIGHUP)
        g.wait_log("reloaded ")
        assert request(g.port).body == b"ok"  # the new worker accepts on the same socket
        assert wait_for(lambda: not os.path.exists("/proc/%d" % old[0]), 5)
        g.wait_log("worker %d (slot 0) still running " % old[0])
        assert re.search(r"worker %d \(slot 0\) still running 2\.\d s after a reload told it to QUIT \(shutdown_timeout "
                         r"1\.0 s\); killing it \(SIGKILL\)" % old[0], g.log()), g.log()
        assert g.proc.poll() is None and len(g.workers()) == 1
    finally:
        s.close()
        kill_leftovers(old)
