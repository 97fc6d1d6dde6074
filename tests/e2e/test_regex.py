"""Regular expressions: mg.re (= ngx.re) against Debian's nginx + lua-nginx-module, the "o"
cache, JIT, and regex routes (docs/lua-api.md, "Regular expressions"; docs/reference.md, "Routes").

The differential runs the same Lua expressions under OpenResty (NS = ngx) and moongate (NS = mg)
and compares each line: results typed, every byte shown, tables with sorted keys. Two known
differences are normalized away, each kept visible by its own test: PCRE2's compile messages
(Debian's lua-nginx-module is built on PCRE 8, whose texts and offsets differ) and the file:line
prefix of a raised error (OpenResty raises from resty/core/regex.lua, moongate without one).
moongate runs the differential three ways (IMPLS): through the FFI with the JIT on, as classic
C functions with it off, and through the FFI forced without the JIT.
"""
import re
import time

import pytest

from conftest import Gateway, request, scgi_vars
from openresty import start_openresty, stop_openresty
from test_openresty_diff_strings import RUNNER, lua_list

# Helpers for the cases, visible to them beside NS and PACK.
HELPERS = r'''
local function GM(NS, s, p, o)
  local it, err = NS.re.gmatch(s, p, o)
  if not it then return "compile", err end
  local out = {}
  for _ = 1, 60 do
    local m, e = it()
    if not m then out[#out + 1] = e or "end" break end
    out[#out + 1] = m
  end
  return out
end
local function CTX(NS, fn, s, p, o, pos, extra)
  local ctx = { pos = pos }
  local r = { NS.re[fn](s, p, o, ctx, extra) }
  return ctx.pos, unpack(r, 1, 3)
end
local function F(m) return "[" .. tostring(m[0]) .. "|" .. tostring(m[1]) .. "]" end
'''
OUR_RUNNER = HELPERS + RUNNER.replace("{ NS = NS, PACK =", "{ NS = NS, GM = GM, CTX = CTX, F = F, PACK =")
assert OUR_RUNNER != HELPERS + RUNNER


def L(s):
    """A Lua long-bracket-free string literal."""
    out = []
    for ch in s.encode():
        c = chr(ch)
        out.append(c if (c.isalnum() or c in " !#$%&'()*+,-./:;<=>?@[]^_`{|}~") else "\\%d" % ch)
    return '"' + "".join(out) + '"'


SUBJECTS = ["hello", "hello world", "", "a\nb\nc", "aXbxc", "abab", "xab", "123 45 6", "caf\u00e9 \u00e9t\u00e9"]
PATTERNS = ["l+", "(l)(x)?", "(?<n>l)(?<m>o)?", "^h", "o$", "", "x*", "\\d+", "(a|b)+", "[a-z]+", "(\\w)(\\w)",
            "\\bw", "\u00e9", ".", "^.$", "(?<a>h)|(?<a>e)", "a.b", "^b", "(?|(?<a>a)|(?<a>b))", "X", "a b",
            "(?:x)?(b)", "((a)|(c))+"]
OPTIONS = ["", "i", "m", "s", "x", "u", "j", "o", "jo", "d", "D", "J", "a", "ijo", "sm", "dj", "U", "Dd"]
BAD_PATTERNS = ["(abc", "a[b", "x{2,1}", "a\\", "(?<n>", "(?<a>h)(?<a>e)", "*a", "a)", "[z-a]", "(?P<1>x)", "\\k<q>"]
TEMPLATES = ["${1", "$1x", "$10", "${}", "$-", "$ ", "${12}", "${1}2", "$0$1$2", "a$$b", "$$", "${01}", "$_",
             "${a}", "$", "x", "", "<$0>", "$2$1", "${0}", "${1a}", "$9999999999"]


def cases():
    g = {}
    for fn in ("match", "find", "gmatch", "sub", "gsub"):
        items = []
        for o in OPTIONS:
            for p in PATTERNS:
                for s in SUBJECTS:
                    if o in ("U", "Dd") and s not in ("hello", "caf\u00e9 \u00e9t\u00e9"):
                        continue  # U skips the UTF-8 check: only valid UTF-8 (else undefined)
                    if fn == "gmatch":
                        items.append("GM(NS, %s, %s, %s)" % (L(s), L(p), L(o)))
                    elif fn in ("sub", "gsub"):
                        items.append("NS.re.%s(%s, %s, '<$0|$1>', %s)" % (fn, L(s), L(p), L(o)))
                    else:
                        items.append("NS.re.%s(%s, %s, %s)" % (fn, L(s), L(p), L(o)))
        g[fn] = items
    g["bad"] = (["NS.re.%s('hello', %s)" % (fn, L(p)) for fn in ("match", "find", "gmatch") for p in BAD_PATTERNS]
                + ["NS.re.%s('hello', %s, 'x')" % (fn, L(p)) for fn in ("sub", "gsub") for p in BAD_PATTERNS]
                + ["NS.re.%s('hello', 'l', %s)" % (fn, L(o)) for fn in ("match", "find", "sub")
                   for o in ["Z", "io k", "ox", "e", "jjZ", "\u00e9"]]
                + ["GM(NS, 'hello', 'l', 'q')", "NS.re.gsub('hello', 'l', 'x', 'w')"])
    g["templates"] = ["NS.re.%s('abcb', '(b)', %s)" % (fn, L(t)) for fn in ("sub", "gsub") for t in TEMPLATES] + [
        "NS.re.gsub('hello', '(l)(x)?', '[$2]')", "NS.re.gsub('hello', 'l', '$1')", "NS.re.gsub('aaa', 'a', '$0', 'd')",
        "NS.re.gsub('hello', '', '-')", "NS.re.gsub('ab', 'x*', '-')", "NS.re.sub('ab', 'x*', '-')",
        "NS.re.gsub('', '^', 'x')", "NS.re.gsub('hello', '\\\\b', '|')"]
    g["functions"] = [
        "NS.re.gsub('hello', 'l', F)", "NS.re.sub('hello', '(l)', F)", "NS.re.gsub('hello', '(l)(x)?', F)",
        "NS.re.gsub('hello', 'l', function(m) return nil end)", "NS.re.gsub('hello', 'l', function(m) return 12 end)",
        "NS.re.gsub('hello', 'l', function(m) return {} end)", "NS.re.gsub('hello', '', F)",
        "NS.re.gsub('hello', 'l', function(m) return NS.re.gsub(m[0], 'l', 'L', 'o') end, 'o')",
        "NS.re.gsub('hello', 'l', function(m) error('boom') end)",
        "NS.re.gsub('hello', '(?<n>l)', function(m) return m.n .. '!' end)",
        "NS.re.gsub('hello', 'l', 7)", "NS.re.gsub('hello', 'l', true)", "NS.re.gsub('hello', 'l', nil)",
        "NS.re.gsub('hello', 'l', {})", "NS.re.gsub('hello', 'l')",
        # a replacement function may wait, as lua-resty-core calls it from Lua
        "NS.re.gsub('abcb', '(b)', function(m) NS.sleep(0.001) return m[1]:upper() end)",
        "NS.re.sub('abcb', '(b)', function(m) NS.sleep(0.001) return '<' .. m[0] .. '>' end, 'jo')"]
    g["ctx"] = ["CTX(NS, '%s', %s, %s, %s, %s)" % (fn, L(s), L(p), L(o), pos)
                for fn in ("match", "find")
                for s, p in [("hello hello", "h\\w+"), ("hello", "$"), ("hello", "l"), ("abab", "ab"), ("hello", "")]
                for o in ("", "a", "jo", "d")
                for pos in ["nil", "-3", "0", "1", "2", "3", "5", "6", "7", "100", "2.7", "'2'", "false", "true"]]
    g["nth"] = ["NS.re.find('hello', '(l)(x)?(?<n>o)?', '', nil, %s)" % n
                for n in ["nil", "-1", "0", "1", "2", "3", "4", "9", "1.5", "'1'"]] + [
        "NS.re.find('ab', '(a)(c)?', '', nil, 2)", "NS.re.find('hello', '(l)', 'd', nil, 1)",
        "NS.re.find('hello', 'l', 'd', nil, 0)"]
    g["args"] = [
        "NS.re.match(nil, 'nil')", "NS.re.match(123, '2')", "NS.re.match(12.5, '\\\\.')", "NS.re.match(true, 'r')",
        "NS.re.match({}, 'table')", "NS.re.find(nil, 'i')", "NS.re.gsub(nil, 'i', 'x')", "GM(NS, 123, '\\\\d')",
        "NS.re.match('a', 'a', nil)", "NS.re.match('a', 'a', nil, nil)", "NS.re.match('a', 'a', '', false)",
        "(function() local r = { x = 1, [5] = 9 } local m = NS.re.match('ab', '(a)', '', nil, r) "
        "return m == r, r.x, r[5], r[0], r[1] end)()",
        "(function() local r = { 'old', 'old2' } NS.re.match('ab', '(a)', '', nil, r) return r[1], r[2] end)()",
        "(function() local r = { n = 'old' } NS.re.match('b', '(?<n>a)?b', '', nil, r) return r.n end)()",
        "NS.re.match('hello', '(?<a>h)(?<a>e)', 'D').a", "NS.re.match('hello', '(?<a>x)?(?<a>e)', 'D').a",
        "NS.re.match('hello', '(?<a>x)?(?<a>y)?', 'D')", "NS.re.match('ab', '(?<x>a)', 'd')",
        "NS.re.match('\\255', '.', 'u')", "NS.re.gsub('h\\195\\169llo', '', '-', 'u')",
        "NS.re.match('\\\\u0041', '\\\\u0041', 'J')", "NS.re.match('A', '\\\\u0041', 'J')",
        "NS.re.match('a', '[]a', 'J')", "NS.re.match('ab', '\\\\1(a)', 'J')",
        "NS.re.match(string.rep('a', 40) .. 'b', '(a|aa)+$', 'j')",
        "NS.re.match(string.rep('a', 40) .. 'b', '(a|aa)+$', '')",
        "NS.re.match(string.rep('a', 100000) .. 'c', '(a|b)*c', 'j')",
        "NS.re.match(string.rep('ab', 5000), '(ab)+', 'o')[1]",
        "NS.re.match('x', string.rep('(a)?', 60) .. 'x')[0]", "#NS.re.match('x', string.rep('(a)?', 60) .. 'x')",
    ]
    return g


CASES = cases()

# Calls where moongate's results are its own (OpenResty raises from inside resty/core/regex.lua,
# e.g. "attempt to get length of local 'regex'"): each way of running mg.re must agree.
OURS = ["NS.re.match('a')", "NS.re.match()", "NS.re.find('a', nil)", "NS.re.match('a', {})", "GM(NS, 'a')",
        "NS.re.gsub('a', 'a', 'b', {})", "NS.re.sub('a', nil, 'b')", "NS.re.match('a', 'a', 5)",
        "NS.re.match('a', 'a', '', 'x')", "NS.re.match('a', 'a', '', nil, 'x')", "NS.re.find('a', 'a', '', 7)",
        "NS.re.find('ab', '(b)', '', nil, 0/0)", "NS.re.find('ab', '(b)', '', nil, 1/0)",
        "NS.re.find('ab', '(b)', '', nil, -1/0)", "CTX(NS, 'match', 'ab', 'b', '', 0/0)",
        "CTX(NS, 'find', 'ab', 'b', 'jo', 1/0)", "CTX(NS, 'find', 'ab', 'b', 'jo', -1/0)",
        "CTX(NS, 'match', 'abab', 'b', 'jo', 2^31)", "NS.re.match('ab', 'b', 'jo', { pos = 2^40 })",
        "NS.re.match(setmetatable({}, { __tostring = function() return 'xyz' end }), 'y')",
        "NS.re.gsub('abc', 'b', setmetatable({}, { __tostring = function() return '[$0]' end }))",
        "NS.re.gsub('abc', 'b', function(m) return setmetatable({}, { __tostring = function() return '!' end }) end)",
        "NS.re.match('a', 'a', 'jo', nil, setmetatable({}, { __newindex = function() error('ni') end }))",
        "NS.re.match('a', '(?<n>a)', 'D', nil, { n = 'x' }).n",
        "NS.re.gsub(string.rep('ab', 300), 'b', '$0$0', 'jo')", "NS.re.gsub(string.rep('ab', 300), '', '-', 'o')"]


def normalize(line):
    # Raised errors: OpenResty's carry resty/core/regex.lua:N:, moongate's none (raised in C).
    line = re.sub(r'^error "/usr/share/lua/5\.1/resty/core/regex\.lua:\d+: ', 'error "', line)
    # PCRE 8's compile messages against PCRE2's: the prefix, message and offset differ.
    return re.sub(r'pcre2?_compile\(\) failed: .*? in \\x22(.*?)\\x22( at \\x22.*?\\x22)?"',
                  r'COMPILE in \\x22\1\\x22"', line)


# mg.re runs through LuaJIT's FFI when the JIT compiler is on (lua_max_run_time = 0) and as
# classic C functions when it is off (the default); "ffi-interp" forces the FFI without the
# compiler. Each must give OpenResty's results, so each runs the whole differential.
IMPLS = {
    "ffi": ("mg.set { lua_max_run_time = 0 }\n", "ffi"),
    "c": ("", "c"),
    "ffi-interp": ('mg.re._impl("ffi")\n', "ffi"),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("openresty")
    locations = {}
    for name, items in CASES.items():
        (d / (name + ".lua")).write_text(OUR_RUNNER + "\nngx.print(run(ngx, %s))\n" % lua_list(items))
        locations["/" + name] = ("file", "%s/%s.lua" % (d, name))
    nginx, port = start_openresty(d, locations)
    ours = {}
    try:
        for impl, (setting, _) in IMPLS.items():
            lua = setting + OUR_RUNNER + "".join(
                'mg.route("=/%s", function(req) return 200, run(mg, %s) end)\n' % (name, lua_list(items))
                for name, items in CASES.items())
            lua += 'mg.route("=/impl", function() return 200, mg.re._impl() .. " " .. ngx.re._impl() end)\n'
            lua += 'mg.route("=/ours", function(req) return 200, run(mg, %s) end)\n' % lua_list(OURS)
            ours[impl] = Gateway(tmp_path_factory.mktemp("moongate-" + impl), lua)
    except BaseException:
        stop_openresty(nginx)
        for g in ours.values():
            g.stop()
        raise
    yield port, {impl: g.port for impl, g in ours.items()}
    stop_openresty(nginx)
    for g in ours.values():
        g.stop()


def lines(port, name):
    r = request(port, path="/" + name)
    assert r.status == 200, (port, name, r.status, r.body[:500])
    return r.body.decode("latin-1").splitlines()


@pytest.mark.parametrize("impl", list(IMPLS))
def test_re_impl_is_chosen_by_the_jit_mode(servers, impl):
    """The worker's choice, made after lua_max_run_time set the JIT mode."""
    want = IMPLS[impl][1]
    assert request(servers[1][impl], path="/impl").body == ("%s %s" % (want, want)).encode()


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("group", list(CASES))
def test_re_matches_openresty(servers, group, impl):
    theirs, ours = servers[0], servers[1][impl]
    t, o = lines(theirs, group), lines(ours, group)
    assert len(t) == len(o) == len(CASES[group]), (len(t), len(o), len(CASES[group]))
    diff = ["%s\n  openresty: %s\n  moongate:  %s" % (c, a[:300], b[:300])
            for c, a, b in zip(CASES[group], t, o) if normalize(a) != normalize(b)]
    assert not diff, "%d of %d differ:\n%s" % (len(diff), len(t), "\n".join(diff[:25]))


def test_impls_agree_beyond_openresty(servers):
    results = {impl: lines(port, "ours") for impl, port in servers[1].items()}
    assert len(results["c"]) == len(OURS)
    for impl, got in results.items():
        diff = ["%s\n  c: %s\n  %s: %s" % (c, a[:300], impl, b[:300])
                for c, a, b in zip(OURS, results["c"], got) if a != b]
        assert not diff, "\n".join(diff)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_compile_errors_keep_openresty_shape(servers, impl):
    """The one normalized difference, shown: PCRE2's message in nginx's format, cut like
    OpenResty's at 127 bytes; both sides say which pattern failed."""
    theirs, ours = servers[0], servers[1][impl]
    t, o = lines(theirs, "bad"), lines(ours, "bad")
    i = CASES["bad"].index("NS.re.match('hello', %s)" % L("(abc"))
    assert t[i] == 'ok nil "pcre_compile() failed: missing ) in \\x22(abc\\x22"'
    assert o[i] == 'ok nil "pcre2_compile() failed: missing closing parenthesis in \\x22(abc\\x22"'
    i = CASES["bad"].index("NS.re.match('hello', %s)" % L("x{2,1}"))
    assert o[i].endswith(' in \\x22x{2,1}\\x22 at \\x22}\\x22"'), o[i]


LONG = r'''
local function pair(NS)
  local _, err = NS.re.match("x", "(" .. string.rep("y", 300))
  return #err .. " " .. err:sub(-10)
end
'''


def test_long_compile_error_is_cut_at_127_bytes(tmp_path):
    nginx, port = start_openresty(tmp_path / "o", {"/t": LONG + "ngx.print(pair(ngx))"})
    try:
        theirs = request(port, path="/t").body
    finally:
        stop_openresty(nginx)
    g = Gateway(tmp_path, LONG + 'mg.route("=/t", function() return 200, pair(mg) end)\n')
    try:
        ours = request(g.port, path="/t").body
    finally:
        g.stop()
    assert theirs == b"127 yyyyyyyyyy" and ours == theirs


JIT = r'''
mg.route("=/jit", function()
  local s = string.rep("a", 100000) .. "c"
  local out = {}
  for _, o in ipairs { "j", "", "jo", "o" } do
    local m, err = mg.re.match(s, "(a|b)*c", o)
    out[#out + 1] = o .. "=" .. (m and #m[0] or tostring(err))
  end
  return 200, table.concat(out, " ")
end)
'''


def test_jit_is_used_for_j(gateway):
    """Only PCRE2's JIT has a machine stack to run out of (32 KiB, as OpenResty's default): the
    same deep backtracking match fails with PCRE 8's JIT_STACKLIMIT (-27) under "j" and
    succeeds in the interpreter without it (which OpenResty's PCRE 8 build crashes on)."""
    g = gateway(JIT)
    assert request(g.port, path="/jit").body == (
        b"j=pcre_exec() failed: -27 =100001 jo=pcre_exec() failed: -27 o=100001")


CACHE = r'''
mg.set { regex_cache_max_entries = 2 }
mg.route("=/cache", function()
  local out = {}
  for round = 1, 3 do
    for _, p in ipairs { "a(b)", "c(d)", "e(f)" } do
      local m = mg.re.match("xabcdef", p, "jo")
      out[#out + 1] = m[0] .. m[1]
      local s, n = mg.re.gsub("xabcdef", p, "<$1>", "o")
      out[#out + 1] = s .. n
    end
  end
  return 200, table.concat(out, " ")
end)
'''


def test_o_cache_is_bounded(gateway):
    g = gateway(CACHE)
    want = " ".join(["abb x<b>cdef1", "cdd xab<d>ef1", "eff xabcd<f>1"] * 3).encode()
    assert request(g.port, path="/cache").body == want
    assert request(g.port, path="/cache").body == want
    deadline = time.time() + 5
    while "regex cache max entries" not in g.log() and time.time() < deadline:
        time.sleep(0.05)
    log = g.log()
    assert log.count("lua exceeding regex cache max entries (2)") == 1, log


ROUTES = r'''
mg.route("=/api/v1/exact", function() return 200, "exact" end)
mg.route("~^/api/v(\\d+)/(?<rest>.*)$", function(req)
  local c = req.captures
  return 200, "re1 " .. c[0] .. " " .. c[1] .. " " .. c[2] .. " " .. c.rest
end)
mg.route("~^/api/", function(req) return 200, "re2" end)
mg.route("/api/", function(req) return 200, "prefix " .. tostring(req.captures) end)
mg.route("~*\\.PNG$", function(req) return 200, "png " .. req.captures[0] end)
mg.route("~^/opt/(a)?(b)", function(req) return 200, tostring(req.captures[1]) .. tostring(req.captures[2]) end)
mg.route("~^/app(/[^/]+)?", "scgi://127.0.0.1:{BACKEND}/", { pathinfo = true })
mg.route("~^/plain/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("/", function() return 200, "root" end)
'''


@pytest.mark.parametrize("path,body", [
    ("/api/v1/exact", b"exact"),
    ("/api/v2/users/7", b"re1 /api/v2/users/7 2 users/7 users/7"),
    ("/api/vx/", b"re2"),
    ("/api/", b"re2"),
    ("/x/IMG.png", b"png .png"),
    ("/x/img.PnG", b"png .PnG"),
    ("/opt/b", b"falseb"),
    ("/other", b"root"),
])
def test_regex_routes(gateway, path, body):
    g = gateway(ROUTES, 1)
    r = request(g.port, path=path)
    assert (r.status, r.body) == (200, body)


@pytest.mark.parametrize("path,script_name,path_info", [
    ("/app/one/two", "/app/one", "/two"),
    ("/app/one", "/app/one", ""),
    ("/app", "/app", ""),
    ("/app/caf%C3%A9/x%20y", "/app/café", "/x y"),
    ("/plain/a/b", "/plain/a/b", None),
])
def test_regex_route_pathinfo(gateway, demo_backend, path, script_name, path_info):
    g = gateway(ROUTES, demo_backend)
    r = request(g.port, path=path)
    d = dict(scgi_vars(r.body))
    assert d["SCRIPT_NAME"] == script_name, d
    if path_info is None:
        assert "PATH_INFO" not in d
    else:
        assert d.get("PATH_INFO", "") == path_info, d


def test_bad_route_regex_names_the_line(tmp_path):
    import subprocess
    from conftest import MOONGATE
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.route("~^/(a", function() end)\n')
    p = subprocess.run([MOONGATE, "-c", str(cfg), "-t"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "init.lua:3: mg.route: bad regular expression \"^/(a\": missing closing parenthesis at offset 4" in p.stderr, p.stderr


def test_explain_shows_regex_route(tmp_path):
    import subprocess
    from conftest import MOONGATE
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n'
                   'mg.route("~*^/API/v(\\\\d+)/", function() return 200, "x" end)\n')
    p = subprocess.run([MOONGATE, "-c", str(cfg), "--explain", "GET /api/v3/x"], capture_output=True, text=True,
                       timeout=30)
    assert "route     ~*^/API/v(\\d+)/ -> " in p.stdout, p.stdout + p.stderr
    assert "captures  $0=/api/v3/ $1=3" in p.stdout, p.stdout
