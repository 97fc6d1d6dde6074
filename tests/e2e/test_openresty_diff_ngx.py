"""Differential: the same ngx.* code as a content handler under Debian's nginx + lua-nginx-module
(content_by_lua_block) and under moongate (a route whose target runs it), with the same
request; status, body and the named response headers must be equal.

Each case is (lua, request, headers to compare). The Lua is written once, as OpenResty code;
moongate runs it unchanged. Ports differ between the two servers, so each side's own port is
replaced by PORT in what it answers. What moongate does deliberately differently is in
DIFFERENCES, each with its reason, and test_deliberate_differences_are_the_known_ones checks that
those cases do differ (a fix that makes one agree must move it back into CASES)."""
import signal
import time

import pytest

from conftest import Gateway, request
from openresty import start_openresty, stop_openresty

# In `compare`: the body is not compared. nginx answers an error status or a redirect with its
# HTML page ("<html><head><title>403 Forbidden</title>..."), moongate with its short text page
# ("403 Forbidden"), as every moongate error is answered (docs/openresty.md, "Differences").
NO_BODY = "(no body)"


def req(path="", method="GET", headers=(), body=None):
    return {"method": method, "path": path, "headers": list(headers), "body": body}


# name: (lua, request (path relative to the case's location), response headers compared)
CASES = {
    # ---- ngx.var --------------------------------------------------------------------------------
    "var_basic": (r'''
for _, k in ipairs({"uri", "request_uri", "args", "query_string", "is_args", "arg_a", "arg_B", "arg_c",
                    "arg_none", "request_method", "scheme", "host", "remote_addr", "server_protocol",
                    "http_user_agent", "http_x_multi", "http_cookie", "cookie_sid", "cookie_none",
                    "content_length", "content_type", "document_uri", "request", "https", "nosuchvar"}) do
  ngx.say(k, "=", tostring(ngx.var[k]))
end
ngx.say("URI upper: ", ngx.var.URI)
ngx.say("types: ", type(ngx.var.remote_port), " ", type(ngx.var.server_port), " ", #ngx.var.request_id)
ngx.say("request_id hex: ", tostring(ngx.var.request_id:match("^%x+$") ~= nil))
ngx.say("request_time: ", tostring(ngx.var.request_time:match("^%d+%.%d%d%d$") ~= nil))
''', req("/a%20b/c?a=1&B=two%20x&c&a=3", headers=[("User-Agent", "ua/1"), ("X-Multi", "one"), ("X-Multi", "two"),
                                              ("Cookie", "sid=abc; x=1"), ("Cookie", "y=2")]), []),
    "var_write_args": (r'''
ngx.var.args = "x=1&y=2"
ngx.say(ngx.var.args, " ", ngx.var.arg_y, " ", ngx.req.get_uri_args().x)
local ok, err = pcall(function() ngx.var.nosuch = "1" end)
ngx.say(tostring(ok), " ", tostring(err):match("variable \"nosuch\" not found for writing") ~= nil)
''', req("?q=0"), []),
    # ---- ngx.req.* ---------------------------------------------------------------------------------
    "req_headers": (r'''
local h = ngx.req.get_headers()
ngx.say(h["user-agent"], " ", h["User-Agent"], " ", h.user_agent, " ", type(h["x-dup"]), " ", table.concat(h["x-dup"], ","))
local h2, err = ngx.req.get_headers(2)
local n = 0 for _ in pairs(h2) do n = n + 1 end
ngx.say("max2: ", n, " ", tostring(err))
local raw = ngx.req.get_headers(0, true)
ngx.say("raw: ", tostring(raw["X-Dup"] ~= nil), " ", tostring(raw["x-dup"]))
ngx.req.set_header("X-New", "v")
ngx.req.set_header("X-List", {"a", "b"})
ngx.req.clear_header("User-Agent")
local h3 = ngx.req.get_headers()
ngx.say(h3["x-new"], " ", table.concat(h3["x-list"], "+"), " ", tostring(h3["user-agent"]))
''', req(headers=[("User-Agent", "ua"), ("X-Dup", "1"), ("X-Dup", "2"), ("Accept", "*/*")]), []),
    "req_misc": (r'''
ngx.say(ngx.req.get_method(), " ", ngx.req.http_version(), " ", type(ngx.req.http_version()),
        " ", tostring(ngx.req.is_internal()), " ", type(ngx.req.start_time()))
local args = ngx.req.get_uri_args()
local keys = {} for k in pairs(args) do keys[#keys + 1] = k end table.sort(keys)
for _, k in ipairs(keys) do local v = args[k] ngx.say(k, "=", type(v) == "table" and table.concat(v, ",") or tostring(v)) end
ngx.req.set_uri_args({z = "9"})
ngx.say(ngx.var.args)
ngx.req.set_uri_args("k=v")
ngx.say(ngx.var.args)
ngx.req.set_method(ngx.HTTP_POST)
ngx.say(ngx.req.get_method(), " ", ngx.var.request_method)
''', req("?a=1&a=2&b&c=%20x&=drop"), []),
    "req_body": (r'''
ngx.req.read_body()
ngx.say("data: ", tostring(ngx.req.get_body_data()))
local args = ngx.req.get_post_args()
local keys = {} for k in pairs(args) do keys[#keys + 1] = k end table.sort(keys)
for _, k in ipairs(keys) do ngx.say(k, "=", tostring(args[k])) end
''', req(method="POST", headers=[("Content-Type", "application/x-www-form-urlencoded")], body=b"a=1&b=x%20y"), []),
    # a content handler that waits before reading: the body is still there (it waited in the
    # socket under nginx, held by moongate)
    "req_body_after_wait": (r'''
ngx.sleep(0.05)
ngx.req.read_body()
local b = ngx.req.get_body_data()
ngx.say("data: ", b and #b or "nil", " ", b and ngx.md5(b) or "")
''', req(method="POST", body=bytes(range(256)) * 4), []),
    "req_body_none": (r'''
ngx.req.read_body()
ngx.say("data: ", tostring(ngx.req.get_body_data()))
''', req(), []),
    # ---- output ----------------------------------------------------------------------------------------
    "say_values": (r'''
ngx.say("s", 1, 2.5, true, false, nil, ngx.null, {"a", {"b", {"c"}}, 3})
local ok, err = pcall(ngx.say, {a = 1})
ngx.say(tostring(ok), " ", err)
ok, err = pcall(ngx.say, function() end)
ngx.say(tostring(ok), " ", err)
ngx.say(ngx.print("x"), " ", ngx.say())
ngx.print()
''', req(), []),
    "status_and_headers": (r'''
ngx.say("before ", ngx.status)
''', req(), ["Content-Type"]),
    "set_status": (r'''
ngx.status = 201
ngx.header["X-One"] = "1"
ngx.header.x_two = {"a", "b"}
ngx.header.content_type = "text/x-test"
ngx.say(ngx.status, " ", ngx.header["X-One"], " ", type(ngx.header["x-two"]), " ", ngx.header.content_type)
ngx.header["X-One"] = nil
ngx.say(tostring(ngx.header["X-One"]), " ", tostring(ngx.headers_sent))
''', req(), ["Content-Type", "X-Two"]),
    "exit_403": (r'''ngx.exit(403)''', req(), [NO_BODY]),
    "exit_after_say": (r'''
ngx.say("partial")
ngx.exit(500)
ngx.say("never")
''', req(), []),
    "exit_200_empty": (r'''ngx.exit(ngx.HTTP_OK)''', req(), []),
    "exit_ok": (r'''ngx.exit(ngx.OK)''', req(), []),
    "redirect": (r'''return ngx.redirect("/elsewhere?x=1", 301)''', req(), ["Location", NO_BODY]),
    "redirect_default": (r'''return ngx.redirect("/e")''', req(), ["Location", NO_BODY]),
    "redirect_bad": (r'''
local ok, err = pcall(ngx.redirect, "/x", 200)
ngx.say(tostring(ok), " ", tostring(err))
''', req(), []),
    # ---- constants, phase, config, misc -----------------------------------------------------------------
    "constants": (r'''
ngx.say(ngx.OK, " ", ngx.ERROR, " ", ngx.AGAIN, " ", ngx.DONE, " ", ngx.DECLINED)
ngx.say(ngx.HTTP_GET, " ", ngx.HTTP_HEAD, " ", ngx.HTTP_POST, " ", ngx.HTTP_PUT, " ", ngx.HTTP_DELETE, " ",
        ngx.HTTP_OPTIONS, " ", ngx.HTTP_PATCH, " ", ngx.HTTP_TRACE)
ngx.say(ngx.HTTP_OK, " ", ngx.HTTP_MOVED_TEMPORARILY, " ", ngx.HTTP_NOT_FOUND, " ", ngx.HTTP_TOO_MANY_REQUESTS, " ",
        ngx.HTTP_INTERNAL_SERVER_ERROR, " ", ngx.HTTP_SERVICE_UNAVAILABLE, " ", ngx.HTTP_GATEWAY_TIMEOUT)
ngx.say(ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT, ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG)
ngx.say(ngx.get_phase(), " ", tostring(ngx.is_subrequest), " ", ngx.config.subsystem, " ", type(ngx.config.ngx_lua_version),
        " ", type(ngx.config.debug), " ", type(ngx.config.prefix()))
ngx.say(tostring(ngx.null == require("cjson").null), " ", type(ngx.null))
ngx.ctx.a = 1
ngx.say(ngx.ctx.a)
''', req(), []),
    "log_args": (r'''
ngx.log(ngx.INFO, "x", 1, nil, true)
local ok, err = pcall(ngx.log, ngx.ERR, {})
ngx.say(tostring(ok), " ", err)
ok, err = pcall(ngx.log, 99, "x")
ngx.say(tostring(ok), " ", err)
ngx.say(tostring(pcall(ngx.log, ngx.ERR, setmetatable({}, {__tostring = function() return "T" end}))))
''', req(), []),
    # ---- time ------------------------------------------------------------------------------------------------
    "time": (r'''
ngx.say(ngx.http_time(1290079655), "|", ngx.http_time(0), "|", ngx.http_time(4102444800))
ngx.say(ngx.cookie_time(1290079655), "|", ngx.cookie_time(2208988800))
ngx.say(ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"), " ", tostring(ngx.parse_http_time("nonsense")),
        " ", tostring(ngx.parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT")),
        " ", tostring(ngx.parse_http_time("Thu Nov 18 11:27:35 2010")))
local t1 = ngx.now()
local x = 0 for i = 1, 2e6 do x = x + i end
local t2 = ngx.now()
ngx.update_time()
local t3 = ngx.now()
ngx.say("cached: ", tostring(t1 == t2), " moved: ", tostring(t3 >= t2), " ms: ", tostring(t1 * 1000 == math.floor(t1 * 1000)))
ngx.say(type(ngx.time()), " ", tostring(ngx.time() == math.floor(ngx.time())), " ", #ngx.today(), " ", #ngx.localtime(), " ", #ngx.utctime())
''', req(), []),
    # ---- threads --------------------------------------------------------------------------------------------
    "threads": (r'''
local t1 = ngx.thread.spawn(function(a) ngx.sleep(0.01) return a, "x" end, 7)
local t2 = ngx.thread.spawn(function() ngx.sleep(5) return "slow" end)
ngx.say(select("#", ngx.thread.wait(t1)), " ", ngx.thread.wait(t1))
ngx.say(tostring(ngx.thread.kill(t2)), " ", tostring(select(2, ngx.thread.kill(t2))))
local t3 = ngx.thread.spawn(function() return 1 end)
ngx.say(tostring(ngx.thread.wait(t3)))
''', req(), []),
    # ---- workers -----------------------------------------------------------------------------------------
    # (Two workers under a master: test_worker_pids_with_two_workers_matches_openresty.)
    "worker_pids": (r'''
local p, err = ngx.worker.pids()
local seen, distinct = {}, true
for _, pid in ipairs(p) do
  if seen[pid] or type(pid) ~= "number" or pid <= 0 then distinct = false end
  seen[pid] = true
end
ngx.say(type(p), " ", tostring(err), " ", tostring(#p == ngx.worker.count()), " ",
        tostring(p[ngx.worker.id() + 1] == ngx.worker.pid()), " ", tostring(distinct))
''', req(), []),
    # ---- ngx.decode_base64mime ----------------------------------------------------------------------------
    # lua-nginx-module 0.10.28 added it, after Debian's 0.10.23: under nginx the case runs a model
    # of its C (ngx_http_lua_decode_base64mime: up to the first "=", bytes outside the alphabet
    # skipped, 4n+1 digits nil) built on Debian's ngx.decode_base64, which reads the digits that
    # are left as that C does; under moongate it runs mg.decode_base64mime.
    "decode_base64mime": (r'''
local mime = ngx.decode_base64mime or function(s)
  if type(s) ~= "string" then error("string argument only", 2) end
  return ngx.decode_base64((s:match("^[^=]*"):gsub("[^A-Za-z0-9+/]", "")))
end
local blob = {}
for i = 1, 3000 do blob[i] = string.char((i * 7 + 3) % 256) end
blob = table.concat(blob)
local wrapped = ngx.encode_base64(blob):gsub("(" .. string.rep(".", 76) .. ")", "%1\r\n")
for _, s in ipairs({ "Zm9v", "Zm9v\r\nYmFy", "Zm 9v", "Zm9vYg", "Zm9vYg=", "Zm9vYmE=", "Zm9\nv====eHl6",
                     "Z", "Zm9vY", "Z m 9 v Y", "", "!!!", "==", "-_", "\255Zm9v\0", "Zh", "Zm8=x", "Zm9v=Zm9v",
                     "Z\nm\n9\nv\nY\nm\nF\ny", "YWJj\tZGVm\r\n\r\nZ2hp" }) do
  local r = mime(s)
  ngx.say(("%q"):format(s), " -> ", r and ("%q"):format(r) or "nil")
end
ngx.say("wrapped: ", #wrapped, " ", tostring(mime(wrapped) == blob), " ", tostring(mime(wrapped .. "\r\n") == blob))
for _, v in ipairs({ 12, true }) do
  local ok, err = pcall(mime, v)
  ngx.say(type(v), ": ", tostring(ok), " ", tostring(err):match("string argument only$") or tostring(err))
end
local ok, err = pcall(mime)
ngx.say("none: ", tostring(ok), " ", tostring(err):match("string argument only$") or tostring(err))
''', req(), []),
}

# Cases with hooks in several phases: name: ({phase: lua}, request, headers compared). Under
# nginx each phase is its *_by_lua_block of the case's location; under moongate the content is the
# route's function, access/header_filter/body_filter/log its hooks and rewrite a global mg.on hook
# for the case's path. "/c_sub/" is a plain content location both have, for subrequests and exec.
PHASE_CASES = {
    "ph_ctx_and_phases": ({
        "rewrite": 'ngx.ctx.p = { ngx.get_phase() }',
        "access": 'table.insert(ngx.ctx.p, ngx.get_phase()) ngx.ctx.x = 7',
        "content": 'table.insert(ngx.ctx.p, ngx.get_phase()) ngx.say(table.concat(ngx.ctx.p, ","), " ", ngx.ctx.x)',
        "header_filter": 'ngx.header["X-Phase"] = ngx.get_phase() .. ":" .. ngx.status .. ":" .. tostring(ngx.ctx.x)',
    }, req(), ["X-Phase"]),
    "ph_body_filter_arg": ({
        "content": 'ngx.say("hello") ngx.say("world")',
        "header_filter": 'ngx.header.content_length = nil ngx.header["X-Sent"] = tostring(ngx.headers_sent)',
        "body_filter": 'ngx.arg[1] = string.upper(ngx.arg[1]) .. (ngx.arg[2] and "[eof]" or "")',
    }, req(), ["X-Sent"]),
    "ph_access_exit": ({
        "access": 'ngx.header["X-Denied"] = "yes" ngx.exit(ngx.HTTP_FORBIDDEN)',
        "content": 'ngx.say("never")',
        "header_filter": 'ngx.header["X-Status"] = tostring(ngx.status)',
    }, req(), ["X-Denied", "X-Status", NO_BODY]),
    "ph_access_say": ({
        "access": 'ngx.status = 202 ngx.say("from access") ngx.exit(ngx.HTTP_OK)',
        "content": 'ngx.say("never")',
    }, req(), []),
    "ph_access_ok": ({
        "access": 'ngx.ctx.a = "went on" ngx.exit(ngx.OK)',
        "content": 'ngx.say(ngx.ctx.a)',
    }, req(), []),
    "ph_exec": ({
        "access": 'return ngx.exec("/c_sub/exec", { from = "access" })',
        "content": 'ngx.say("never")',
    }, req(), []),
    "ph_capture": ({
        "content": r'''
local res = ngx.location.capture("/c_sub/cap", { method = ngx.HTTP_POST, body = "payload", args = { k = "v 1" } })
ngx.say(res.status, " ", res.header["X-Sub"], " ", res.header.x_sub, " ", tostring(res.truncated))
ngx.print(res.body)
local a, b = ngx.location.capture_multi({ { "/c_sub/one" }, { "/c_sub/two", { args = "n=2" } } })
ngx.print(a.body, b.body)
''',
    }, req(), []),
    "ph_header_filter_status": ({
        "content": 'ngx.say("body")',
        "header_filter": 'ngx.status = 299 ngx.header["X-Was"] = "set"',
    }, req(), ["X-Was"]),
    "ph_resp_get_headers": ({
        "content": 'ngx.header["X-One"] = "1" ngx.header["X-Two"] = {"a", "b"} ngx.say("x")',
        "header_filter": '''local h = ngx.resp.get_headers()
ngx.header["X-Seen"] = tostring(h["content-type"]) .. "|" .. tostring(h.x_one) .. "|" .. table.concat(h["x-two"], ",")
local r = ngx.resp.get_headers(0, true)
ngx.header["X-Raw"] = tostring(r["X-One"]) .. "|" .. tostring(r["x-one"])''',
    }, req(), ["X-Seen", "X-Raw"]),
    "ph_eof_then_work": ({
        "content": 'ngx.say("done") ngx.eof() ngx.sleep(0.01) local ok, err = ngx.say("late") ngx.log(ngx.INFO, tostring(ok), err)',
    }, req(), []),
    "ph_flush": ({
        "content": 'ngx.print("a") ngx.flush(true) ngx.print("b") ngx.flush() ngx.say(tostring(ngx.headers_sent))',
    }, req(), []),
}

SUB = r'''
ngx.req.read_body()
ngx.header["X-Sub"] = "sub:" .. ngx.var.uri
ngx.say(ngx.req.get_method(), " ", ngx.var.uri, " ", tostring(ngx.var.args), " ", tostring(ngx.req.get_body_data()),
        " ", tostring(ngx.is_subrequest), " ", tostring(ngx.req.is_internal()))
'''

NGINX_PHASES = {"rewrite": "rewrite_by_lua_block", "access": "access_by_lua_block", "content": "content_by_lua_block",
                "header_filter": "header_filter_by_lua_block", "body_filter": "body_filter_by_lua_block",
                "log": "log_by_lua_block"}


def nginx_phase_locations(cases):
    out = {"/c_sub/": ("prefix", SUB)}
    for name, (phases, _, _) in cases.items():
        blocks = " ".join("%s { %s }" % (NGINX_PHASES[p], lua) for p, lua in phases.items())
        out["/c_%s/" % name] = ("raw_prefix", blocks)
    return out


def moongate_phase_config(cases):
    out = ['mg.route("/c_sub/", function(req)\n%s\nend)\n' % SUB]
    for name, (phases, _, _) in cases.items():
        path = "/c_%s/" % name
        if "rewrite" in phases:
            out.append('mg.on("rewrite", function(req) if req.uri:sub(1, %d) == "%s" then %s end end)\n'
                       % (len(path), path, phases["rewrite"]))
        hooks = []
        for p, args in (("access", "req"), ("header_filter", "req, res"), ("body_filter", "req, res, chunk, eof"),
                        ("log", "req, res")):
            if p in phases:
                hooks.append("%s = function(%s) %s end" % (p, args, phases[p]))
        out.append('mg.route("%s", function(req)\n%s\nend, { hooks = { %s } })\n'
                   % (path, phases.get("content", ""), ", ".join(hooks)))
    return "".join(out)


# Cases moongate answers differently on purpose: name -> why (docs/openresty.md says the same).
DIFFERENCES = {
}

LOCATION = "/c_%s/"


def lua_locations(cases):
    # Prefix locations, so that a case's path may go on past its name.
    return {LOCATION % name: ("prefix", lua) for name, (lua, _, _) in cases.items()}


def moongate_config(cases):
    return "".join('mg.route("%s", function(req)\n%s\nend)\n' % (LOCATION % name, lua) for name, (lua, _, _) in cases.items())


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    every = dict(CASES)
    every.update({k: v for k, v in DIFF_CASES.items()})
    locations = lua_locations(every)
    locations.update(nginx_phase_locations(PHASE_CASES))
    p, nginx_port = start_openresty(tmp_path_factory.mktemp("openresty"), locations, server="default_type text/plain;")
    try:
        g = Gateway(tmp_path_factory.mktemp("moongate"), moongate_config(every) + moongate_phase_config(PHASE_CASES))
    except BaseException:
        stop_openresty(p)
        raise
    yield nginx_port, g.port
    stop_openresty(p)
    g.stop()


def answer(port, name, r, compare):
    try:
        resp = request(port, method=r["method"], path=LOCATION % name + r["path"].lstrip("/"), headers=r["headers"], body=r["body"])
    except EOFError as e:
        # A response cut on purpose (ngx.exit(500) after output) is a result to compare too.
        return "cut", str(e)
    body = resp.body.decode("latin-1").replace(str(port), "PORT")
    if NO_BODY in compare:
        body = NO_BODY
    hdrs = {h: resp.header(h) for h in compare if h != NO_BODY}
    return resp.status, body, hdrs


DIFF_CASES = {
    "config_debug": (r'''ngx.say(tostring(ngx.config.debug))''', req(), []),
    "decode_base64mime_present": (r'''ngx.say(type(ngx.decode_base64mime))''', req(), []),
}
DIFFERENCES.update({
    "config_debug": "ngx.config.debug says whether nginx was built with --with-debug (Debian's is); moongate has "
                    "no debug build: false",
    "decode_base64mime_present": "ngx.decode_base64mime came with lua-nginx-module 0.10.28, after Debian's 0.10.23; "
                                 "moongate has it (the decode_base64mime case checks it against a model of its C)",
})


@pytest.mark.parametrize("name", sorted(CASES) + sorted(PHASE_CASES))
def test_ngx_api_matches_openresty(servers, name):
    """A CASES entry in a content handler, or a PHASE_CASES entry's hooks in their phases."""
    nginx_port, mg_port = servers
    r, compare = (CASES.get(name) or PHASE_CASES[name])[1:]
    theirs = answer(nginx_port, name, r, compare)
    ours = answer(mg_port, name, r, compare)
    assert ours == theirs, "\nmoongate: %r\nopenresty: %r" % (ours, theirs)


def test_deliberate_differences_are_the_known_ones(servers):
    nginx_port, mg_port = servers
    for name in DIFF_CASES:
        lua, r, compare = DIFF_CASES[name]
        assert answer(nginx_port, name, r, compare) != answer(mg_port, name, r, compare), (name, DIFFERENCES[name])


# ---- ngx.worker.pids under a master with two workers ---------------------------------------------
PIDS_LUA = r'''
local p = ngx.worker.pids()
local me = 0
for i, pid in ipairs(p) do if pid == ngx.worker.pid() then me = i end end
ngx.say(#p, " ", ngx.worker.count(), " ", tostring(me == ngx.worker.id() + 1))
ngx.say(table.concat(p, " "))
'''


# In init_worker both answer nil and lua-resty-core's message.
PIDS_INIT_WORKER = 'local p, err = ngx.worker.pids() LOG"init_worker pids: " .. tostring(p) .. ", " .. tostring(err))'
PIDS_INIT_WORKER_SAID = "init_worker pids: nil, API disabled in the current context"


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return sorted(int(p) for p in f.read().split())


def pids_answers(port, master_pid, want):
    """(the first lines of 12 answers, True when every answer listed exactly the master's
    `want` children)."""
    shapes, exact = set(), True
    for _ in range(12):
        head, listed = request(port, path="/t").body.decode().splitlines()
        pids = sorted(int(p) for p in listed.split())
        exact = exact and len(pids) == want and pids == children(master_pid)
        shapes.add(head)
    return shapes, exact


def start_nginx_master(folder, lua):
    """Debian's nginx as deployed: a master and two workers."""
    return start_openresty(folder, {"/t": lua}, workers=2,
                           http="init_worker_by_lua_block { %s }" % PIDS_INIT_WORKER.replace("LOG", "ngx.log(ngx.ERR, "))


def wait_children(pid, n):
    deadline = time.time() + 10
    while len(children(pid)) != n and time.time() < deadline:
        time.sleep(0.02)
    assert len(children(pid)) == n


def test_worker_pids_with_two_workers_matches_openresty(tmp_path):
    """Both list the two workers' pids (those of the master's children), each worker's own at
    its id + 1; moongate's list after a reload is the new generation's."""
    p, nginx_port = start_nginx_master(tmp_path / "openresty", PIDS_LUA)
    try:
        wait_children(p.pid, 2)
        theirs = pids_answers(nginx_port, p.pid, 2)
    finally:
        stop_openresty(p)
    with open(tmp_path / "openresty" / "logs" / "error.log") as f:
        assert PIDS_INIT_WORKER_SAID in f.read()
    (tmp_path / "moongate").mkdir()
    g = Gateway(tmp_path / "moongate", 'mg.workers(2)\nmg.on("init_worker", function() %s end)\n'
                'mg.route("=/t", function(req)\n%s\nend)\n' % (PIDS_INIT_WORKER.replace("LOG", 'mg.log("error", '), PIDS_LUA))
    try:
        wait_children(g.proc.pid, 2)
        ours = pids_answers(g.port, g.proc.pid, 2)
        g.wait_log(PIDS_INIT_WORKER_SAID)
        assert ours == theirs == ({"2 2 true"}, True), (ours, theirs)
        # A reload: once the old generation has gone, the list is the new workers'.
        before = children(g.proc.pid)
        g.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            now = children(g.proc.pid)
            if len(now) == 2 and not set(now) & set(before):
                break
            time.sleep(0.05)
        assert pids_answers(g.port, g.proc.pid, 2) == ({"2 2 true"}, True)
        assert not set(children(g.proc.pid)) & set(before)
    finally:
        g.stop()
