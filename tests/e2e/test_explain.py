"""`moongate --explain` (docs/lua-api.md, "Testing a policy"): a request through routing and the
rewrite, access and balancer hooks without contacting a backend; the report as text and as
JSON."""
import json
import os
import socket
import subprocess

import pytest

from conftest import MOONGATE, SANITIZED, free_port

CONFIG = '''
local mg = require "moongate"
mg.listen("127.0.0.1:8088")
mg.balancer("cluster", { stickysession = "ROUTEID", members = {
  { "scgi://127.0.0.1:{B1}", route = "a" },
  { "scgi://127.0.0.1:{B2}", route = "b", lbfactor = 2 },
}})
mg.route("/app/", "balancer://cluster/", { env = { APP_ENV = "prod" } })
mg.route("/pi/", "scgi://127.0.0.1:{B1}/", { pathinfo = true })
mg.route("=/health", function(req) return 200, "ok\\n" end)
mg.route("/bal444/", "balancer://cluster/", { hooks = { balancer = function(req, members) req:exit(444) end } })
mg.on("rewrite", function(req)
  if req.uri:find("^/old/") then req.uri = "/app/" .. req.uri:sub(6) end
end)
mg.route("/admin/", "scgi://127.0.0.1:{B1}/", { hooks = { access = function(req)
  local ok, err = mg.sleep(0.5)
  local sock = mg.socket.tcp()
  local c, cerr = sock:connect("127.0.0.1", {B1})
  req.env.WAITED = tostring(ok) .. "," .. tostring(err) .. "," .. tostring(c) .. "," .. tostring(cerr)
  if req.headers["X-Token"] ~= "s3cret" then return req:exit(403, "forbidden\\n") end
  req.headers["X-User"] = "admin"
end } })
'''


@pytest.fixture
def setup(tmp_path):
    """The configuration above, with two backend ports that are listening sockets nobody
    accepts on: a connection attempt would show in their queues."""
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        s.setblocking(False)
        listeners.append(s)
    text = CONFIG.replace("{B1}", str(listeners[0].getsockname()[1])).replace("{B2}", str(listeners[1].getsockname()[1]))
    path = tmp_path / "init.lua"
    path.write_text(text)

    def explain(request, *headers, as_json=False):
        argv = [MOONGATE, "-c", str(path), "--explain", request]
        for h in headers:
            argv += ["--header", h]
        if as_json:
            argv.append("--json")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if SANITIZED:
            assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
        return p

    yield explain
    for s in listeners:
        with pytest.raises(BlockingIOError):
            s.accept()  # no backend was contacted
        s.close()


def variables(text):
    lines = text.split("SCGI variables, in the order sent:\n", 1)[1].splitlines()
    return [tuple(l.strip().split("=", 1)) for l in lines]


def test_pathinfo_of_an_encoded_utf8_path(setup):
    p = setup("GET /pi/caf%C3%A9/a%20b?x=1")
    assert p.returncode == 0, p.stderr
    assert "route     /pi/ -> scgi://" in p.stdout
    env = variables(p.stdout)
    names = [k for k, _ in env]
    assert names[:7] == ["CONTENT_LENGTH", "SCGI", "REQUEST_METHOD", "REQUEST_URI", "QUERY_STRING", "SCRIPT_NAME", "PATH_INFO"]
    d = dict(env)
    assert d["SCRIPT_NAME"] == "/pi" and d["PATH_INFO"] == "/café/a b" and d["REQUEST_URI"] == "/pi/caf%C3%A9/a%20b?x=1"
    assert d["SERVER_PORT"] == "8088" and d["SERVER_ADDR"] == "127.0.0.1"


def test_sticky_member_and_rewrite_hook_and_route_env(setup):
    p = setup("GET /old/x?y=1", "Cookie: theme=dark; ROUTEID=z.b")
    assert p.returncode == 0, p.stderr
    assert 'rewrite       ' in p.stdout and 'uri "/old/x" -> "/app/x"' in p.stdout
    assert "member    scgi://127.0.0.1:" in p.stdout and "route b, sticky by ROUTEID" in p.stdout
    env = variables(p.stdout)
    assert env[-1] == ("APP_ENV", "prod")  # route env comes after the request's variables
    assert ("SCRIPT_NAME", "/app/x") in env and ("HTTP_COOKIE", "theme=dark; ROUTEID=z.b") in env
    # Without the cookie the balancer's own choice is shown (the first pick goes to lbfactor 2).
    p = setup("GET /app/x")
    assert "lbfactor 2, route b)" in p.stdout and "sticky by" not in p.stdout


def test_hook_that_ends_the_request_and_yielding_calls(setup):
    p = setup("POST /admin/x")
    assert p.returncode == 0, p.stderr
    assert "response  403" in p.stdout and p.stdout.rstrip().endswith("forbidden")
    # Waiting calls do not wait: they return nil, "explain" (the hook took no 0.5 s sleep).
    assert 'env WAITED = "nil,explain,nil,explain"' in p.stdout
    assert "SCGI variables" not in p.stdout


def test_json_has_route_hooks_member_env_in_order(setup):
    p = setup("GET /admin/x?q=1", "X-Token: s3cret", as_json=True)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["route"]["match"] == "/admin/" and doc["route"]["handler"] == "scgi"
    assert [h["phase"] for h in doc["hooks"]] == ["rewrite", "access"]
    assert doc["hooks"][0]["changes"] == []
    assert 'header x-user: (none) -> "admin"' in doc["hooks"][1]["changes"]
    assert doc["member"] is None and "response" not in doc
    env = doc["env"]
    assert env[0] == ["CONTENT_LENGTH", "0"] and env[1] == ["SCGI", "1"]
    names = [k for k, _ in env]
    assert names.index("HTTP_X_USER") < names.index("WAITED")  # hook env last, as sent
    assert ["QUERY_STRING", "q=1"] in env
    p = setup("GET /admin/x", as_json=True)
    doc = json.loads(p.stdout)
    assert doc["response"]["status"] == 403 and doc["response"]["body"] == "forbidden\n" and doc["env"] is None


def test_no_route_lua_handler_and_bad_input(setup, tmp_path):
    p = setup("GET /nowhere")
    assert p.returncode == 0 and "route     (none)" in p.stdout and "response  404" in p.stdout
    p = setup("GET /health")
    assert "handler   lua (not run by --explain)" in p.stdout
    p = setup("GET")
    assert p.returncode == 1 and "expected \"METHOD /path?query\"" in p.stderr
    p = setup("GET /x", "no colon here")
    assert p.returncode == 1 and "--header takes" in p.stderr
    bad = tmp_path / "bad.lua"
    bad.write_text('local mg = require "moongate"\nmg.route("/x/", "http://nope/")\n')
    p = subprocess.run([MOONGATE, "-c", str(bad), "--explain", "GET /x/"], capture_output=True, text=True)
    assert p.returncode == 1 and "bad.lua:2:" in p.stderr


def test_tls_listener_is_explained_in_plain_text(tmp_path):
    """A configuration whose first listener is TLS: the request is explained all the same
    (over the plain socketpair), with the listener's address."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    conf = tmp_path / "init.lua"
    conf.write_text('local mg = require "moongate"\n'
                    'mg.listen("127.0.0.1:8443", { tls = { cert = "cert.pem", key = "key.pem" } })\n'
                    'mg.route("/", "scgi://127.0.0.1:%d/")\n' % free_port())
    p = subprocess.run([MOONGATE, "-c", str(conf), "--explain", "GET /x"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "SERVER_PORT=8443" in p.stdout and "REQUEST_URI=/x" in p.stdout
    if SANITIZED:
        assert "Sanitizer" not in p.stderr, p.stderr


def test_a_request_larger_than_the_socket_buffer_is_explained(setup):
    """It used to be written whole into its own socketpair before the loop read it: over about
    200 KB the write blocked for ever. Now 60 fields of 4 KB (240 KB) are explained, and a
    target longer than 8 KB is kept whole (it was cut at 8,191 bytes and explained as another
    URL): the gateway's max_request_line answers it with 414, as it would a client."""
    headers = ["X-Big-%d: %s" % (i, "v" * 4000) for i in range(60)]
    p = setup("GET /pi/x", *headers)
    assert p.returncode == 0, p.stderr
    v = dict(variables(p.stdout))
    assert v["HTTP_X_BIG_59"] == "v" * 4000 and len([k for k in v if k.startswith("HTTP_X_BIG_")]) == 60
    p = setup("GET /pi/" + "a" * 20000)
    assert p.returncode == 0, p.stderr
    assert "response  414" in p.stdout


def test_a_request_the_gateway_refuses_midway_is_answered(setup):
    """A field over max_header_size: the gateway answers 431 before reading all of it."""
    p = setup("GET /pi/x", "X-Huge: " + "h" * 100000)
    assert p.returncode == 0, p.stderr
    assert "response  431" in p.stdout


def test_a_hook_that_answers_nothing(setup):
    """req:exit(444) in a balancer hook: the request ends with the connection and no answer, and
    --explain says so (the request stays held while the hook's end is reported)."""
    p = setup("GET /bal444/x")
    assert "ended the request" in p.stdout, p.stdout
    assert "response  none: the connection closed without an answer" in p.stdout, p.stdout
