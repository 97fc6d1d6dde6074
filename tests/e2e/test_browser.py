"""A real browser over HTTP/2 (docs/reference.md "HTTP/2"): Debian's Chromium, headless under
selenium and Debian's chromedriver, loads a page whose stylesheet, script and image come from a
static route and whose script fetch()es a Lua route and the SCGI echo backend. On a TLS listener
every entry of the page's Resource Timing says `h2` and the access log says HTTP/2.0; with
`http2 = false` every entry says `http/1.1` (the fallback ALPN offers)."""
import os
import re
import signal
import struct
import time
import zlib

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
for _exe in (CHROMIUM, CHROMEDRIVER):
    if not os.access(_exe, os.X_OK):
        pytest.skip("%s is absent (make deps installs Debian's chromium and chromium-driver)" % _exe,
                    allow_module_level=True)

from selenium import webdriver  # noqa: E402  (python3-selenium, installed with chromium by make deps)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from test_tls import make_cert  # noqa: E402

WAIT = 30  # every selenium wait is bounded by this many seconds


def png(width, height):
    """A valid RGB PNG of width x height (a red and blue gradient), built from its chunks."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    rows = b"".join(b"\x00" + b"".join(bytes((x * 40 % 256, 0, y * 60 % 256)) for x in range(width))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


INDEX = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>loading</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/site.css">
</head><body>
<div id="box">styled</div>
<img id="pic" src="/static/pic.png" alt="pic">
<script src="/static/app.js"></script>
</body></html>
"""

CSS = "#box { color: rgb(1, 2, 3); width: 123px; }\n"

# Runs as a classic script at the end of the body, so the window's load event is still to come.
JS = """window.appRan = true;
Promise.all([
  fetch('/lua?from=js').then(function (r) { return r.text(); }),
  fetch('/vars/app?q=1').then(function (r) { return r.text(); }),
  new Promise(function (ok) { window.addEventListener('load', ok); })
]).then(function (got) {
  window.luaBody = got[0];
  window.echoBody = got[1];
  document.title = 'done';
}, function (e) { document.title = 'failed: ' + e; });
"""

ROUTES = """
mg.route("/static/", { root = "%s" })
mg.route("=/lua", function(req) return 200, "lua " .. ngx.var.server_protocol .. " " .. req.uri .. "\\n" end)
mg.route("/vars/", "scgi://127.0.0.1:{BACKEND}/")
"""

PNG = png(7, 5)
# Each static file's decoded size, as Resource Timing reports it: the whole body came through.
SIZES = {"/static/index.html": len(INDEX), "/static/site.css": len(CSS), "/static/app.js": len(JS),
         "/static/pic.png": len(PNG)}
PATHS = ["/static/index.html", "/static/site.css", "/static/app.js", "/static/pic.png", "/lua?from=js", "/vars/app?q=1"]


@pytest.fixture
def site(tmp_path):
    d = tmp_path / "site"
    d.mkdir()
    (d / "index.html").write_text(INDEX)
    (d / "site.css").write_text(CSS)
    (d / "app.js").write_text(JS)
    (d / "pic.png").write_bytes(PNG)
    return str(d)


def tls_gateway(gateway, tmp_path, site, backend, http2):
    """The page's routes on one TLS listener, offering h2 by ALPN unless http2 is false."""
    cert, key = make_cert(str(tmp_path), "localhost")
    opts = 'tls = { cert = "%s", key = "%s" }' % (cert, key)
    if not http2:
        opts += ", http2 = false"
    return gateway('mg.listen("127.0.0.1:{PORT}", { %s })\n' % opts + ROUTES % site, backend)


def descendants(pid):
    """Every live process under pid (chromedriver's chromium and its zygotes, renderers, ...)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def mentioning(text):
    """Every live process whose command line names text (chromium's crashpad handlers are
    reparented to init, so only their --database under the test's HOME ties them to the test)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:300]
    except OSError:
        return "?"


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium with a fresh profile; quit at teardown, and none of its processes may
    outlive the test (those left are killed, then reported)."""
    mine = tmp_path / "chromium"  # its profile, HOME (crash database, caches) and chromedriver's log
    home = mine / "home"
    home.mkdir(parents=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--no-proxy-server", "--user-data-dir=%s" % (mine / "profile")):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    service = Service(executable_path=CHROMEDRIVER, log_path=str(mine / "chromedriver.log"), env=env)
    driver = webdriver.Chrome(service=service, options=opts)
    driver_pid = service.process.pid

    def ours():
        return set(descendants(driver_pid)) | set(mentioning(str(mine)))
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        driver.implicitly_wait(0)
        yield driver
    finally:
        procs = ours()
        driver.quit()
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p) for p in procs | ours()):
            time.sleep(0.05)
        left = {p: cmdline(p) for p in procs | ours() if alive(p)}
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, "chromium processes outlived driver.quit(): %s" % left


def browser_log(driver):
    try:
        return driver.get_log("browser")
    except Exception as e:  # the log is only a diagnostic
        return "(no browser log: %s)" % e


def load_page(driver, g):
    """Loads the page, waits for its script's fetches and the load event; returns what the page saw."""
    try:
        driver.get("https://127.0.0.1:%d/static/index.html" % g.port)
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: d.title != "loading")
        assert driver.title == "done", driver.title
        # Resource Timing entries are added as each response ends; all five are in before long.
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(
            lambda d: d.execute_script("return performance.getEntriesByType('resource').length") >= 5)
    except Exception as e:
        raise AssertionError("the page did not finish: %r; browser log: %s; error log:\n%s"
                             % (e, browser_log(driver), g.log()))
    return driver.execute_script("""
        var cs = getComputedStyle(document.getElementById('box'));
        var img = document.getElementById('pic');
        function entry(e) { return { name: new URL(e.name).pathname + new URL(e.name).search,
                                     protocol: e.nextHopProtocol, status: e.responseStatus || 0,
                                     size: e.decodedBodySize }; }
        return {
            navigation: performance.getEntriesByType('navigation').map(entry),
            resources: performance.getEntriesByType('resource').map(entry),
            color: cs.color, width: cs.width,
            img: [img.complete, img.naturalWidth, img.naturalHeight],
            appRan: window.appRan === true, lua: window.luaBody, echo: window.echoBody,
        };""")


def assert_page(page, driver, protocol, server_protocol):
    log = browser_log(driver)
    assert [e["name"] for e in page["navigation"]] == ["/static/index.html"], page
    assert sorted(e["name"] for e in page["resources"]) == sorted(PATHS[1:]), page
    # every entry, the document and its five subresources, came over the protocol ALPN chose
    assert [e["protocol"] for e in page["navigation"] + page["resources"]] == [protocol] * 6, page
    assert all(e["status"] in (0, 200) for e in page["navigation"] + page["resources"]), page
    assert {e["name"]: e["size"] for e in page["navigation"] + page["resources"] if e["name"] in SIZES} == SIZES, page
    assert page["color"] == "rgb(1, 2, 3)" and page["width"] == "123px", page  # the CSS applied
    assert page["img"] == [True, 7, 5], page  # the PNG decoded at its size
    assert page["appRan"], page  # the JS ran
    assert page["lua"] == "lua %s /lua\n" % server_protocol, page
    echo = dict(line.partition("=")[::2] for line in page["echo"].split("BODY=")[0].splitlines())
    assert echo["SERVER_PROTOCOL"] == server_protocol and echo["REQUEST_URI"] == "/vars/app?q=1", page
    assert echo["HTTPS"] == "on" and echo["REQUEST_SCHEME"] == "https", page
    assert not [m for m in log if isinstance(m, dict) and m.get("level") == "SEVERE"], log


def assert_access_log(g, server_protocol):
    """The page's six requests, and nothing else, each with the protocol and 200."""
    want = sorted('"GET %s %s" 200' % (p, server_protocol) for p in PATHS)
    deadline = time.time() + 5
    while True:
        text = g.access_log()
        got = sorted(m.group(1) for m in re.finditer(r'^\S+ - - \[[^]]*\] ("[^"]*" \d+)', text, re.M))
        if got == want or time.time() > deadline:
            break
        time.sleep(0.05)
    assert got == want, text


@pytest.mark.parametrize("http2, protocol, version", [(True, "h2", "HTTP/2.0"), (False, "http/1.1", "HTTP/1.1")],
                         ids=["h2", "http2-false-falls-back-to-http1.1"])
def test_chromium_loads_page_and_assets(gateway, tmp_path, site, echo_backend, browser, http2, protocol, version):
    g = tls_gateway(gateway, tmp_path, site, echo_backend, http2=http2)
    page = load_page(browser, g)
    assert_page(page, browser, protocol, version)
    assert_access_log(g, version)
    assert not re.search(r"\[(warn|error|crit|alert|emerg)\]", g.log()), g.log()
