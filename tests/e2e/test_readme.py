"""The README's tour, run as a new user would: `make run`'s script, then the tour's commands,
checking that each prints what the README says."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, MOONGATE, ROOT, request, wait_port


@pytest.fixture
def demo(tmp_path):
    """scripts/run-demo.sh on a copy of the repository's init.lua and demo app."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True)
    (work / "examples").mkdir()
    shutil.copy(os.path.join(ROOT, "init.lua"), work / "init.lua")
    shutil.copy(os.path.join(ROOT, "scripts", "run-demo.sh"), work / "scripts" / "run-demo.sh")
    shutil.copy(os.path.join(ROOT, "examples", "demo_app.py"), work / "examples" / "demo_app.py")
    log = open(tmp_path / "demo.log", "wb")
    p = subprocess.Popen(["sh", str(work / "scripts" / "run-demo.sh"), BUILD, "8080"], cwd=str(work), stdout=log,
                         stderr=log, preexec_fn=os.setsid)
    try:
        wait_port(8080, p, timeout=15)
        wait_port(4000)
        wait_port(4001)
        yield work, tmp_path / "demo.log"
    finally:
        os.killpg(os.getpgid(p.pid), signal.SIGTERM)
        p.wait(15)


def curl(*args):
    return subprocess.run(["curl", "-s"] + list(args), capture_output=True, text=True, timeout=10).stdout


def test_readme_tour(demo):
    work, log = demo
    time.sleep(0.3)
    out = curl("http://127.0.0.1:8080/app/hello?x=1").splitlines()
    assert out[0] in ("APP=a", "APP=b")
    assert out[1:8] == ["CONTENT_LENGTH=0", "SCGI=1", "REQUEST_METHOD=GET", "REQUEST_URI=/app/hello?x=1",
                        "QUERY_STRING=x=1", "SCRIPT_NAME=/app", "PATH_INFO=/hello"]
    seen = {out[0]} | {curl("http://127.0.0.1:8080/app/hello?x=1").splitlines()[0] for _ in range(4)}
    assert seen == {"APP=a", "APP=b"}
    head = curl("-i", "http://127.0.0.1:8080/health")
    assert head.startswith("HTTP/1.1 200 OK") and "X-Served-By: moongate" in head and head.endswith("ok\n")
    st = json.loads(curl("http://127.0.0.1:8080/status"))
    assert st["balancers"][0]["name"] == "demo" and st["balancers"][0]["members"][0]["url"] == "scgi://127.0.0.1:4000"
    assert "# TYPE moongate_member_requests_total counter" in curl("http://127.0.0.1:8080/status?format=prometheus")
    cfg = work / "init.lua"
    cfg.write_text(cfg.read_text().replace('return 200, "ok\\n"', 'return 200, "fine\\n"'))
    r = subprocess.run([MOONGATE, "-s", "reload", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 5
    while curl("http://127.0.0.1:8080/health") != "fine\n" and time.time() < deadline:
        time.sleep(0.1)
    assert curl("http://127.0.0.1:8080/health") == "fine\n"
    r = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.stdout == "moongate: configuration ok\n"
