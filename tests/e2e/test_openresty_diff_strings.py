"""Differential: the string helpers under Debian's nginx + lua-nginx-module (ngx.*) and under
moongate (mg.*), the same Lua expressions, the results compared line by line.

Each case is one Lua expression run in a protected call with `NS` bound to `ngx` or `mg`; its
line is the results, typed and with every byte shown (`ok "a%20b"`, `ok n:3`, `ok nil`,
`error "case:1: ..."`), so a difference in a value, a type, a count of results or an error's
text and position shows. Tables print with their keys sorted; addresses print as 0x?.
The cases: escape_uri over all 256 bytes for each type, unescape_uri and decode_args over
tricky input and every byte, encode_args with keys and values of every byte, base64 over valid,
unpadded, over-padded and invalid input, the digests, HMAC, CRC-32 and quote_sql_str, and every
helper given nil, numbers, booleans, tables, nothing and too many arguments.
"""
import pytest

from conftest import Gateway, request
from openresty import start_openresty, stop_openresty

# One line per case: the results of PACK(expression) under NS, or the error it raised.
RUNNER = r'''
local function q(s)
  return '"' .. s:gsub('[^%w !#$%%&\'()*+,%-./:;<=>?@%[%]^_`{|}~]', function(c)
    return string.format("\\x%02X", c:byte())
  end) .. '"'
end
local show
function show(v, depth)
  local t = type(v)
  if t == "string" then return q(v) end
  if t == "number" then return "n:" .. tostring(v) end
  if t == "table" then
    if (depth or 0) > 3 then return "{...}" end
    local ks = {}
    for k in pairs(v) do ks[#ks + 1] = k end
    table.sort(ks, function(a, b) return show(a, 9) < show(b, 9) end)
    local parts = {}
    for _, k in ipairs(ks) do parts[#parts + 1] = show(k, 9) .. "=" .. show(v[k], (depth or 0) + 1) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  if t == "nil" or t == "boolean" then return tostring(v) end
  return t
end
local function run(NS, cases)
  local out = {}
  local env = setmetatable({ NS = NS, PACK = function(...) return { n = select("#", ...), ... } end },
                           { __index = _G })
  for _, src in ipairs(cases) do
    local f, perr = loadstring("return PACK(" .. src .. ")", "=case")
    local line
    if not f then
      line = "syntax " .. perr
    else
      setfenv(f, env)
      local ok, r = pcall(f)
      if not ok then r = { n = 1, r } end
      local parts = {}
      for j = 1, r.n do parts[j] = show(r[j]) end
      line = (ok and "ok " or "error ") .. table.concat(parts, " ")
    end
    out[#out + 1] = (line:gsub("0x%x+", "0x?"))
  end
  return table.concat(out, "\n") .. "\n"
end
'''


def lua_str(b):
    """A Lua string literal for bytes (decimal escapes for everything but plain ASCII)."""
    out = []
    for c in b:
        ch = chr(c)
        out.append(ch if (ch.isalnum() or ch in " !#$%&'()*+,-./:;<=>?@[]^_`{|}~") else "\\%d" % c)
    return '"' + "".join(out) + '"'


def cases():
    g = {}
    # Item 2: which bytes each escape type escapes, one case per byte and type; the default
    # type; strings mixing them, and the type argument's checks.
    g["escape"] = ["NS.escape_uri(string.char(%d))" % b for b in range(256)]
    g["escape"] += ["NS.escape_uri(string.char(%d), %d)" % (b, t) for t in range(7) for b in range(256)]
    g["escape"] += ["NS.escape_uri(%s)" % lua_str(s) for s in [
        b"", b"a b/\xc3\xa9?&=~", b"!'()*", b"hello", b"100%", b"a+b", bytes(range(256)), b"\x00\x00", b"x" * 5000,
        b"\xff" * 2000]]
    g["escape"] += ["NS.escape_uri('a b/?#%%+', %s)" % t for t in
                    ["0", "1", "2", "3", "4", "5", "6", "7", "-1", "1.5", "5.9", "-0.5", "6.5", "'2'", "false", "nil", "{}"]]
    g["escape"] += ["NS.escape_uri('a b', 2, 'extra')", "NS.escape_uri(nil, 0)", "NS.escape_uri(12, 0)"]
    # Item 4: unescape_uri.
    g["unescape"] = ["NS.unescape_uri(string.format('%%%%%02X', " + str(b) + "))" for b in range(256)]
    g["unescape"] += ["NS.unescape_uri(string.format('%%%%%02x', " + str(b) + "))" for b in range(256)]
    g["unescape"] += ["NS.unescape_uri(string.char(%d))" % b for b in range(256)]
    g["unescape"] += ["NS.unescape_uri(%s)" % lua_str(s) for s in [
        b"", b"+", b"a+b", b"++", b"%2B", b"%2b", b"%", b"%2", b"%zz", b"%%41", b"%4", b"%41%", b"%g1", b"%1g", b"a%",
        b"a%2", b"%%", b"%2%41", b"%+", b"%2+", b"a?b%20", b"%3F", b"%2F", b"%00x", b"%E9t%C3%A9", b"%u0041", b"%%%",
        b"a%20b%", b"a%4", b"%a", b"%A%41", b"%C3%A9+%C3%A9", b"a%20b%2F%C3%A9+", b"%41" * 3000, b"+" * 3000]]
    # Item 5: decode_args.
    g["decode_args"] = ["NS.decode_args(%s)" % lua_str(s) for s in [
        b"a", b"a=", b"=x", b"=", b"a=1&a=2", b"a=1&a=2&a=3", b"&&", b"&", b"a&&b", b"a=%zz", b"a+b=c+d", b"a%20b=c%20d",
        b"a=1&b", b"a&a", b"a&a=1", b"a=1&a", b"a==b", b"a=b=c", b"%3D=%26", b"%3d", b"a=1&=2&b=3", b"=&=", b"&a",
        b"a&", b"", b"a=x;b=y", b"a[]=1&a[]=2", b"A=1&a=2", b"%61=1&a=2", b"a=%", b"a=%2", b"a=%4", b"a=%2541",
        b"%00=1", b"a=\x00b", b"a=1&a=&a", b"a=&a=", b"+=+", b"a=1+2", b"a=%2B", b"q=caf%C3%A9&x=%FF",
        b"a=1&b=x+y&a=2&c&e=%41"]]
    g["decode_args"] += ["NS.decode_args(%s, %s)" % (lua_str(s), m) for s, m in [
        (b"a=1&b=2&c=3", "0"), (b"a=1&b=2&c=3", "1"), (b"a=1&b=2&c=3", "2"), (b"a=1&b=2&c=3", "3"),
        (b"a=1&b=2&c=3", "-1"), (b"&&a=1&b=2", "2"), (b"&&a=1&b=2", "3"), (b"a&b&c", "2"), (b"a=1&b=2&", "2"),
        (b"a=1&b=2&c=3", "1.9"), (b"a=1&b=2", "'1'"), (b"a=1", "'x'"), (b"a=1", "nil"), (b"a=1", "true"),
        (b"a=1", "2, 3"), (b"", "1")]]
    g["decode_args"] += [
        "(function() local t = {} for i = 1, 150 do t[#t+1] = 'k' .. i .. '=' .. i end "
        "local r, e = NS.decode_args(table.concat(t, '&')%s) local n = 0 for _ in pairs(r) do n = n + 1 end "
        "return n, r.k100, r.k101, e end)()" % m for m in ["", ", 0", ", 100", ", 101", ", 149", ", 150"]]
    g["decode_args"] += ["NS.decode_args('k=' .. string.char(%d) .. '&' .. string.char(%d) .. '=v')" % (b, b)
                         for b in range(256)]
    # encode_args (item 2's escaping, as a key and as a value; the value types and lists).
    g["encode_args"] = ["NS.encode_args({k = string.char(%d)})" % b for b in range(256)]
    g["encode_args"] += ["NS.encode_args({[string.char(%d)] = true})" % b for b in range(256)]
    g["encode_args"] += ["NS.encode_args(%s)" % t for t in [
        "{a=1}", "{a='x y'}", "{a=true}", "{a=false}", "{a={1,2}}", "{a={}}", "{[1]='x'}", "{[1.5]='x'}",
        "{[true]='x'}", "{a=nil}", "{a=1.5}", "{a=-0.0}", "{a=1e100}", "{a=0/0}", "{a=1/0}", "{a=-1/0}", "{a=2^53}",
        "{a=1/3}", "{a={true,false,'x'}}", "{['a b']='c&d'}", "{['']='x'}", "{['']=true}", "{a=''}", "{a={''}}",
        "{a={{}}}", "{a=print}", "{a={print}}", "{a={1,nil,3}}", "{a={n=1}}", "{a={[2]='x'}}", "{a={x={}}}",
        "{[{}]=1}", "{a=setmetatable({}, {__tostring=function() return 'T' end})}", "{a={false}}",
        "{a={false,false}}", "{a={true}}", "{}", "{a='%'}", "{['k=v']='1=2'}", "{a='!*()\\''}", "{[2]=true}",
        "{[2]=false}", "{[1]={'a'}}", "{['a b']={true,'x y'}}", "{a=false, b=1}", "{a={false}, b=1}",
        "{a=coroutine.create(function() end)}", "{a={coroutine.create(function() end)}}", "{a=string.rep('x y', 2000)}",
        "{[string.rep('k', 3000)]=true}", "{a={1,2,3,4,5,6,7,8,9,10}}", "{a={'é', 'x&y', 7}}"]]
    g["encode_args"] += ["NS.encode_args()", "NS.encode_args(nil)", "NS.encode_args('a=1')", "NS.encode_args(1)",
                         "NS.encode_args({a=1}, 2)", "NS.encode_args({a=1}, nil)"]
    # OpenResty's order of several keys is the table's, which differs between processes: the
    # same set of pairs, compared sorted.
    g["encode_args"] += [
        "(function() local s = NS.encode_args(%s) local p = {} for x in s:gmatch('[^&]+') do p[#p+1] = x end "
        "table.sort(p) return table.concat(p, '&'), #s end)()" % t for t in [
            "{b='x y', a=1, c=true, d=false, l={'1','2'}}", "{['']=true, a=1}", "{x={'1','2'}, y={'3'}, z='4'}",
            "{['a b']={'x', 'y'}, c = 'd'}"]]
    # Item 6 and 14: base64.
    corpus = [b"", b"Zg==", b"Zg=", b"Zg", b"Z", b"Zm8=", b"Zm8", b"Zm9v", b"Zm9v=", b"Zm9v==", b"Zm9v===", b"Zm9v====",
              b"Zm9v=====", b"Zm=v", b"Zm==", b"Z===", b"====", b"=", b"==", b"Zg==Zg==", b"Zm9vYmFy", b"Zm9vYmE",
              b"Zm9vYg", b"Zm9vY", b"Zm 9v", b" Zm9v", b"Zm9v\n", b"Zm9v\r\n", b"Zm-_", b"Zm+/", b"Zm9v!", b"Zg=a",
              b"Zh==", b"Zh", b"Zm9=", b"Zm8=x", b"Zm8==x", b"YQ", b"YWI", b"YWJj", b"_-_-", b"////", b"++++", b"A",
              b"AA", b"AAA", b"AAAA", b"AAAAA", b"Zg=====", b"Z=g=", b"Zm9vYmFyYmF6", b"\x00", b"Zm\x00v", b"Zg==\x00",
              b"Zm8\n=", b"aGVsbG8gd29ybGQ=", b"aGVsbG8gd29ybGQ", b"aGVsbG8gd29ybGQ==", b"8J+Ygg==", b"8J+Ygg", b"SGk",
              b"SGk=", b"SGk==", b"SGk===", b"SG==k", b"S", b"SG", b"SGV", b"Zm9v\t", b"Zm9\x80", b"Zn==", b"Zo==",
              b"Zp==", b"Zm9w", b"Zm8x", b"QUJD" * 2000, b"QUJD" * 2000 + b"QQ", b"QUJD" * 2000 + b"Q",
              b"QUJD" * 2000 + b"!", b"AAECaGVsbG8="]
    g["base64"] = ["NS.decode_base64(%s)" % lua_str(s) for s in corpus]
    g["base64"] += ["NS.decode_base64('Zm9v' .. string.char(%d) .. 'A==')" % b for b in range(256)]
    g["base64"] += ["NS.decode_base64(string.char(%d) .. 'AAA')" % b for b in range(256)]
    g["base64"] += ["NS.decode_base64(%s)" % a for a in ["nil", "", "12", "true", "false", "{}", "'Zg', 'x'"]]
    plain = [b"", b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", b"\x00", b"\xff\xfe\xfd", b"hello world",
             b"\x00\x01\x02hello", bytes(range(256)), b"\xfa" * 3001]
    g["base64"] += ["NS.encode_base64(%s%s)" % (lua_str(s), p) for s in plain for p in ["", ", true", ", false", ", nil"]]
    g["base64"] += ["NS.encode_base64('f', %s)" % a for a in ["1", "0", "'true'", "{}"]]
    g["base64"] += ["NS.encode_base64(%s)" % a for a in ["nil", "", "12", "1.5", "true", "false", "nil, true"]]
    g["base64"] += [
        "(function() local o = {} for n = 0, 64 do local s = string.rep('\\250', n) .. string.sub('abc', 1, n %% 3) "
        "o[#o+1] = tostring(NS.decode_base64(NS.encode_base64(s%s)) == s) end return table.concat(o) end)()" % p
        for p in ["", ", true"]]
    # Item 15 and the digests: hex and raw MD5, SHA-1, HMAC-SHA1, CRC-32, quote_sql_str.
    inputs = [b"", b"abc", b"The quick brown fox jumps over the lazy dog", bytes(range(256)), b"x" * 100000]
    g["digest"] = ["NS.%s(%s)" % (f, lua_str(s)) for f in ["md5", "md5_bin", "sha1_bin", "crc32_short", "crc32_long"]
                   for s in inputs]
    g["digest"] += ["NS.%s(%s)" % (f, a) for f in ["md5", "md5_bin", "sha1_bin", "crc32_short", "crc32_long"]
                    for a in ["", "nil", "12", "1.5", "true", "false", "'a', 'b'",
                              "setmetatable({}, {__tostring = function() return 'abc' end})",
                              "setmetatable({}, {__tostring = function() error('boom') end})"]]
    g["digest"] += ["#NS.md5({})", "#NS.md5_bin(print)", "#NS.sha1_bin({})", "type(NS.crc32_long({}))"]
    g["digest"] += ["NS.hmac_sha1(%s)" % a for a in [
        "'k', 'v'", "'', ''", "'key', 'The quick brown fox jumps over the lazy dog'", "string.rep('k', 100), 'v'",
        "string.rep('k', 64), string.rep('v', 1000)", "'k\\0k', 'v\\0v'", "1, 2", "nil, 'v'", "'k', nil", "'k'", "",
        "'k', 'v', 'x'", "true, 'v'", "'k', {}"]]
    g["digest"] += ["NS.quote_sql_str(string.char(%d))" % b for b in range(256)]
    g["digest"] += ["NS.quote_sql_str(%s)" % a for a in [
        "''", "\"a'b\\\"c\\\\d\\n\\r\\026\\0e\\b\\t\"", "'caf\\195\\169'", "1", "1.5", "nil", "true", "", "'a', 'b'",
        "{}", "string.rep(\"'\", 3000)"]]
    # Item 3 for the rest: what nil, numbers, booleans, tables and nothing give.
    g["args"] = ["NS.%s(%s)" % (f, a) for f in ["escape_uri", "unescape_uri"]
                 for a in ["", "nil", "12", "1.5", "-0.0", "1e100", "true", "false", "{}", "string.rep",
                           "setmetatable({}, {__tostring = function() return 'a b' end})",
                           "setmetatable({}, {__tostring = function() error('boom') end})"]]
    return g


CASES = cases()


def lua_list(items):
    return "{\n" + ",\n".join("[==[%s]==]" % c for c in items) + "\n}"


def start_nginx(d, groups):
    """nginx + lua-nginx-module in folder d answering /NAME with the lines of each group."""
    locations = {}
    for name, items in groups.items():
        (d / (name + ".lua")).write_text(RUNNER + "\nngx.print(run(ngx, %s))\n" % lua_list(items))
        locations["/" + name] = ("file", "%s/%s.lua" % (d, name))
    return start_openresty(d, locations)


def start_moongate(d, groups):
    """moongate in folder d answering /NAME with the lines of each group."""
    lua = RUNNER + "".join('mg.route("=/%s", function(req) return 200, run(mg, %s) end)\n' % (name, lua_list(items))
                           for name, items in groups.items())
    return Gateway(d, lua)


def lines(port, name):
    r = request(port, path="/" + name)
    assert r.status == 200, (port, name, r.status, r.body[:500])
    return r.body.decode("latin-1").splitlines()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(nginx's port, moongate's port), each serving every group of CASES."""
    nginx, port = start_nginx(tmp_path_factory.mktemp("openresty"), CASES)
    try:
        g = start_moongate(tmp_path_factory.mktemp("moongate"), CASES)
    except BaseException:
        stop_openresty(nginx)
        raise
    yield port, g.port
    stop_openresty(nginx)
    g.stop()


@pytest.mark.parametrize("group", list(CASES))
def test_string_helpers_match_openresty(servers, group):
    theirs_port, ours_port = servers
    t, o = lines(theirs_port, group), lines(ours_port, group)
    assert len(t) == len(o) == len(CASES[group]), (len(t), len(o), len(CASES[group]))
    diff = ["%s\n  openresty: %s\n  moongate:  %s" % (c, a[:300], b[:300])
            for c, a, b in zip(CASES[group], t, o) if a != b]
    assert not diff, "%d of %d cases differ:\n%s" % (len(diff), len(t), "\n".join(diff[:40]))


# Where OpenResty's result is a fault of its own, moongate gives the result OpenResty gives
# for the same input without the fault (docs/lua-api.md, "String helpers"), and this says so.
DELIBERATE = [
    # encode_args counts the escapes of a key whose value yields no pair (false, {}, {false})
    # in its output's length, then finds it wrote less: "buffer error". Keys that need no
    # escaping give "" (or the other pairs), and so does moongate for every key.
    ("NS.encode_args({['a b']=false})", 'error "case:1: buffer error: 0 != 2"', 'ok ""'),
    ("NS.encode_args({['a b']={}})", 'error "case:1: buffer error: 0 != 2"', 'ok ""'),
    ("NS.encode_args({['a b']={false}})", 'error "case:1: buffer error: 0 != 2"', 'ok ""'),
    ("NS.encode_args({['a b']=false, c=1})", 'error "case:1: buffer error: 3 != 5"', 'ok "c=1"'),
]


def test_deliberate_differences_are_the_known_ones(tmp_path):
    groups = {"deliberate": [c for c, _, _ in DELIBERATE]}
    (tmp_path / "openresty").mkdir()
    (tmp_path / "moongate").mkdir()
    nginx, port = start_nginx(tmp_path / "openresty", groups)
    try:
        g = start_moongate(tmp_path / "moongate", groups)
        try:
            theirs, ours = lines(port, "deliberate"), lines(g.port, "deliberate")
        finally:
            g.stop()
    finally:
        stop_openresty(nginx)
    assert theirs == [t for _, t, _ in DELIBERATE]
    assert ours == [o for _, _, o in DELIBERATE]


def test_encode_args_orders_keys_and_moongate_only_names(gateway):
    """encode_args sorts its keys (one text for one table in every worker); mg.sha1 is
    mg.sha1_bin's digest, mg.sha256 and mg.hmac_sha256 are raw, mg.to_hex lower-case."""
    g = gateway(r'''
mg.route("=/t", function(req)
  return 200, table.concat({
    mg.encode_args({ b = "x y", a = 1, c = true, d = false, l = { "1", "2" }, ["a\0b"] = 1, aa = 2 }),
    mg.to_hex(mg.sha1("abc")), tostring(mg.sha1("abc") == mg.sha1_bin("abc")), mg.to_hex(mg.sha256("abc")),
    mg.to_hex(mg.hmac_sha256("key", "The quick brown fox jumps over the lazy dog")),
    mg.to_hex(mg.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")),
  }, "\n")
end)
''')
    lines = request(g.port, path="/t").body.decode().split("\n")
    assert lines == [
        "a=1&a%00b=1&aa=2&b=x%20y&c&l=1&l=2",
        "a9993e364706816aba3e25717850c26c9cd0d89d", "true",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
    ]
