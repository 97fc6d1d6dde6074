"""Operating it (issue 14, the parts without TLS): log reopening for logrotate, and listener
options that are refused rather than ignored."""
import os
import signal
import subprocess
import time

from conftest import MOONGATE, request


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
