"""Live member control (SPEC 20, docs/balancer.md "Live control"), as an operator uses Apache's
balancer-manager: mg.manager_handler's page (driven in Debian's Chromium, no script on the page)
and JSON API drain, disable and re-enable a member, traffic leaves it in every worker at once
(counted at the backends), the state survives a reload, `moongate member ... --wait` returns
only when the member's in-flight requests are done; auth and the load-time refusal."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import MOONGATE, free_port, request
from test_browser import browser  # noqa: F401  (the headless Chromium fixture)


class CountingBackends:
    """SCGI backends that answer their own port and count requests; a path with "slow" waits
    `slow` seconds before answering."""

    def __init__(self, n=2, slow=1.5):
        self.slow = slow
        self.counts = {}
        self.ports = []
        self.stop = False
        self.socks = []
        for _ in range(n):
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", 0))
            ls.listen(64)
            ls.settimeout(0.2)
            port = ls.getsockname()[1]
            self.ports.append(port)
            self.counts[port] = 0
            self.socks.append(ls)
            threading.Thread(target=self.serve, args=(ls, port), daemon=True).start()

    def serve(self, ls, port):
        while not self.stop:
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.one, args=(c, port), daemon=True).start()

    def one(self, c, port):
        try:
            c.settimeout(10)
            d = c.recv(65536)
            self.counts[port] += 1
            if b"slow" in d:
                time.sleep(self.slow)
            c.sendall(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n%d" % port)
        except OSError:
            pass
        finally:
            c.close()

    def reset(self):
        for p in self.counts:
            self.counts[p] = 0

    def close(self):
        self.stop = True
        for s in self.socks:
            s.close()


@pytest.fixture
def backends():
    b = CountingBackends()
    yield b
    b.close()


def conf(b, manager="mg.manager_handler()", listen='mg.listen("127.0.0.1:{PORT}")'):
    return '''%s
mg.workers(2)
mg.balancer("up", { members = { "scgi://127.0.0.1:%d", "scgi://127.0.0.1:%d" } })
mg.route("/app/", "balancer://up/")
mg.route("/manager", %s)
''' % (listen, b.ports[0], b.ports[1], manager)


def member(b, i):
    return "scgi://127.0.0.1:%d" % b.ports[i]


def spread(g, b, n=40):
    """Sends n requests, each on a new connection (so both workers take some); returns the
    counts per backend port."""
    b.reset()
    for _ in range(n):
        assert request(g.port, path="/app/x").status == 200
    return dict(b.counts)


def post_json(g, obj, headers=()):
    return request(g.port, "POST", "/manager", headers=[("Content-Type", "application/json")] + list(headers),
                   body=json.dumps(obj).encode())


def state(g, i_url):
    r = request(g.port, path="/manager?format=json")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    for bl in json.loads(r.body)["balancers"]:
        for m in bl["members"]:
            if m["url"] == i_url:
                return m
    raise AssertionError("member %s not listed" % i_url)


def test_json_api_disables_a_member_in_every_worker_and_a_reload_keeps_it(gateway, backends):
    g = gateway(conf(backends))
    assert len(g.workers()) == 2
    before = spread(g, backends)
    assert before[backends.ports[0]] > 5 and before[backends.ports[1]] > 5
    r = post_json(g, {"balancer": "up", "member": member(backends, 0), "status": "+D"})
    assert r.status == 200, r.body
    assert json.loads(r.body)["member"]["status"] == "D"
    after = spread(g, backends)
    assert after[backends.ports[0]] == 0 and after[backends.ports[1]] == 40
    assert state(g, member(backends, 0))["changed"] is True
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded")
    time.sleep(0.5)
    again = spread(g, backends)
    assert again[backends.ports[0]] == 0, "the change did not survive the reload"
    # lbfactor, and back to what init.lua says.
    assert post_json(g, {"balancer": "up", "member": member(backends, 0), "status": "=", "lbfactor": 3}).status == 200
    m = state(g, member(backends, 0))
    assert m["status"] == "" and m["lbfactor"] == 3
    # lbfactor 3 against 1: three quarters, each worker's round robin counting on its own.
    c = spread(g, backends, 40)
    assert 26 <= c[backends.ports[0]] <= 34 and c[backends.ports[0]] + c[backends.ports[1]] == 40, c
    assert "manager: balancer up member %s status +D" % member(backends, 0) in g.log()


def test_max_conns_set_live_caps_the_member_in_every_worker_and_survives_a_reload(gateway, backends):
    g = gateway(conf(backends))
    r = post_json(g, {"balancer": "up", "member": member(backends, 0), "max_conns": 1})
    assert r.status == 200, r.body
    assert json.loads(r.body)["member"]["max_conns"] == 1
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded")
    time.sleep(0.5)
    assert state(g, member(backends, 0))["max_conns"] == 1
    # Eight slow requests at once over two workers: member 0 never holds more than one.
    backends.reset()
    peak = []

    def watch():
        for _ in range(30):
            peak.append(state(g, member(backends, 0))["inflight"])
            time.sleep(0.05)
    out = []
    ts = [threading.Thread(target=lambda: out.append(request(g.port, path="/app/slow").status)) for _ in range(8)]
    w = threading.Thread(target=watch)
    for t in ts + [w]:
        t.start()
    for t in ts + [w]:
        t.join(20)
    assert max(peak) <= 1 and backends.counts[backends.ports[0]] <= 2, (peak, backends.counts)
    assert post_json(g, {"balancer": "up", "member": member(backends, 0), "max_conns": 0}).status == 200
    assert state(g, member(backends, 0))["max_conns"] == 0


def test_bad_changes_are_refused_with_the_reason(gateway, backends):
    g = gateway(conf(backends))
    cases = [({"balancer": "up", "member": "scgi://127.0.0.1:1", "status": "+D"}, 404, b"has no member"),
             ({"balancer": "nope", "member": member(backends, 0), "status": "+D"}, 404, b"no balancer named nope"),
             ({"balancer": "up", "member": member(backends, 0), "status": "+X"}, 400, b"expected +F or -F"),
             ({"balancer": "up", "member": member(backends, 0), "lbfactor": 500}, 400, b"1 to 100"),
             ({"balancer": "up", "member": member(backends, 0)}, 400, b"nothing to change"),
             ({"balancer": "up", "member": member(backends, 0), "max_conns": -3}, 400, b"max_conns must be"),
             ({"member": member(backends, 0), "status": "+D"}, 400, b"balancer and member")]
    for body, status, why in cases:
        r = post_json(g, body)
        assert r.status == status and why in r.body, (body, r.status, r.body)
    r = request(g.port, "POST", "/manager", headers=[("Content-Type", "application/json")], body=b"[1,")
    assert r.status == 400
    r = request(g.port, "PUT", "/manager", body=b"x")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD, POST"
    # A form posted from another site is refused: the operator's browser would send it.
    r = request(g.port, "POST", "/manager", headers=[("Content-Type", "application/x-www-form-urlencoded"),
                                                     ("Origin", "http://evil.example")],
                body=b"balancer=up&member=x&status=%2BD")
    assert r.status == 403
    assert state(g, member(backends, 0))["status"] == ""


def test_auth_and_the_load_time_refusal(gateway, backends, tmp_path):
    g = gateway(conf(backends, manager='mg.manager_handler{ auth = function(req) return req.headers["X-Token"] == "s3cret" end }'))
    assert request(g.port, path="/manager").status == 403
    r = request(g.port, path="/manager", headers=[("X-Token", "s3cret")])
    assert r.status == 200 and b"balancer://up" in r.body
    assert post_json(g, {"balancer": "up", "member": member(backends, 0), "status": "+D"}).status == 403
    p = tmp_path / "open.lua"
    p.write_text('local mg = require "moongate"\n' + conf(backends, listen='mg.listen("0.0.0.0:8089")'))
    r = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "open.lua:6: mg.route: a manager_handler without auth on listener 0.0.0.0:8089" in r.stderr, r.stderr
    p.write_text('local mg = require "moongate"\n' + conf(backends, listen='mg.listen("unix:%s/s.sock")' % tmp_path))
    assert subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, timeout=10).returncode == 0


def test_member_drain_wait_returns_when_in_flight_requests_are_done(gateway, backends):
    g = gateway(conf(backends))
    slow = []

    def slow_request():
        t0 = time.time()
        r = request(g.port, path="/app/slow")
        slow.append((r.body, time.time() - t0, time.time()))

    threads = [threading.Thread(target=slow_request) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # the four are in flight, spread over both members
    assert state(g, member(backends, 0))["inflight"] >= 1
    t0 = time.time()
    r = subprocess.run([MOONGATE, "member", "drain", "up", member(backends, 0), "--wait", "-c", g.config],
                       capture_output=True, text=True, timeout=20)
    returned = time.time()
    assert r.returncode == 0 and "nothing in flight" in r.stdout, r.stderr
    for t in threads:
        t.join(10)
    done_on_0 = [end for body, _, end in slow if body == str(backends.ports[0]).encode()]
    assert done_on_0, slow
    # It waited for the member's slow requests (about 1.1 s more), and returned right after them.
    assert returned - t0 > 0.8
    assert max(done_on_0) - 0.3 < returned < max(done_on_0) + 0.5
    c = spread(g, backends, 20)
    assert c[backends.ports[0]] == 0
    r = subprocess.run([MOONGATE, "member", "enable", "up", member(backends, 0), "-c", g.config],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.strip() == "ok"
    assert 5 <= spread(g, backends, 20)[backends.ports[0]] <= 15
    r = subprocess.run([MOONGATE, "member", "disable", "up", "scgi://127.0.0.1:1", "-c", g.config],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "has no member scgi://127.0.0.1:1" in r.stderr
    ctl = os.path.join(g.dir, "moongate.pid.ctl")
    assert oct(os.stat(ctl).st_mode & 0o777) == "0o600"


def test_the_page_in_chromium_drains_a_member_without_any_script(gateway, backends, browser):
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(cond):  # the page is replaced under the wait: an element of the old one goes stale (or
        # "does not belong to the document", as chromedriver also says of it)
        WebDriverWait(browser, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException,
                                                       WebDriverException)).until(cond)
    g = gateway(conf(backends))
    # Scripts off: the page must work with plain forms.
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    base = "http://127.0.0.1:%d/manager" % g.port
    browser.get(base)
    assert browser.title == "moongate balancer manager"
    url0 = member(backends, 0)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"]' % url0)
    assert row.find_element(By.CLASS_NAME, "status").text == "ok"
    row.find_element(By.CSS_SELECTOR, 'button[value="+N"]').click()
    wait(lambda d: "msg=" in d.current_url)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"]' % url0)
    assert row.find_element(By.CLASS_NAME, "status").text == "draining (set here)"
    assert "changed " + url0 in browser.find_element(By.ID, "msg").text
    c = spread(g, backends, 30)
    assert c[backends.ports[0]] == 0 and c[backends.ports[1]] == 30
    # The lbfactor form of the other member.
    row1 = browser.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"]' % member(backends, 1))
    box = row1.find_element(By.NAME, "lbfactor")
    box.clear()
    box.send_keys("7")
    row1.find_element(By.XPATH, './/button[text()="Set lbfactor"]').click()
    wait(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"] .lbfactor' % member(backends, 1)).text == "7")
    # After a reload of moongate the page shows the same, and traffic still avoids the member.
    g.signal(signal.SIGHUP)
    g.wait_log("reloaded")
    time.sleep(0.5)
    browser.get(base)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"]' % url0)
    assert row.find_element(By.CLASS_NAME, "status").text == "draining (set here)"
    assert spread(g, backends, 20)[backends.ports[0]] == 0
    # Enable from the page: traffic comes back.
    row.find_element(By.CSS_SELECTOR, 'button[value="-D-S-N"]').click()
    wait(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-member="%s"] .status' % url0).text.startswith("ok"))
    assert spread(g, backends, 40)[backends.ports[0]] > 0
