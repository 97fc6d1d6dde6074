"""State shared by workers and the policy kit (docs/lua-api.md, "State shared by all workers"
and "More of the request and response"): shared dictionaries, limit_req, req:headers(),
body_filter, cjson and the helpers."""
import hashlib
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import raw, read_response, request, scgi_vars
from test_faults import rss_kib, workers_of

DICT = """
mg.workers(2)
local d = mg.shared("counts", "%s")
mg.route("/incr", function(req) return 200, string.format("%%d", d:incr("n", 1, 0)) end)
mg.route("/get", function(req) return 200, tostring(d:get(req.query)) end)
mg.route("/op", function(req)
  local a = mg.decode_args(req.query)
  local ok, err, forcible
  if a.op == "set" then ok, err, forcible = d:set(a.k, a.v, tonumber(a.ttl))
  elseif a.op == "add" then ok, err, forcible = d:add(a.k, a.v)
  elseif a.op == "replace" then ok, err = d:replace(a.k, a.v)
  elseif a.op == "delete" then ok = d:delete(a.k)
  elseif a.op == "ttl" then ok, err = d:ttl(a.k)
  elseif a.op == "expire" then ok, err = d:expire(a.k, tonumber(a.ttl))
  elseif a.op == "keys" then ok = #d:get_keys(0)
  elseif a.op == "flush" then d:flush_all() ok = true
  elseif a.op == "fill" then
    -- far more than fits: every set must succeed, some by evicting
    local evicted = 0
    for i = 1, tonumber(a.n) do
      local s, e, f = d:set("fill" .. i, string.rep("v", 1000))
      if not s then return 500, "set failed: " .. tostring(e) end
      if f then evicted = evicted + 1 end
    end
    ok = evicted
  elseif a.op == "spin" then
    for i = 1, tonumber(a.n) do d:incr("spin", 1, 0) end
    ok = true
  end
  return 200, tostring(ok) .. " " .. tostring(err) .. " " .. tostring(forcible)
end)
"""


def op(port, q):
    return request(port, path="/op?" + q).body.decode()


def test_incr_is_exact_across_two_workers(gateway):
    g = gateway(DICT % "1m")
    workers_of(g, 2)
    with ThreadPoolExecutor(max_workers=8) as ex:
        list(ex.map(lambda i: request(g.port, path="/incr"), range(400)))  # one new connection each
    assert request(g.port, path="/get?n").body == b"400"


def test_dictionary_operations(gateway):
    g = gateway(DICT % "1m")
    assert op(g.port, "op=set&k=a&v=1") == "true nil false"
    assert op(g.port, "op=add&k=a&v=2") == "false exists false"
    assert op(g.port, "op=replace&k=zz&v=2") == "false not found nil"
    assert op(g.port, "op=replace&k=a&v=3") == "true nil nil"
    assert request(g.port, path="/get?a").body == b"3"
    assert op(g.port, "op=ttl&k=a") == "0 nil nil"
    assert op(g.port, "op=set&k=t&v=x&ttl=0.3") == "true nil false"
    assert float(op(g.port, "op=ttl&k=t").split()[0]) > 0
    time.sleep(0.5)
    assert request(g.port, path="/get?t").body == b"nil"
    assert op(g.port, "op=expire&k=a&ttl=0.2") == "true nil nil"
    time.sleep(0.4)
    assert request(g.port, path="/get?a").body == b"nil"
    assert op(g.port, "op=set&k=b&v=1") == "true nil false"
    assert op(g.port, "op=keys") == "1 nil nil"
    assert op(g.port, "op=delete&k=b") == "true nil nil"
    assert op(g.port, "op=flush") == "true nil nil" and op(g.port, "op=keys") == "0 nil nil"


def test_a_full_dictionary_evicts_and_never_fails_a_set(gateway):
    g = gateway(DICT % "256k")
    evicted = int(op(g.port, "op=fill&n=2000").split()[0])  # 2 MB into 256 KiB
    assert evicted > 1000
    assert int(op(g.port, "op=keys").split()[0]) < 260
    assert request(g.port, path="/get?fill2000").body == b"v" * 1000  # the newest is there


def test_contents_survive_a_reload(gateway):
    g = gateway(DICT % "1m")
    for _ in range(7):
        request(g.port, path="/incr")
    old = set(workers_of(g, 2))
    g.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and (set(g.workers()) & old or len(g.workers()) < 2):
        time.sleep(0.1)
    assert not set(g.workers()) & old
    assert request(g.port, path="/get?n").body == b"7"
    assert request(g.port, path="/incr").body == b"8"


def test_a_worker_killed_while_incrementing_leaves_the_others_running(gateway):
    g = gateway(DICT % "1m")
    workers = workers_of(g, 2)

    def spin():
        try:
            request(g.port, path="/op?op=spin&n=3000000")
        except (OSError, EOFError):
            pass
    spinners = [threading.Thread(target=spin) for _ in range(4)]
    for t in spinners:
        t.start()
    time.sleep(0.4)  # both workers are in their incr loops, taking the lock all the time
    os.kill(workers[0], signal.SIGKILL)
    for t in spinners:
        t.join(30)
    # The survivor and the replacement both serve, and the dictionary still counts.
    before = int(request(g.port, path="/get?spin").body)
    assert before > 0
    for _ in range(10):
        assert request(g.port, path="/incr").status == 200
    assert int(request(g.port, path="/get?n").body) == 10


def test_limit_req_is_exact_across_two_workers(gateway):
    g = gateway("""
mg.workers(2)
local lim = mg.limit_req("five", { rate = "5r/s", burst = 0 })
mg.route("/", function(req)
  local delay, err = lim:incoming("everyone", true)
  if not delay then return 429, "rejected" end
  return 200, "ok"
end)
""")
    workers_of(g, 2)
    statuses = []
    lock = threading.Lock()
    t0 = time.time()

    def client(i):
        for _ in range(8):
            r = request(g.port, path="/")
            with lock:
                statuses.append(r.status)
            time.sleep(0.1)
    with ThreadPoolExecutor(max_workers=5) as ex:
        list(ex.map(client, range(5)))
    elapsed = time.time() - t0
    admitted = statuses.count(200)
    assert len(statuses) == 40 and set(statuses) <= {200, 429}
    # One at once, then one every 0.2 s: whichever worker took each request.
    expected = 1 + 5 * elapsed
    assert abs(admitted - expected) <= 2, "admitted %d in %.2f s, expected about %.1f" % (admitted, elapsed, expected)


def test_req_headers_gives_repeated_headers_as_lists(gateway):
    g = gateway("""
local cjson = require "cjson"
mg.route("/h", function(req) return 200, cjson.encode(req:headers()) end)
""")
    r = request(g.port, path="/h", headers=[("X-A", "1"), ("x-a", "2"), ("X-B", "3")])
    h = json.loads(r.body)
    assert h["x-a"] == ["1", "2"] and h["x-b"] == "3" and h["host"].startswith("127.0.0.1")


def test_body_filter_uppercases_a_streamed_response(gateway, echo_backend):
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { body_filter = function(req, res, chunk, eof)
  if eof then return chunk .. "!END" end
  return chunk:upper()
end } })
""", echo_backend)
    r = request(g.port, path="/bytes/1048576")
    assert r.status == 200 and r.header("Content-Length") is None
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.body == b"X" * 1048576 + b"!END"
    # 32 MiB through the filter: the worker's memory stays bounded (it streams).
    worker = workers_of(g)[0]
    before = rss_kib(worker)
    s = socket.create_connection(("127.0.0.1", g.port))
    s.sendall(b"GET /stream/33554432 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    total, peak = 0, before
    while True:
        c = s.recv(1 << 20)
        if not c:
            break
        total += len(c)
        if total % (4 << 20) < len(c):
            peak = max(peak, rss_kib(worker))
    s.close()
    assert total > 33554432
    assert peak - before < 24 * 1024, "worker RSS grew by %d KiB while filtering 32 MiB" % (peak - before)


def test_body_filter_error_cuts_the_response(gateway, echo_backend):
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { body_filter = function(req, res, chunk, eof) error("filter broke") end } })
""", echo_backend)
    # Nothing was on the wire yet when the filter failed: a clean 500.
    out = raw(g.port, b"GET /bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500") and b"xxxx" not in out
    g.wait_log("Lua error in body_filter hook")
    # Failing later, after bytes went out: the response is cut, never passed off as whole.
    g2 = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { body_filter = function(req, res, chunk, eof)
  req.ctx.n = (req.ctx.n or 0) + 1
  if req.ctx.n > 3 then error("filter broke late") end
end } })
""", echo_backend)
    out = raw(g2.port, b"GET /stream/4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and not out.endswith(b"0\r\n\r\n")
    g2.wait_log("filter broke late")


def test_body_filter_cannot_wait(gateway, echo_backend):
    g = gateway("""
mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { body_filter = function(req, res, chunk, eof) mg.sleep(0.1) end } })
""", echo_backend)
    raw(g.port, b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    g.wait_log("API disabled in the context of body_filter: mg.sleep")


def test_digests_encodings_and_cjson(gateway):
    g = gateway(r"""
local cjson = require "cjson"
local safe = require "cjson.safe"
mg.route("/u", function(req)
  local fox = "The quick brown fox jumps over the lazy dog"
  local t = {
    md5 = mg.md5("abc"), md5_bin = mg.to_hex(mg.md5_bin("abc")), sha1 = mg.to_hex(mg.sha1("abc")),
    sha256 = mg.to_hex(mg.sha256("abc")),
    hmac = mg.to_hex(mg.hmac_sha256("key", fox)),
    b64 = mg.encode_base64("\0\1\2hello"), unb64 = mg.decode_base64(mg.encode_base64(fox)),
    bad64 = mg.decode_base64("ab!c") == nil, unpadded64 = mg.decode_base64("Zm8"),
    esc = mg.escape_uri("a b/é?&=~"), unesc = mg.unescape_uri("a%20b%2F%C3%A9+"),
    args = mg.encode_args({ b = "x y", a = 1, c = true, d = false, l = { "1", "2" } }),
    decoded = mg.decode_args("a=1&b=x+y&a=2&c&e=%41"),
    roundtrip = cjson.decode(cjson.encode({ n = 1.5, s = "é\n", l = { 1, 2, 3 }, b = false })),
    safe = safe.decode("{broken") == nil,
    now = mg.now() - mg.time() < 1 and mg.now() > 1.7e9,
  }
  return 200, cjson.encode(t)
end)
""")
    d = json.loads(request(g.port, path="/u").body)
    # OpenResty's names and results: ngx.md5 is hex, ngx.md5_bin raw.
    assert d["md5"] == d["md5_bin"] == hashlib.md5(b"abc").hexdigest()
    assert d["sha1"] == hashlib.sha1(b"abc").hexdigest()
    assert d["sha256"] == hashlib.sha256(b"abc").hexdigest()
    # RFC 4231-style vector from the HMAC Wikipedia page.
    assert d["hmac"] == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert d["b64"] == "AAECaGVsbG8=" and d["unb64"] == "The quick brown fox jumps over the lazy dog"
    assert d["bad64"] is True and d["unpadded64"] == "fo"
    assert d["esc"] == "a%20b%2F%C3%A9%3F%26%3D~" and d["unesc"] == "a b/é "
    assert d["args"] == "a=1&b=x%20y&c&l=1&l=2"
    assert d["decoded"] == {"a": ["1", "2"], "b": "x y", "c": True, "e": "A"}
    assert d["roundtrip"] == {"n": 1.5, "s": "é\n", "l": [1, 2, 3], "b": False}
    assert d["safe"] is True and d["now"] is True


def test_mg_log_writes_the_request_id(gateway):
    g = gateway('mg.route("/l", function(req) mg.log("warn", "policy said ", 42, " for ", req.uri) return 200, req.id end)\n')
    rid = request(g.port, path="/l").body.decode()
    g.wait_log("[warn]")
    line = [l for l in g.log().splitlines() if "policy said 42 for /l" in l][0]
    assert rid in line


def test_declaring_a_dictionary_in_a_request_is_an_error(gateway):
    g = gateway('mg.route("/x", function(req) local d = mg.shared("late", "1m") return 200, "no" end)\n')
    assert request(g.port, path="/x").status == 500
    g.wait_log("dictionaries are declared in init.lua")
