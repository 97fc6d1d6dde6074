"""Differential: the shared dictionary, value by value, under Debian's nginx + lua-nginx-module
(ngx.shared.DICT, with lua-resty-core) and under moongate (the dictionary of mg.shared).

Each case is one Lua text run by both servers in a content handler, on a dictionary of its own
(`D`, declared with the case's size under both), with `SLEEP` for the server's sleep. `P(...)`
writes one line: how many values, then each value with its type; `E(f, ...)` writes what a
call raised, without the position (a position names the server's own chunk). The lines of the
two servers must be the same, in order. Nothing here depends on what differs by design: the
allocators (how many entries fit, what free_space reports beyond its type) and the clock
(wall time under nginx, monotonic under moongate; a ttl is compared to the millisecond only
right after it was set)."""
import pytest

from conftest import Gateway, request
from openresty import start_openresty, stop_openresty

PRELUDE = r'''
local lines = {}
local function show(v)
  if type(v) == "string" then
    if #v > 40 then return "string(" .. #v .. ")" end
    return string.format("%q", v)
  end
  if type(v) == "table" then
    local t = {}
    for i = 1, #v do t[i] = show(v[i]) end
    return "{" .. table.concat(t, ",") .. "}"
  end
  if type(v) == "number" then return "n:" .. string.format("%.14g", v) end
  return tostring(v)
end
local function P(...)
  local t = { select("#", ...) .. ":" }
  for i = 1, select("#", ...) do t[#t + 1] = show((select(i, ...))) end
  lines[#lines + 1] = table.concat(t, " ")
end
local function E(f, ...)
  local ok, err = pcall(f, ...)
  if ok then lines[#lines + 1] = "no error" return end
  lines[#lines + 1] = "error: " .. tostring(err):gsub("^.-:%d+: ", "")
end
'''

# name: (size, Lua). Each case's dictionary is fresh.
CASES = {
    # A nil, empty or over-long key is a result, not an error, for every method; 65535 bytes
    # is the longest key.
    "bad_keys": ("1m", r'''
local long, longest = string.rep("k", 65536), string.rep("k", 65535)
for _, k in ipairs({ "nil", "", long }) do
  if k == "nil" then k = nil end
  P(D:get(k)) P(D:get_stale(k)) P(D:set(k, 1)) P(D:safe_set(k, 1)) P(D:add(k, 1))
  P(D:safe_add(k, 1)) P(D:replace(k, 1)) P(D:incr(k, 1)) P(D:incr(k, 1, 0)) P(D:delete(k))
  P(D:ttl(k)) P(D:expire(k, 1)) P(D:lpush(k, 1)) P(D:rpush(k, 1)) P(D:lpop(k)) P(D:rpop(k))
  P(D:llen(k))
end
P(D:set(longest, "v")) P(D:get(longest)) P(D:ttl(longest)) P(D:incr(longest, 1))
P(D:lpush(longest .. "", 1)) P(#D:get_keys(0))
'''),
    # Keys that are not strings: numbers and booleans become their tostring.
    "key_types": ("1m", r'''
P(D:set(1, "one")) P(D:get("1")) P(D:get(1)) P(D:set(1.5, "x")) P(D:get("1.5"))
P(D:set(true, "t")) P(D:get("true")) P(D:get(true)) P(D:incr(2, 1, 0)) P(D:get("2"))
P(D:ttl(1)) P(D:expire(1, 0)) P(D:delete(1)) P(D:get(1))
P(D:lpush(3, "a")) P(D:llen("3")) P(D:rpop(3))
E(D.lpush, D, true, 1) E(D.llen, D, false)
'''),
    # Values come back with their types; nil deletes; other types are refused.
    "value_types": ("1m", r'''
local vals = { "str", "", "a\0b", 1.5, 42, -7, 0, 2^53, 1e300, -1e-300, 1/0, -1/0, true, false }
for i, v in ipairs(vals) do
  P(D:set("k" .. i, v)) P(D:get("k" .. i))
end
P(D:set("k1", nil)) P(D:get("k1")) P(D:set("never", nil))
P(D:set("t", {})) P(D:set("t", print)) P(D:add("t", {})) P(D:replace("k2", {})) P(D:safe_set("t", {}))
P(D:add("t", nil)) P(D:replace("k2", nil)) P(D:safe_add("t", nil)) P(D:get("t"))
P(D:lpush("l", true)) P(D:lpush("l", {})) P(D:lpush("l", nil)) P(D:get("l"))
E(D.lpush, D, "l") E(D.lpop, D) E(D.llen, D)
'''),
    # What each store returns.
    "store_results": ("1m", r'''
P(D:get("missing")) P(D:get_stale("missing"))
P(D:set("a", 1)) P(D:set("a", 2)) P(D:set("a", "longer value")) P(D:add("a", 3)) P(D:add("b", 3))
P(D:replace("zz", 1)) P(D:replace("a", "r")) P(D:get("a")) P(D:get("zz"))
P(D:safe_set("a", 5)) P(D:safe_add("a", 6)) P(D:safe_add("c", 7)) P(D:get("c"))
P(D:delete("a")) P(D:delete("a")) P(D:get("a")) P(D:delete("never"))
E(D.set, D, "x", 1, -1) E(D.add, D, "x", 1, -0.5) E(D.safe_set, D, "x", 1, -1) E(D.replace, D, "b", 1, -1)
E(D.set, D, nil, 1, -1) E(D.set, D, "x", 1, "10") E(D.set, D, "x", 1, {}) E(D.set, D, "x", 1, true)
P(D:set("x", 1, false)) P(D:ttl("x")) P(D:get("x"))
'''),
    # User flags: the third argument after the ttl, the second result of get.
    "flags": ("1m", r'''
P(D:set("a", "v", 0, 7)) P(D:get("a")) P(D:get_stale("a"))
P(D:set("a", "v", 0, 0)) P(D:get("a")) P(D:get_stale("a"))
P(D:set("n", 10, 0, 3)) P(D:incr("n", 1)) P(D:get("n"))
P(D:add("b", true, 0, 9)) P(D:get("b")) P(D:replace("b", false, 0, 11)) P(D:get("b"))
P(D:replace("b", "no flags")) P(D:get("b"))
P(D:safe_set("c", 1, 0, 4294967295)) P(D:get("c")) P(D:safe_add("d", 1, 0, 2147483648)) P(D:get("d"))
P(D:set("e", 1, 0, -1)) P(D:get("e")) P(D:set("f", 1, 0, 5.9)) P(D:get("f"))
P(D:set("g", 1, nil, 8)) P(D:get("g")) P(D:incr("h", 1, 0)) P(D:get("h"))
P(D:set("n", 99, 0, 3)) P(D:set("n", 98)) P(D:get("n"))
E(D.set, D, "x", 1, 0, "3") E(D.set, D, "x", 1, 0, true) E(D.set, D, "x", 1, 0, {}) P(D:set("x", 1, 0, false)) P(D:get("x"))
P(D:set("y", 1, 0, 0/0)) P(D:get("y")) P(D:set("y", 1, 0, -2147483649)) P(D:get("y")) P(D:set("y", 1, 0, -2147483648.5)) P(D:get("y"))
'''),
    "incr": ("1m", r'''
P(D:incr("n", 1)) P(D:incr("n", 1, 10)) P(D:incr("n", 1, 10)) P(D:incr("n", 0.5)) P(D:incr("n", -20))
P(D:incr("n", "2")) P(D:get("n"))
P(D:set("s", "str")) P(D:incr("s", 1)) P(D:incr("s", 1, 0)) P(D:set("b", true)) P(D:incr("b", 1))
P(D:lpush("l", 1)) P(D:incr("l", 1)) P(D:incr("l", 1, 0))
P(D:incr("i", 5, 0, 100)) P(D:ttl("i")) P(D:incr("i", 5, 0, 1)) P(D:ttl("i"))
P(D:incr("j", 1, "3")) P(D:incr("k", 1, 0, "2")) P(D:ttl("k")) P(D:incr("m", 1, false))
E(D.incr, D, "x", 1, nil, 10) E(D.incr, D, "x", 1, 0, -1) E(D.incr, D, "x", 1, {}) E(D.incr, D, "x", 1, 0, {})
E(D.incr, D, "x", nil) E(D.incr, D, "x", "abc") E(D.incr, D, "x") P(D:get("x"))
'''),
    "ttl_and_expire": ("1m", r'''
P(D:set("a", 1)) P(D:ttl("a")) P(D:ttl("missing")) P(D:expire("missing", 1)) P(D:expire("missing", -1))
P(D:set("t", 1, 10)) P(D:ttl("t")) P(D:expire("t", 5)) P(D:ttl("t")) P(D:expire("t", 0)) P(D:ttl("t"))
P(D:set("u", 1, 0.2)) P(D:expire("u", -1)) P(D:ttl("u")) P(D:expire("u", -100)) P(D:ttl("u"))
P(D:set("v", 1, 0.0004)) P(D:ttl("v")) P(D:set("w", 1, 0.25)) P(D:ttl("w")) P(D:expire("a", 2.5)) P(D:ttl("a"))
E(D.expire, D, "a") E(D.expire, D, nil) P(D:expire(nil, 1)) E(D.ttl, D)
P(D:lpush("l", 1)) P(D:expire("l", 7)) P(D:ttl("l"))
SLEEP(0.4)
P(D:get("w")) P(D:get("u")) P(D:get("v")) local t = D:ttl("l") P(t > 6.5 and t < 7)
'''),
    # An expired entry stays until something frees it: get_stale sees it, ttl goes negative,
    # expire brings it back, add and incr take its place.
    "stale": ("1m", r'''
P(D:set("live", "l", 0, 3)) P(D:get_stale("live"))
P(D:set("a", "old", 0.1, 5)) P(D:set("b", 2, 0.1)) P(D:set("c", true, 0.1)) P(D:set("d", "d", 0.1))
P(D:set("e", 5, 0.1)) P(D:lpush("f", "x")) P(D:expire("f", 0.1))
SLEEP(0.3)
P(D:get("a")) P(D:get_stale("a")) P(D:get_stale("b")) P(D:get_stale("c")) P(D:get("missing"))
local t = D:ttl("a") P(type(t), t < 0)
P(D:get_keys(0)) P(D:expire("a", 10)) P(D:get("a")) P(D:get_stale("a"))
P(D:add("b", "new")) P(D:get_stale("b")) P(D:incr("c", 1)) P(D:incr("c", 1, 10)) P(D:get_stale("c"))
P(D:replace("d", 1)) P(D:get_stale("d")) P(D:safe_add("e", 9)) P(D:get("e"))
P(D:get_stale("f")) P(D:lpop("f")) P(D:llen("f")) P(D:lpush("f", "y")) P(D:lpop("f"))
P(D:get_keys(0))
'''),
    # The store functions, get, incr and the list functions free up to two expired entries at
    # the least recently used end first; get_stale, ttl and expire free nothing.
    "lazy_freeing": ("1m", r'''
for i = 1, 5 do D:set("x" .. i, i, 0.1) end
P(D:set("keep", 1))
SLEEP(0.3)
local function left() local t = {} for i = 1, 5 do t[i] = D:ttl("x" .. i) ~= nil end P(t) end
left() P(D:set("y", 1)) left() P(D:get_stale("x5")) P(D:ttl("x4") < 0) left()
P(D:incr("z", 1, 0)) left() P(D:get("y")) left()
for i = 1, 3 do D:set("l" .. i, i, 0.1) end
SLEEP(0.3)
P(D:llen("q")) P(D:expire("l3", 0)) P(D:lpush("q", 1)) P(D:lpop("q")) P(D:flush_expired()) P(D:get_keys(0))
'''),
    # flush_all makes everything stale (and frees the three least recently used);
    # flush_expired frees what is stale, at most max of them.
    "flush": ("1m", r'''
for i = 1, 6 do D:set("k" .. i, i, 0, i) end
D:get("k1")
D:flush_all()
for i = 1, 6 do P(D:get("k" .. i)) P(D:get_stale("k" .. i)) end
P(D:get_keys(0)) P(D:add("k6", "again")) P(D:get("k6"))
P(D:flush_expired(1)) P(D:flush_expired(0)) P(D:flush_expired())
for i = 1, 6 do P(D:get_stale("k" .. i)) end
for i = 1, 8 do D:set("t" .. i, i, 0.1) end
D:set("live", 1)
SLEEP(0.3)
P(D:flush_expired(3)) P(D:flush_expired(-1)) P(D:flush_expired(2)) P(D:flush_expired()) P(D:get_keys(0))
E(D.flush_expired, D, "x") E(D.flush_expired, D, 1, 2) P(D:flush_all())
'''),
    # get_keys: the least recently used first; max defaults to 1024, 0 means all.
    "get_keys": ("4m", r'''
P(D:get_keys()) P(D:get_keys(0))
for _, k in ipairs({ "a", "b", "c", "d" }) do D:set(k, 1) end
P(D:get_keys()) P(D:get_keys(2)) P(D:get_keys(0)) P(D:get_keys(-1))
D:get("a") P(D:get_keys(0)) D:incr("b", 1) P(D:get_keys(0)) D:ttl("c") D:expire("c", 100) P(D:get_keys(0))
D:add("d", 2) P(D:get_keys(0)) D:replace("c", 2) P(D:get_keys(0)) D:get_stale("a") P(D:get_keys(0))
D:lpush("l", 1) D:llen("b") D:llen("d") P(D:get_keys(0)) D:get("missing") P(D:get_keys(1))
D:set("e", 1, 0.1) SLEEP(0.3) P(D:get_keys(0))
for i = 1, 1100 do D:set("many" .. i, i) end
P(#D:get_keys()) P(#D:get_keys(0)) P(#D:get_keys(1500)) P(D:get_keys(1)) P(D:get_keys(2.9))
E(D.get_keys, D, "x") E(D.get_keys, D, 1, 2) P(#D:get_keys("2")) E(D.get_keys, D, nil)
'''),
    "lists": ("1m", r'''
P(D:lpush("l", "a")) P(D:lpush("l", 2)) P(D:rpush("l", "c")) P(D:rpush("l", 4.5)) P(D:llen("l"))
P(D:lpop("l")) P(D:rpop("l")) P(D:llen("l")) P(D:lpop("l")) P(D:lpop("l")) P(D:lpop("l"))
P(D:llen("l")) P(D:get("l")) P(D:rpop("l")) P(D:rpop("missing")) P(D:llen("missing"))
P(D:set("s", "str")) P(D:lpush("s", 1)) P(D:rpush("s", 1)) P(D:lpop("s")) P(D:rpop("s")) P(D:llen("s"))
P(D:rpush("m", "")) P(D:rpush("m", string.rep("x", 5000))) P(D:lpush("m", -0.25)) P(D:get("m")) P(D:get_stale("m"))
P(D:ttl("m")) P(D:set("m", "replaced")) P(D:get("m")) P(D:llen("m")) P(D:lpush("m", 1))
'''),
    "lists_argument_count": ("1m", r'''
E(D.lpush, D, "n") E(D.rpush, D, "n", 1, 2) E(D.lpop, D, "n", 1) E(D.llen, D, "n", 1) E(D.llen, D)
E(D.get, D) E(D.get, D, "a", "b") P(D:get("a", "b"))
'''),
    # safe_set and safe_add never evict: "no memory" where set and add would evict.
    "safe_modes_when_full": ("256k", r'''
local i, ok, err, forcible = 0
repeat
  i = i + 1
  ok, err, forcible = D:set(string.format("k%05d", i), string.rep("v", 200))
until forcible or i > 100000
P(ok, err, forcible, i > 100)
local v = string.rep("w", 200)
P(D:safe_set("k99998", v)) P(D:safe_add("k99999", v)) P(D:get("k99998"))
P(D:safe_add(string.format("k%05d", i), v)) P(D:safe_set(string.format("k%05d", i), v))
P(D:get(string.format("k%05d", i)))
P(D:safe_set(string.format("k%05d", i), string.rep("w", 3000))) P(D:get(string.format("k%05d", i)))
P(D:safe_set("k99997", nil)) P(D:safe_add(string.format("k%05d", i - 1), 1))
P(D:add("k99999", v)) P(D:get("k99999") == v)
'''),
    # A value that cannot fit is "no memory" (forcible when others were evicted for it in
    # vain), and a key too big with it; a large value that fits is stored.
    "values_too_big": ("1m", r'''
P(D:set("big", string.rep("x", 2 * 1024 * 1024))) P(D:safe_set("big", string.rep("x", 1024 * 1024)))
P(D:add("big", string.rep("x", 1024 * 1024 + 1))) P(D:get("big"))
for i = 1, 20000 do D:set(string.format("s%05d", i), "v") end
P(D:set("huge", string.rep("x", 600 * 1024)))
P(D:get("huge")) P(D:get("s20000"))
P(D:set(string.rep("k", 65535), string.rep("x", 1024 * 1024)))
P(D:lpush("list", string.rep("x", 2 * 1024 * 1024))) P(D:get("list"))
'''),
    "large_values": ("4m", r'''
P(D:set("big", string.rep("x", 1536 * 1024))) P(#D:get("big")) P(D:set("big", "small")) P(D:get("big"))
P(D:rpush("l", string.rep("y", 1100 * 1024))) P(#D:rpop("l"))
'''),
    # A full dictionary evicts the least recently used: every set succeeds, the newest stays.
    "eviction": ("256k", r'''
local evicted, failed = 0, 0
for i = 1, 2000 do
  local ok, err, forcible = D:set("fill" .. i, string.rep("v", 1000))
  if not ok then failed = failed + 1 end
  if forcible then evicted = evicted + 1 end
end
P(failed, evicted > 1000, #D:get_keys(0) < 260, D:get("fill2000") == string.rep("v", 1000), D:get("fill1"))
D:get("fill1990")
for i = 1, 5 do D:set("more" .. i, string.rep("v", 1000)) end
P(D:get("fill1990") ~= nil)
local n, err, forcible = D:incr("counter", 1, 0)
P(n, err, type(forcible))
'''),
    "capacity_and_free_space": ("1m", r'''
local c, f = D:capacity(), D:free_space()
P(type(c), c, math.floor(f) == f, f > 0, f <= c)
D:set("big", string.rep("x", 200 * 1024))
local f2 = D:free_space()
P(type(f2), f2 < f)
D:delete("big") D:flush_expired()
P(D:free_space() > f2)
P(select("#", D:capacity()), select("#", D:free_space()), select("#", D:flush_all()))
'''),
}


def start_nginx(d):
    """nginx with every case at /NAME on a dictionary of its own; returns (port, process)."""
    dicts, locations = [], {}
    for i, (name, (size, lua)) in enumerate(CASES.items()):
        path = d / ("%s.lua" % name)
        path.write_text("local D, SLEEP = ngx.shared.d%d, ngx.sleep\n%s%s\nngx.say(table.concat(lines, '\\n'))\n"
                        % (i, PRELUDE, lua))
        dicts.append("lua_shared_dict d%d %s;" % (i, size))
        locations["/" + name] = ("file", str(path))
    p, port = start_openresty(d, locations, http="\n".join(dicts))
    return port, p


def start_moongate(d):
    """moongate with the same cases, each file loaded once in init.lua and given its dictionary."""
    parts = []
    for i, (name, (size, lua)) in enumerate(CASES.items()):
        path = d / ("%s.lua" % name)
        path.write_text("local D, SLEEP = ...\n%s%s\nreturn 200, table.concat(lines, '\\n') .. '\\n'\n" % (PRELUDE, lua))
        parts.append('mg.shared("d%d", "%s")\n' % (i, size))
        parts.append('local case_%d = assert(loadfile(%r))\n'
                     'mg.route("=/%s", function(req) return case_%d(mg.shared("d%d"), mg.sleep) end)\n'
                     % (i, str(path), name, i, i))
    return Gateway(d, "".join(parts))


@pytest.fixture(scope="module")
def openresty(tmp_path_factory):
    port, p = start_nginx(tmp_path_factory.mktemp("nginx"))
    yield port
    stop_openresty(p)


@pytest.fixture(scope="module")
def moongate(tmp_path_factory):
    g = start_moongate(tmp_path_factory.mktemp("moongate"))
    yield g
    g.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_shared_dict_matches_openresty(openresty, moongate, name):
    theirs = request(openresty, path="/" + name)
    ours = request(moongate.port, path="/" + name)
    assert theirs.status == 200, theirs.body
    assert ours.status == 200, (ours.body, moongate.log()[-3000:])
    t, o = theirs.body.decode().splitlines(), ours.body.decode().splitlines()
    diff = ["line %d: openresty %s | moongate %s" % (i + 1, a, b)
            for i, (a, b) in enumerate(zip(t, o)) if a != b]
    assert not diff and len(t) == len(o), "\n".join(diff[:20] + ["lines: %d vs %d" % (len(t), len(o))])
