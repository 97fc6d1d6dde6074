"""Debian's lua-resty libraries (SPEC 17), run unmodified as their READMEs use them, against real
peers started here on loopback: redis-server (a master, a replica and a sentinel), memcached,
dnsmasq and a WebSocket server (helpers/ws_echo.py).

Each case is a Lua content handler written once, as OpenResty code with `require "resty.X"`. It
runs under moongate (a route) and under Debian's nginx + lua-nginx-module, where Debian installs
the libraries as nginx.X, so the nginx copy requires nginx.X instead. Both answers must be the
expected text: moongate's output is asserted value by value and OpenResty's agrees with it.
The peers' keys, channels and pools are named per side ({NS}), so the two runs never meet.

A case moongate cannot run yet is marked xfail(strict=True) with its exact cause, so that the
mark fails the suite (and has to go) the day the cause is fixed.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, Gateway, Process, free_port, request
from openresty import start_openresty, stop_openresty

HELPERS = os.path.join(ROOT, "tests", "e2e", "helpers")
# The Debian packages that install as nginx.X (lua-resty-lrucache installs as resty.lrucache).
NGINX_NAMED = ("redis", "memcached", "cookie", "string", "md5", "sha", "random", "aes", "dns", "websocket")


class Case:
    def __init__(self, lua, expect, headers=(), set_cookies=None, xfail=None):
        self.lua, self.expect, self.headers, self.set_cookies, self.xfail = lua, expect, headers, set_cookies, xfail


# ---- redis (lua-nginx-redis) -------------------------------------------------------------------
REDIS_CONN = r'''
local redis = require "resty.redis"
local function conn(opts)
  local red = redis:new()
  red:set_timeout(1000)
  local ok, err = red:connect("127.0.0.1", {REDIS}, opts)
  if not ok then ngx.say("failed to connect: ", err) return ngx.exit(200) end
  return red
end
'''

CASES = {
    "redis_commands": Case(REDIS_CONN + r'''
local red = conn()
ngx.say("set: ", red:set("{NS}:dog", "an animal"))
ngx.say("get: ", red:get("{NS}:dog"))
local res, err = red:get("{NS}:nokey")
ngx.say("missing is ngx.null: ", tostring(res == ngx.null), " ", tostring(err))
ngx.say("del: ", red:del("{NS}:dog", "{NS}:nokey"))
ngx.say("incrby: ", red:incrby("{NS}:n", 5), " ", type(red:incrby("{NS}:n", 1)))
ngx.say("hmset table: ", red:hmset("{NS}:h", {a = "1"}))
ngx.say("hmset list: ", red:hmset("{NS}:h", "b", "2"))
local h = red:array_to_hash(red:hgetall("{NS}:h"))
ngx.say("hgetall: a=", h.a, " b=", h.b)
ngx.say("rpush: ", red:rpush("{NS}:l", "x", "y", 3))
ngx.say("lrange: ", table.concat(red:lrange("{NS}:l", 0, -1), ","))
local ok, err = red:lpush("{NS}:h", "v")
ngx.say("wrong type: ", tostring(ok), " ", err)
ok, err = red:hget("{NS}:h")
ngx.say("bad arity: ", tostring(ok), " ", err)
ngx.say("del: ", red:del("{NS}:n", "{NS}:h", "{NS}:l"))
ngx.say("close: ", red:close())
ngx.say("after close: ", tostring(select(2, red:get("{NS}:dog"))))
local red2 = redis:new()
red2:set_timeout(1000)
ngx.say("refused: ", tostring(select(2, red2:connect("127.0.0.1", {CLOSED}))))
''', """set: OK
get: an animal
missing is ngx.null: true nil
del: 1
incrby: 5 number
hmset table: OK
hmset list: OK
hgetall: a=1 b=2
rpush: 3
lrange: x,y,3
wrong type: false WRONGTYPE Operation against a key holding the wrong kind of value
bad arity: false ERR wrong number of arguments for 'hget' command
del: 3
close: 1
after close: closed
refused: connection refused
"""),
    "redis_pipeline": Case(REDIS_CONN + r'''
local red = conn()
red:init_pipeline()
red:set("{NS}:cat", "Marry")
red:set("{NS}:horse", "Bob")
red:get("{NS}:cat")
red:get("{NS}:horse")
red:get("{NS}:none")
red:lpush("{NS}:cat", "x")
red:hmset("{NS}:ph", {f = "v"})
red:hgetall("{NS}:ph")
local results, err = red:commit_pipeline()
if not results then ngx.say("failed to commit the pipelined requests: ", err) return end
for i, res in ipairs(results) do
  if type(res) == "table" then
    if res[1] == false then ngx.say(i, ": failed: ", res[2])
    else ngx.say(i, ": ", table.concat(res, ",")) end
  else
    ngx.say(i, ": ", tostring(res == ngx.null and "null" or res))
  end
end
ngx.say("empty commit: ", tostring(select(2, red:commit_pipeline())))
red:init_pipeline(2)
red:incr("{NS}:pn") red:incr("{NS}:pn") red:incr("{NS}:pn")
ngx.say("sizes: ", table.concat(red:commit_pipeline(), ","))
red:init_pipeline()
red:get("{NS}:cat")
red:cancel_pipeline()
ngx.say("after cancel: ", red:get("{NS}:horse"))
red:del("{NS}:cat", "{NS}:horse", "{NS}:ph", "{NS}:pn")
red:close()
''', """1: OK
2: OK
3: Marry
4: Bob
5: null
6: failed: WRONGTYPE Operation against a key holding the wrong kind of value
7: OK
8: f,v
empty commit: no pipeline
sizes: 1,2,3
after cancel: Bob
"""),
    "redis_transaction": Case(REDIS_CONN + r'''
local red = conn()
ngx.say("multi: ", red:multi())
ngx.say("queued: ", red:set("{NS}:a", 1), " ", red:incr("{NS}:a"), " ", red:lpush("{NS}:a", "x"))
local res, err = red:exec()
ngx.say("exec: ", res[1], " ", res[2], " ", tostring(res[3][1]), " ", res[3][2])
ngx.say("watch: ", red:watch("{NS}:a"))
local other = conn()
other:set("{NS}:a", 100)
other:close()
red:multi()
red:set("{NS}:a", 5)
res, err = red:exec()
ngx.say("exec after a watched change: ", tostring(res == ngx.null), " ", tostring(err))
ngx.say("value kept: ", red:get("{NS}:a"))
red:watch("{NS}:a")
red:multi()
red:set("{NS}:a", 6)
ngx.say("unchanged watch: ", table.concat(red:exec(), ","), " ", red:get("{NS}:a"))
red:multi()
red:set("{NS}:a", 7)
ngx.say("discard: ", red:discard(), " ", red:get("{NS}:a"))
red:del("{NS}:a")
red:close()
''', """multi: OK
queued: QUEUED QUEUED QUEUED
exec: OK 2 false WRONGTYPE Operation against a key holding the wrong kind of value
watch: OK
exec after a watched change: true nil
value kept: 100
unchanged watch: OK 6
discard: OK 6
"""),
    "redis_scripts": Case(REDIS_CONN + r'''
local red = conn()
local res = red:eval("return {KEYS[1], ARGV[1], 42, redis.call('set', KEYS[1], ARGV[1])['ok']}", 1, "{NS}:k", "v")
ngx.say("eval: ", table.concat(res, ","), " ", type(res[3]))
local sha = red:script("load", "return ARGV[1] .. '!'")
ngx.say("sha: ", sha)
ngx.say("evalsha: ", red:evalsha(sha, 0, "hi"))
ngx.say("exists: ", table.concat(red:script("exists", sha, "0000000000000000000000000000000000000000"), ","))
local ok, err = red:evalsha("0000000000000000000000000000000000000000", 0)
ngx.say("unknown sha: ", tostring(ok), " ", err)
ok, err = red:eval("return redis.call('nosuchcommand')", 0)
ngx.say("script error: ", tostring(ok), " ", err:match("^ERR Unknown Redis command") or err)
red:del("{NS}:k")
red:close()
''', """eval: {NS}:k,v,42,OK number
sha: %s
evalsha: hi!
exists: 1,0
unknown sha: false NOSCRIPT No matching script. Please use EVAL.
script error: false ERR Unknown Redis command
""" % hashlib.sha1(b"return ARGV[1] .. '!'").hexdigest()),
    "redis_pubsub_thread": Case(REDIS_CONN + r'''
local sub = conn()
local res, err = sub:subscribe("{NS}:chan")
ngx.say("subscribe: ", table.concat(res, ","))
local t = ngx.thread.spawn(function()
  local pub = conn()
  ngx.sleep(0.05)
  local n = pub:publish("{NS}:chan", "hello")
  pub:publish("{NS}:chan", "world")
  pub:close()
  return n
end)
for i = 1, 2 do
  local reply, err = sub:read_reply()
  ngx.say("read_reply: ", tostring(reply and table.concat(reply, ",")), " ", tostring(err))
end
ngx.say("receivers: ", select(2, ngx.thread.wait(t)))
res = sub:psubscribe("{NS}:p*")
ngx.say("psubscribe: ", table.concat(res, ","))
local p2 = conn()
p2:publish("{NS}:pattern", "matched")
local reply = sub:read_reply()
ngx.say("pmessage: ", table.concat(reply, ","))
ngx.say("unsubscribe: ", table.concat(sub:unsubscribe("{NS}:chan"), ","))
ngx.say("punsubscribe: ", table.concat(sub:punsubscribe("{NS}:p*"), ","))
ngx.say("read after: ", tostring(select(2, sub:read_reply())))
sub:set_timeout(100)
local s2 = conn()
s2:set_timeout(100)
s2:subscribe("{NS}:silent")
ngx.say("timeout: ", tostring(select(2, s2:read_reply())))
s2:close()
sub:close()
p2:close()
''', """subscribe: subscribe,{NS}:chan,1
read_reply: message,{NS}:chan,hello nil
read_reply: message,{NS}:chan,world nil
receivers: 1
psubscribe: psubscribe,{NS}:p*,2
pmessage: pmessage,{NS}:p*,{NS}:pattern,matched
unsubscribe: unsubscribe,{NS}:chan,1
punsubscribe: punsubscribe,{NS}:p*,0
read after: not subscribed
timeout: timeout
"""),
    "redis_pool": Case(REDIS_CONN + r'''
local opts = {pool = "{NS}:pool"}
local red = conn(opts)
ngx.say("fresh: ", red:get_reused_times())
red:set("{NS}:p", "pooled")
ngx.say("set_keepalive: ", red:set_keepalive(100, 10))
ngx.say("use after keepalive: ", tostring(select(2, red:get("{NS}:p"))))
local r2 = conn(opts)
ngx.say("reused: ", r2:get_reused_times(), " ", r2:get("{NS}:p"))
r2:set_keepalive(100, 10)
local r3 = conn(opts)
ngx.say("reused again: ", r3:get_reused_times())
local r4 = conn(opts)
ngx.say("pool empty, new connection: ", r4:get_reused_times())
r3:set_keepalive(100, 10)
r4:set_keepalive(100, 10)
local r5 = conn(opts)
local r6 = conn(opts)
ngx.say("two pooled: ", r5:get_reused_times() + r6:get_reused_times() >= 3)
r5:del("{NS}:p")
r5:close() r6:close()
''', """fresh: 0
set_keepalive: 1
use after keepalive: closed
reused: 1 pooled
reused again: 2
pool empty, new connection: 0
two pooled: true
"""),
    # resty.redis.sentinel on a resty.redis connection to the sentinel (the connector's sentinel
    # half, as lua-resty-redis-connector calls it).
    "redis_sentinel_module": Case(r'''
local redis = require "resty.redis"
local sentinel = require "resty.redis.sentinel"
local red = redis:new()
red:set_timeout(1000)
assert(red:connect("127.0.0.1", {SENTINEL}))
local master, err = sentinel.get_master(red, "mymaster")
ngx.say("master: ", master.host, ":", master.port)
local slaves, err = sentinel.get_slaves(red, "mymaster")
ngx.say("slaves: ", #slaves, " ", slaves[1].host, ":", slaves[1].port)
local none, err = sentinel.get_master(red, "nosuchmaster")
ngx.say("unknown: ", tostring(none), " ", tostring(err))
red:close()
''', """master: 127.0.0.1:{REDIS}
slaves: 1 127.0.0.1:{REPLICA}
unknown: nil nil
"""),
    "redis_connector_sentinel": Case(r'''
local rc = require("resty.redis.connector").new({connect_timeout = 500, read_timeout = 1000, keepalive_timeout = 100})
local sentinels = {{host = "127.0.0.1", port = {SENTINEL}}}
local master, err = rc:connect({url = "sentinel://mymaster:m/0", sentinels = sentinels})
if not master then ngx.say("connect to master failed: ", err) return end
ngx.say("master set: ", master:set("{NS}:via_sentinel", "yes"))
ngx.say("master role: ", master:role()[1])
rc:set_keepalive(master)
local slave, err = rc:connect({url = "sentinel://mymaster:s/0", sentinels = sentinels})
if not slave then ngx.say("connect to slave failed: ", err) return end
local v
for i = 1, 100 do v = slave:get("{NS}:via_sentinel") if v ~= ngx.null then break end ngx.sleep(0.02) end
ngx.say("slave role: ", slave:role()[1], " ", v)
rc:set_keepalive(slave)
local direct, err = rc:connect({url = "redis://127.0.0.1:{REDIS}/2"})
ngx.say("direct db 2: ", direct:set("{NS}:db2", 1), " ", direct:del("{NS}:db2"))
direct:del("{NS}:via_sentinel")
direct:close()  -- not pooled: a pooled connection keeps its SELECT 2 for whoever takes it next
local bad, err = rc:connect({url = "sentinel://nosuchmaster:m/0", sentinels = sentinels})
ngx.say("unknown master: ", tostring(bad), " ", tostring(err))
''', """master set: OK
master role: master
slave role: slave yes
direct db 2: OK 1
unknown master: nil nil
"""),
}

# ---- memcached (lua-nginx-memcached) ---------------------------------------------------------------
MEMC_CONN = r'''
local memcached = require "resty.memcached"
local memc, err = memcached:new()
memc:set_timeout(1000)
local ok, err = memc:connect("127.0.0.1", {MEMC})
if not ok then ngx.say("failed to connect: ", err) return end
'''
CASES.update({
    "memcached_store": Case(MEMC_CONN + r'''
ngx.say("set: ", memc:set("{NS}:dog", 32))
ngx.say("add existing: ", tostring(select(2, memc:add("{NS}:dog", 1))))
ngx.say("add new: ", memc:add("{NS}:cat", "10", 0, 5))
ngx.say("replace: ", memc:replace("{NS}:dog", 40))
ngx.say("replace missing: ", tostring(select(2, memc:replace("{NS}:none", 1))))
ngx.say("incr: ", memc:incr("{NS}:dog", 2), " ", type(memc:incr("{NS}:dog", 0)))
ngx.say("decr: ", memc:decr("{NS}:dog", 50))
ngx.say("incr missing: ", tostring(select(2, memc:incr("{NS}:none", 1))))
ngx.say("append: ", memc:append("{NS}:cat", "0"), " ", memc:incr("{NS}:cat", 1))
ngx.say("prepend: ", memc:prepend("{NS}:cat", "1"), " ", memc:incr("{NS}:cat", 1))
ngx.say("touch: ", memc:touch("{NS}:cat", 100), " ", tostring(select(2, memc:touch("{NS}:none", 1))))
ngx.say("delete: ", memc:delete("{NS}:dog"))
ngx.say("delete again: ", tostring(select(2, memc:delete("{NS}:dog"))))
ngx.say("replace deleted: ", tostring(select(2, memc:replace("{NS}:dog", 1))))
ngx.say("version: ", tostring(memc:version():match("^%d+%.%d+%.%d+$") ~= nil))
ngx.say("flush_all: ", memc:flush_all())
ngx.say("add after flush: ", memc:add("{NS}:cat", 1))
memc:delete("{NS}:cat")
ngx.say("set_keepalive: ", memc:set_keepalive(100, 10))
local m2 = memcached:new()
m2:set_timeout(1000)
m2:connect("127.0.0.1", {MEMC})
ngx.say("reused: ", m2:get_reused_times())
m2:close()
local m3 = memcached:new()
ngx.say("refused: ", tostring(select(2, m3:connect("127.0.0.1", {CLOSED}))))
''', """set: 1
add existing: NOT_STORED
add new: 1
replace: 1
replace missing: NOT_STORED
incr: 42 string
decr: 0
incr missing: NOT_FOUND
append: 1 101
prepend: 1 1102
touch: 1 NOT_FOUND
delete: 1
delete again: NOT_FOUND
replace deleted: NOT_STORED
version: true
flush_all: 1
add after flush: 1
set_keepalive: 1
reused: 1
refused: connection refused
"""),
    "memcached_get": Case(MEMC_CONN + r'''
memc:set("{NS}:dog", "32", 0, 7)
local res, flags, err = memc:get("{NS}:dog")
ngx.say("get: ", tostring(res), " flags ", tostring(flags), " ", tostring(err))
res, flags, err = memc:get("{NS}:none")
ngx.say("missing: ", tostring(res), " ", tostring(flags), " ", tostring(err))
memc:set("{NS}:cat", "")
local all = memc:get({"{NS}:dog", "{NS}:cat", "{NS}:none"})
ngx.say("multi: ", all["{NS}:dog"][1], " ", all["{NS}:dog"][2], " [", all["{NS}:cat"][1], "] ", tostring(all["{NS}:none"]))
local value, fl, cas, err = memc:gets("{NS}:dog")
ngx.say("gets: ", value, " ", fl, " ", tostring(cas:match("^%d+$") ~= nil))
ngx.say("cas: ", memc:cas("{NS}:dog", "new", cas, 0, 3))
ngx.say("stale cas: ", tostring(select(2, memc:cas("{NS}:dog", "newer", cas))))
ngx.say("after cas: ", memc:get("{NS}:dog"), " ", select(2, memc:get("{NS}:dog")))
memc:flush_all()
ngx.say("after flush_all: ", tostring(memc:get("{NS}:dog")))
memc:close()
''', """get: 32 flags 7 nil
missing: nil nil nil
multi: 32 7 [] nil
gets: 32 7 true
cas: 1
stale cas: EXISTS
after cas: new 3
after flush_all: nil
"""),
})

# ---- lrucache (lua-resty-lrucache, both variants) -----------------------------------------------------
for variant in ("lrucache", "lrucache.pureffi"):
    CASES["lrucache_" + variant.replace(".", "_")] = Case(r'''
local lrucache = require "resty.%s"
local c, err = lrucache.new(3)
if not c then ngx.say("failed to create the cache: ", err) return end
c:set("a", 1)
c:set("b", {v = 2})
c:set("c", "three", 0.05)
c:set(42, "number key")
ngx.say("a=", tostring(c:get("a")), " b=", tostring(c:get("b") and c:get("b").v), " c=", tostring(c:get("c")),
        " 42=", tostring(c:get(42)))
ngx.say("count: ", c:count(), " capacity: ", c:capacity())
c:get("c")
c:set("d", 4)
ngx.say("evicted the least recently used: b=", tostring(c:get("b")), " c=", tostring(c:get("c")), " 42=", tostring(c:get(42)),
        " d=", tostring(c:get("d")))
ngx.sleep(0.1)
local v, stale = c:get("c")
ngx.say("expired: ", tostring(v), " stale: ", tostring(stale))
c:set("f", "flagged", nil, 5)
ngx.say("flags: ", select(3, c:get("f")))
c:delete("d")
ngx.say("deleted: ", tostring(c:get("d")), " count: ", c:count())
c:flush_all()
ngx.say("flushed: ", tostring(c:get("f")), " ", tostring(c:get(42)), " count: ", c:count())
local ok, err = pcall(lrucache.new, 0)
ngx.say("size 0: ", tostring(ok))
''' % variant, """a=nil b=2 c=three 42=number key
count: 3 capacity: 3
evicted the least recently used: b=nil c=three 42=number key d=4
expired: nil stale: three
flags: 5
deleted: nil count: 2
flushed: nil nil count: 0
size 0: true
""")

# ---- cookie (lua-nginx-cookie) ----------------------------------------------------------------------
CASES.update({
    "cookie": Case(r'''
local ck = require "resty.cookie"
local cookie, err = ck:new()
if not cookie then ngx.say(err) return end
local ok1, err1 = cookie:set({key = "Name", value = "Bob", path = "/", domain = "example.com", secure = true,
                              httponly = true, expires = "Wed, 09 Jun 2021 10:18:14 GMT", max_age = 50,
                              extension = "a4334aebaec"})
local ok2 = cookie:set({key = "Two", value = "2"})
local ok3, err3 = cookie:set({key = "Three"})
ngx.say("set: ", tostring(ok1), " ", tostring(err1), " ", tostring(ok2), " ", tostring(ok3), " ", tostring(err3))
local field, err = cookie:get("lang")
ngx.say("get lang: ", tostring(field), " ", tostring(err))
ngx.say("get none: ", tostring(cookie:get("none")))
local fields = cookie:get_all()
local names = {}
for k, v in pairs(fields) do names[#names + 1] = k .. "=" .. v end
table.sort(names)
ngx.say("get_all: ", table.concat(names, "; "))
''', """set: true nil true nil missing cookie field "key" or "value"
get lang: en nil
get none: nil
get_all: SID=31d4d96e407aad42; lang=en; x=
""", headers=[("Cookie", "SID=31d4d96e407aad42; lang=en"), ("Cookie", "x=")],
        set_cookies=["Name=Bob; Expires=Wed, 09 Jun 2021 10:18:14 GMT; Max-Age=50; Domain=example.com; Path=/; "
                     "Secure; HttpOnly; a4334aebaec", "Two=2"]),
    "cookie_none": Case(r'''
local ck = require "resty.cookie"
local cookie = ck:new()
local v, err = cookie:get("lang")
ngx.say("get: ", tostring(v), " ", tostring(err))
local all, err = cookie:get_all()
ngx.say("get_all: ", tostring(all), " ", tostring(err))
''', """get: nil no cookie found in the current request
get_all: nil no cookie found in the current request
"""),
})

# ---- string, digests, random, aes (lua-nginx-string) ----------------------------------------------------
DIGEST_INPUTS = ["", "hello", "x" * 1000]
DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
AES_CASES = [  # (key, salt, size, hash name, rounds, plaintext)
    ("AKeyForAES-256-CBC", "MySalt!!", 256, "sha512", 5, "Secret message!"),
    ("AKeyForAES-128-CBC", None, 128, "md5", 1, "x"),
    ("k", "saltsalt", 192, "sha256", 1, "sixteen bytes!!!"),
    ("key", None, 256, "sha1", 3, "a" * 100),
]


def lua_str(s):
    return "nil" if s is None else '"%s"' % s


CASES.update({
    "string_digests": Case(r'''
local str = require "resty.string"
local inputs = {"", "hello", string.rep("x", 1000)}
local mods = {md5 = require "resty.md5", sha1 = require "resty.sha1", sha224 = require "resty.sha224",
              sha256 = require "resty.sha256", sha384 = require "resty.sha384", sha512 = require "resty.sha512"}
for _, name in ipairs({"md5", "sha1", "sha224", "sha256", "sha384", "sha512"}) do
  local mod = mods[name]
  for i, s in ipairs(inputs) do
    local h = mod:new()
    -- fed in two parts: update() appends
    h:update(s:sub(1, 3))
    h:update(s:sub(4))
    ngx.say(name, " ", i, " ", str.to_hex(h:final()))
  end
  local h = mod:new()
  h:update("abc")
  h:reset()
  h:update("hello")
  ngx.say(name, " reset ", str.to_hex(h:final()))
end
ngx.say("to_hex: ", str.to_hex("\0\1\255 A"))
ngx.say("atoi: ", str.atoi("1234"), " ", type(str.atoi("1234")), " ", str.atoi("12a"), " ", str.atoi(""))
''', None),
    "random": Case(r'''
local random = require "resty.random"
local str = require "resty.string"
local a, b = random.bytes(16), random.bytes(16)
ngx.say("bytes: ", #a, " ", #b, " differ: ", tostring(a ~= b), " hex: ", #str.to_hex(a))
local s = random.bytes(32, true)
ngx.say("strong: ", tostring(s and #s))
ngx.say("one: ", #random.bytes(1), " large: ", #random.bytes(4096))
local seen = {}
local n = 0
for i = 1, 200 do
  local byte = random.bytes(1):byte()
  if not seen[byte] then seen[byte] = true n = n + 1 end
end
ngx.say("spread: ", tostring(n > 100))
''', """bytes: 16 16 differ: true hex: 32
strong: 32
one: 1 large: 4096
spread: true
"""),
    "aes": Case(r'''
local aes = require "resty.aes"
local str = require "resty.string"
local cases = {%s}
for _, c in ipairs(cases) do
  local a, err = aes:new(c[1], c[2], aes.cipher(c[3], "cbc"), aes.hash[c[4]], c[5])
  local enc = a:encrypt(c[6])
  ngx.say(str.to_hex(enc), " ", tostring(a:decrypt(enc) == c[6]))
end
local default = aes:new("AKeyForAES-128-CBC")
local enc = default:encrypt("x")
ngx.say("default: ", str.to_hex(enc), " ", default:decrypt(enc))
local raw = aes:new("1234567890123456", nil, aes.cipher(128, "cbc"), {iv = "abcdefghijklmnop"})
ngx.say("raw key and iv: ", str.to_hex(raw:encrypt("hello")))
ngx.say("bad salt: ", tostring(select(2, aes:new("k", "short"))))
ngx.say("bad iv: ", tostring(select(2, aes:new("1234567890123456", nil, aes.cipher(128, "cbc"), {iv = "x"}))))
ngx.say("bad key length: ", tostring(select(2, aes:new("short", nil, aes.cipher(128, "cbc"), {iv = "abcdefghijklmnop"}))))
local ok, err = pcall(aes.cipher, 512, "cbc")
ngx.say("no such cipher: ", tostring(ok), " ", tostring(err):match("missing declaration for symbol '[%%w_]+'"))
ngx.say("wrong key: ", tostring(aes:new("other key"):decrypt(enc)))
''' % ", ".join("{%s, %s, %d, \"%s\", %d, \"%s\"}" % (lua_str(k), lua_str(s), size, h, n, p)
                 for k, s, size, h, n, p in AES_CASES), None),
})


# ---- dns (lua-nginx-dns) --------------------------------------------------------------------------------
DNS_SHOW = r'''
local resolver = require "resty.dns.resolver"
local r, err = resolver:new{nameservers = {{"127.0.0.1", {DNS}}}, retrans = 2, timeout = 1000}
if not r then ngx.say("failed to instantiate the resolver: ", err) return end
local function show(name, opts, tcp)
  local answers, err
  if tcp then answers, err = r:tcp_query(name, opts) else answers, err = r:query(name, opts) end
  if not answers then ngx.say(name, ": failed to query: ", err) return end
  if answers.errcode then ngx.say(name, ": server returned error code: ", answers.errcode, ": ", answers.errstr) return end
  for _, a in ipairs(answers) do
    local v = a.address or a.cname or a.exchange or a.target or a.ptrdname
    if type(a.txt) == "table" then v = table.concat(a.txt, "|") elseif a.txt then v = a.txt end
    ngx.say(name, ": ", a.name, " type ", a.type, " class ", a.class, " ", tostring(v),
            a.preference and (" pref " .. a.preference) or "", a.port and (" port " .. a.port .. " weight " .. a.weight .. " priority " .. a.priority) or "",
            " ttl ", a.ttl)
  end
end
'''
CASES.update({
    "dns_udp": Case(DNS_SHOW + r'''
show("www.example.test")
show("host.test", {qtype = r.TYPE_AAAA})
show("alias.test")
show("txt.test", {qtype = r.TYPE_TXT})
show("example.test", {qtype = r.TYPE_MX})
show("_http._tcp.example.test", {qtype = r.TYPE_SRV})
show("7.8.9.10.in-addr.arpa", {qtype = r.TYPE_PTR})
show("missing.test")
show("nothere.invalid")
ngx.say("arpa: ", resolver.arpa_str("10.1.2.3"), " ", resolver.arpa_str("fd00::7"))
ngx.say("compress: ", resolver.compress_ipv6_addr("fd00:0:0:0:0:0:0:7"))
local bad = resolver:new{nameservers = {{"127.0.0.1", {CLOSED}}}, retrans = 1, timeout = 300}
ngx.say("no server: ", tostring(select(2, bad:query("www.example.test"))))
''', """www.example.test: www.example.test type 1 class 1 10.1.2.3 ttl 0
host.test: host.test type 28 class 1 fd00:0:0:0:0:0:0:7 ttl 0
alias.test: alias.test type 5 class 1 host.test ttl 0
alias.test: host.test type 1 class 1 10.9.8.7 ttl 0
txt.test: txt.test type 16 class 1 hello world|second ttl 0
example.test: example.test type 15 class 1 mail.example.test pref 10 ttl 0
_http._tcp.example.test: _http._tcp.example.test type 33 class 1 host.test port 80 weight 5 priority 1 ttl 0
7.8.9.10.in-addr.arpa: 7.8.9.10.in-addr.arpa type 12 class 1 host.test ttl 0
missing.test: server returned error code: 3: name error
nothere.invalid: server returned error code: 5: refused
arpa: 3.2.1.10.in-addr.arpa 7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa
compress: fd00::7
no server: failed to receive reply from UDP server 127.0.0.1:{CLOSED}: connection refused
"""),
    "dns_tcp": Case(DNS_SHOW + r'''
show("www.example.test", nil, true)
show("alias.test", nil, true)
show("txt.test", {qtype = r.TYPE_TXT}, true)
show("missing.test", nil, true)
local r2 = resolver:new{nameservers = {{"127.0.0.1", {DNS}}}, no_recurse = true}
local answers = r2:tcp_query("host.test", {qtype = r2.TYPE_AAAA})
ngx.say("no_recurse: ", answers[1].address)
local bad = resolver:new{nameservers = {{"127.0.0.1", {CLOSED}}}, timeout = 300}
ngx.say("no server: ", tostring(select(2, bad:tcp_query("www.example.test"))))
''', """www.example.test: www.example.test type 1 class 1 10.1.2.3 ttl 0
alias.test: alias.test type 5 class 1 host.test ttl 0
alias.test: host.test type 1 class 1 10.9.8.7 ttl 0
txt.test: txt.test type 16 class 1 hello world|second ttl 0
missing.test: server returned error code: 3: name error
no_recurse: fd00:0:0:0:0:0:0:7
no server: failed to connect to TCP server 127.0.0.1:{CLOSED}: connection refused
"""),
})

# ---- websocket client (lua-nginx-websocket) ---------------------------------------------------------------
CASES.update({
    "websocket": Case(r'''
local client = require "resty.websocket.client"
local wb, err = client:new{timeout = 2000, max_payload_len = 65535}
local ok, err = wb:connect("ws://127.0.0.1:{WS}/s", {protocols = "chat"})
if not ok then ngx.say("failed to connect: " .. err) return end
ngx.say("send_text: ", (wb:send_text("hello")))
local data, typ, err = wb:recv_frame()
ngx.say("recv: ", data, " ", typ, " ", tostring(err))
ngx.say("send_binary: ", (wb:send_binary("\0\1\2")))
data, typ = wb:recv_frame()
ngx.say("recv: ", #data, " ", typ, " ", data:sub(7):byte(1, -1))
local big = string.rep("z", 70000)
wb:send_text(big:sub(1, 60000))
data, typ = wb:recv_frame()
ngx.say("recv 16-bit length: ", #data, " ", typ)
wb:send_text("path")
ngx.say("path: ", (wb:recv_frame()))
ngx.say("send_ping: ", (wb:send_ping("pp")))
data, typ, err = wb:recv_frame()
ngx.say("pong: ", data, " ", typ, " ", tostring(err))
wb:send_text("pingme")
data, typ = wb:recv_frame()
ngx.say("server ping: ", data, " ", typ)
ngx.say("send_pong: ", (wb:send_pong(data)))
data, typ = wb:recv_frame()
ngx.say("then: ", data, " ", typ)
wb:send_text("bye")
data, typ, err = wb:recv_frame()
ngx.say("close frame: ", data, " ", typ, " ", tostring(err))
ngx.say("send_close: ", (wb:send_close(1000, "ok")))
ngx.say("close: ", (wb:close()))
local wb2 = client:new{timeout = 1000}
ngx.say("refused: ", tostring(select(2, wb2:connect("ws://127.0.0.1:{CLOSED}/"))))
ngx.say("bad uri: ", tostring(select(2, wb2:connect("http://127.0.0.1:{WS}/"))))
''', """send_text: 11
recv: echo: hello text nil
send_binary: 9
recv: 9 binary 012
recv 16-bit length: 60006 text
path: /s chat
send_ping: 8
pong: pp pong nil
server ping: srv ping
send_pong: 9
then: pong received text
close frame: bye! close 1000
send_close: 10
close: 1
refused: failed to connect: connection refused
bad uri: bad websocket uri
"""),
})


# ---- more of each library's surface -----------------------------------------------------------------
CASES.update({
    "redis_unix_and_big": Case(REDIS_CONN + r"""
local red = redis:new()
red:set_timeout(2000)
local ok, err = red:connect("unix:{REDIS_SOCK}")
ngx.say("unix: ", tostring(ok), " ", tostring(err))
local big = string.rep("0123456789", 100000)
ngx.say("set 1 MB: ", red:set("{NS}:big", big))
local v = red:get("{NS}:big")
ngx.say("get 1 MB: ", #v, " ", tostring(v == big))
local list = {}
for i = 1, 1000 do list[i] = "item" .. i end
red:rpush("{NS}:biglist", unpack(list))
local got = red:lrange("{NS}:biglist", 0, -1)
ngx.say("1000 items: ", #got, " ", got[1], " ", got[1000])
ngx.say("binary: ", red:set("{NS}:bin", "a\r\nb\0c"), " ", red:get("{NS}:bin") == "a\r\nb\0c")
ngx.say("empty: [", red:set("{NS}:e", ""), "] [", red:get("{NS}:e"), "]")
red:del("{NS}:big", "{NS}:biglist", "{NS}:bin", "{NS}:e")
red:close()
""", """unix: 1 nil
set 1 MB: OK
get 1 MB: 1000000 true
1000 items: 1000 item1 item1000
binary: OK true
empty: [OK] []
"""),
    "redis_in_timer": Case(REDIS_CONN + r"""
local function job(premature, key, value)
  local red = conn()
  red:set(key, value)
  red:set_keepalive(100, 10)
end
local ok, err = ngx.timer.at(0, job, "{NS}:from_timer", "done")
ngx.say("timer: ", tostring(ok), " ", tostring(err))
local red = conn()
local v
for i = 1, 100 do
  v = red:get("{NS}:from_timer")
  if v ~= ngx.null then break end
  ngx.sleep(0.01)
end
ngx.say("the timer wrote: ", tostring(v))
red:del("{NS}:from_timer")
red:close()
""", """timer: 1 nil
the timer wrote: done
"""),
    "memcached_admin": Case(MEMC_CONN + r"""
local stats, err = memc:stats()
local seen = {}
for _, line in ipairs(stats) do
  local name = line:match("^STAT (%S+) ")
  if name then seen[name] = true end
end
ngx.say("stats: ", tostring(seen.pid), " ", tostring(seen.curr_connections), " ", tostring(#stats > 20))
local items = memc:stats("settings")
ngx.say("stats settings: ", tostring(#items > 10))
ngx.say("verbosity: ", memc:verbosity(0))
ngx.say("quit: ", memc:quit())
-- "closed" or "connection reset by peer": which one depends on whether memcached's FIN or its
-- RST (for the set sent after quit) is read first, under OpenResty as under moongate
local ok, err = memc:set("{NS}:x", 1)
ngx.say("after quit: ", tostring(ok), " ", tostring(err == "closed" or err == "connection reset by peer"))
""", """stats: true true true
stats settings: true
verbosity: 1
quit: 1
after quit: nil true
"""),
    "dns_more": Case(DNS_SHOW + r"""
show("big.test", {qtype = r.TYPE_TXT})
local answers = r:query("big.test", {qtype = r.TYPE_TXT})
local lens = {}
for _, s in ipairs(answers[1].txt) do lens[#lens + 1] = #s end
ngx.say("over UDP's 512 bytes, asked again over TCP: ", table.concat(lens, ","))
local answers, err = r:reverse_query("10.9.8.7")
ngx.say("reverse_query: ", answers[1].ptrdname, " ", answers[1].type)
answers = r:query("www.example.test", {additional_section = true})
ngx.say("sections: ", answers[1].section, " ", #answers)
answers = r:query("example.test", {qtype = r.TYPE_MX, additional_section = true})
for _, a in ipairs(answers) do ngx.say("  ", a.section, " ", a.name, " ", a.type, " ", tostring(a.exchange or a.address)) end
""", """big.test: big.test type 16 class 1 %s ttl 0
over UDP's 512 bytes, asked again over TCP: 200,200,200,200
reverse_query: host.test 12
sections: 1 1
  1 example.test 15 mail.example.test
""" % "|".join(["t" * 200] * 4)),
    "websocket_frames": Case(r"""
local client = require "resty.websocket.client"
local wb, err = client:new{timeout = 2000, max_payload_len = 1000}
local ok, err = wb:connect("ws://127.0.0.1:{WS}/f")
if not ok then ngx.say("failed to connect: " .. err) return end
wb:send_text("fragments")
for i = 1, 4 do
  local data, typ, err = wb:recv_frame()
  ngx.say("frame ", i, ": [", data, "] ", typ, " ", tostring(err))
end
wb:send_text("big 1000")
local data, typ, err = wb:recv_frame()
ngx.say("at the limit: ", #data, " ", typ)
wb:send_text("big 1001")
data, typ, err = wb:recv_frame()
ngx.say("recv over the limit: ", tostring(data), " ", tostring(typ), " ", tostring(err))
ngx.say("then: ", tostring(select(3, wb:recv_frame())))
wb:close()
local wb3 = client:new{timeout = 2000, max_payload_len = 1000}
wb3:connect("ws://127.0.0.1:{WS}/f")
ngx.say("send over the limit: ", tostring(select(2, wb3:send_text(string.rep("x", 1001)))))
wb3:close()
local wb2 = client:new{timeout = 2000, max_payload_len = 100000}
ok, err = wb2:connect("ws://127.0.0.1:{WS}/f")
wb2:send_text("big 70000")
data, typ = wb2:recv_frame()
ngx.say("64-bit length: ", #data, " ", typ)
wb2:set_timeout(100)
data, typ, err = wb2:recv_frame()
ngx.say("nothing to read: ", tostring(data), " ", tostring(typ), " ", tostring(err))
wb2:close()
""", """frame 1: [frag1 ] text again
frame 2: [frag2 ] continuation again
frame 3: [frag3] continuation again
frame 4: [] continuation nil
at the limit: 1000 text
recv over the limit: nil nil exceeding max payload len
then: fatal error already happened
send over the limit: payload too big
64-bit length: 70000 text
nothing to read: nil nil failed to receive the first 2 bytes: timeout
"""),
})


CASES.update({
    "websocket_wss": Case(r"""
local client = require "resty.websocket.client"
local wb, err = client:new{timeout = 2000}
local ok, err = wb:connect("wss://127.0.0.1:{WSS}/tls", {origin = "http://example.test",
                                                          headers = {"X-Custom: 1", "X-Other: 2"}})
if not ok then ngx.say("failed to connect: " .. err) return end
wb:send_text("over tls")
ngx.say("recv: ", (wb:recv_frame()))
wb:send_text("headers")
ngx.say("headers: ", (wb:recv_frame()))
wb:send_close()
wb:close()
local wb2 = client:new{timeout = 2000}
ngx.say("verified: ", tostring(select(2, wb2:connect("wss://127.0.0.1:{WSS}/", {ssl_verify = true}))))
local wb3 = client:new{timeout = 2000}
ngx.say("bad headers: ", tostring(select(2, wb3:connect("ws://127.0.0.1:{WS}/", {headers = "X: 1"}))))
""", """recv: echo: over tls
headers: http://example.test 1
verified: ssl handshake failed: 18: self-signed certificate
bad headers: custom headers must be a table
"""),
})


# ---- expectations computed here (hashlib, cryptography or openssl) ----------------------------------
def digest_expect():
    out = []
    for name in DIGESTS:
        for i, s in enumerate(DIGEST_INPUTS, 1):
            out.append("%s %d %s" % (name, i, hashlib.new(name, s.encode()).hexdigest()))
        out.append("%s reset %s" % (name, hashlib.new(name, b"hello").hexdigest()))
    out.append("to_hex: 0001ff2041")
    out.append("atoi: 1234 number -1 -1")
    return "\n".join(out) + "\n"


def evp_bytes_to_key(data, salt, md, count, key_len, iv_len):
    """OpenSSL's EVP_BytesToKey: D_i = md^count(D_(i-1) || data || salt), concatenated."""
    out, prev = b"", b""
    while len(out) < key_len + iv_len:
        h = prev + data + (salt or b"")
        for _ in range(count):
            h = hashlib.new(md, h).digest()
        out += h
        prev = h
    return out[:key_len], out[key_len:key_len + iv_len]


def aes_cbc(key, iv, plain):
    try:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        return openssl_cbc(key, iv, plain)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return (enc.update(data) + enc.finalize()).hex()


def openssl_cbc(key, iv, plain):
    return subprocess.run(["openssl", "enc", "-aes-%d-cbc" % (len(key) * 8), "-K", key.hex(), "-iv", iv.hex()],
                          input=plain, capture_output=True, check=True).stdout.hex()


def openssl_password_cbc(password, salt, size, md, plain):
    """`openssl enc` deriving key and iv from the password itself: its derivation is EVP_BytesToKey
    with one round (-iter and -pbkdf2 switch to PBKDF2), so it checks the rounds=1 cases
    independently of evp_bytes_to_key. OpenSSL 1.1 writes "Salted__" + salt first, 3.x not
    when the salt is given with -S."""
    args = ["openssl", "enc", "-aes-%d-cbc" % size, "-md", md, "-pass", "pass:" + password]
    args += ["-S", salt.encode().hex()] if salt else ["-nosalt"]
    out = subprocess.run(args, input=plain, capture_output=True, check=True).stdout
    return (out[16:] if out.startswith(b"Salted__") else out).hex()


def aes_expect():
    out = []
    for key, salt, size, md, rounds, plain in AES_CASES:
        k, iv = evp_bytes_to_key(key.encode(), salt and salt.encode(), md, rounds, size // 8, 16)
        out.append("%s true" % aes_cbc(k, iv, plain.encode()))
    k, iv = evp_bytes_to_key(b"AKeyForAES-128-CBC", None, "md5", 1, 16, 16)
    out.append("default: %s x" % aes_cbc(k, iv, b"x"))
    out.append("raw key and iv: %s" % aes_cbc(b"1234567890123456", b"abcdefghijklmnop", b"hello"))
    out.append("bad salt: salt must be 8 characters or nil")
    out.append("bad iv: bad iv")
    out.append("bad key length: bad key length")
    out.append("no such cipher: false missing declaration for symbol 'EVP_aes_512_cbc'")
    out.append("wrong key: nil")
    return "\n".join(out) + "\n"


CASES["string_digests"].expect = digest_expect()
CASES["aes"].expect = aes_expect()


def test_aes_expectation_agrees_with_openssl_enc():
    """The Python derivation behind the aes case is OpenSSL's: `openssl enc` gives the same
    ciphertexts for the one-round cases (it cannot do more rounds without switching to PBKDF2)."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is missing (package openssl)")
    checked = 0
    for key, salt, size, md, rounds, plain in AES_CASES:
        if rounds != 1:
            continue
        k, iv = evp_bytes_to_key(key.encode(), salt and salt.encode(), md, rounds, size // 8, 16)
        assert openssl_password_cbc(key, salt, size, md, plain.encode()) == aes_cbc(k, iv, plain.encode())
        assert openssl_cbc(k, iv, plain.encode()) == aes_cbc(k, iv, plain.encode())
        checked += 1
    assert checked == 2


# ---- the peers -----------------------------------------------------------------------------------------
def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), capture_output=True, text=True, timeout=5).stdout


def wait_for(what, check, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError("%s not ready after %.0fs" % (what, timeout))


def need(binary):
    if not shutil.which(binary):
        pytest.fail("%s is missing: make deps installs the peers of the lua-resty tests" % binary)


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    for b in ("redis-server", "redis-cli", "memcached"):
        need(b)
    if not os.path.exists("/usr/sbin/dnsmasq"):
        pytest.fail("/usr/sbin/dnsmasq is missing (package dnsmasq-base)")
    folder = str(tmp_path_factory.mktemp("peers"))
    started = []
    ports = {}
    try:
        redis_args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder]
        ports["REDIS"] = free_port()
        ports["REDIS_SOCK"] = os.path.join(folder, "redis.sock")
        started.append(Process(["redis-server", "--port", str(ports["REDIS"]), "--unixsocket", ports["REDIS_SOCK"],
                             "--unixsocketperm", "700"] + redis_args, ports["REDIS"]))
        ports["REPLICA"] = free_port()
        started.append(Process(["redis-server", "--port", str(ports["REPLICA"]), "--replicaof", "127.0.0.1",
                             str(ports["REDIS"])] + redis_args, ports["REPLICA"]))
        ports["SENTINEL"] = free_port()
        conf = os.path.join(folder, "sentinel.conf")
        with open(conf, "w") as f:  # sentinel rewrites its file: one of its own
            f.write("bind 127.0.0.1\nport %d\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds mymaster 5000\n" % (ports["SENTINEL"], folder, ports["REDIS"]))
        started.append(Process(["redis-server", conf, "--sentinel"], ports["SENTINEL"]))
        wait_for("the replica's link", lambda: "master_link_status:up" in redis_cli(ports["REPLICA"], "info", "replication"))
        wait_for("the sentinel's replica list",
                 lambda: str(ports["REPLICA"]) in redis_cli(ports["SENTINEL"], "sentinel", "replicas", "mymaster"))
        ports["MEMC"] = free_port()
        started.append(Process(["memcached", "-l", "127.0.0.1", "-p", str(ports["MEMC"]), "-U", "0",
                             "-u", os.environ.get("USER") or subprocess.run(["whoami"], capture_output=True,
                                                                            text=True).stdout.strip()],
                            ports["MEMC"]))
        ports["DNS"] = free_port()
        started.append(Process(["/usr/sbin/dnsmasq", "--no-daemon", "--port=%d" % ports["DNS"], "--listen-address=127.0.0.1",
                             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                             "--pid-file=" + os.path.join(folder, "dnsmasq.pid"), "--local=/test/",
                             "--address=/example.test/10.1.2.3", "--host-record=host.test,10.9.8.7,fd00::7",
                             "--cname=alias.test,host.test", "--txt-record=txt.test,hello world,second",
                             "--txt-record=big.test," + ",".join(["t" * 200] * 4),
                             "--mx-host=example.test,mail.example.test,10",
                             "--srv-host=_http._tcp.example.test,host.test,80,1,5",
                             "--ptr-record=7.8.9.10.in-addr.arpa,host.test"], ports["DNS"]))
        ports["WS"] = free_port()
        started.append(Process([sys.executable, os.path.join(HELPERS, "ws_echo.py"), str(ports["WS"])], ports["WS"]))
        cert, key = os.path.join(folder, "ws.crt"), os.path.join(folder, "ws.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        ports["WSS"] = free_port()
        started.append(Process([sys.executable, os.path.join(HELPERS, "ws_echo.py"), str(ports["WSS"]), cert, key],
                            ports["WSS"]))
        ports["CLOSED"] = free_port()
        yield ports
    finally:
        for p in reversed(started):
            p.stop()


def fill(text, ports, ns):
    for k, v in ports.items():
        text = text.replace("{%s}" % k, str(v))
    return text.replace("{NS}", ns)


def for_nginx(lua):
    """Debian's nginx finds the libraries as nginx.X (its lua_package_path has /usr/share/lua/5.1)."""
    return re.sub(r'require(\s*\(?\s*)"resty\.((?:%s)[\w.]*)"' % "|".join(NGINX_NAMED), r'require\1"nginx.\2"', lua)


LOCATION = "/c_%s"
SUB_LUA = REDIS_CONN + r'''
local sub = conn()
sub:set_timeout(5000)
local res = sub:subscribe("{NS}:news")
ngx.say("subscribe: ", table.concat(res, ","))
local reply, err = sub:read_reply()
ngx.say("read_reply: ", tostring(reply and table.concat(reply, ",")), " ", tostring(err))
sub:close()
'''
PUB_LUA = REDIS_CONN + r'''
local pub = conn()
for i = 1, 100 do
  local n = pub:publish("{NS}:news", "extra!")
  if n > 0 then ngx.say("published to ", n, " after ", i > 1 and "retries" or "one try") break end
  ngx.sleep(0.02)
end
pub:close()
'''
EXTRA = {"pubsub_sub": SUB_LUA, "pubsub_pub": PUB_LUA,
         "both_names": r'''
ngx.say(tostring(require "resty.redis" == require "nginx.redis"), " ",
        tostring(require "resty.redis.connector" == require "nginx.redis.connector"), " ",
        tostring(require "resty.websocket.protocol" == require "nginx.websocket.protocol"), " ",
        type(require("nginx.dns.resolver").new))
local ok, err = pcall(require, "resty.nosuchlib")
ngx.say(tostring(ok), " ", tostring(err:find("no module 'nginx.nosuchlib'", 1, true) ~= nil))
'''}


EXTRA["lrucache_per_worker"] = r'''
local lrucache = require "resty.lrucache"
local c = package.loaded["{NS}.cache"]
if not c then
  c = lrucache.new(10)
  package.loaded["{NS}.cache"] = c
  ngx.say("created")
end
local n = (c:get("hits") or 0) + 1
c:set("hits", n)
ngx.say("hits ", n)
'''
# An access hook asking redis whether the user is denied, the content saying who passed.
ACCESS_LUA = REDIS_CONN + r'''
local red = conn()
local denied, err = red:sismember("{NS}:deny", ngx.var.http_x_user or "")
red:set_keepalive(100, 10)
if denied == 1 then return ngx.exit(403) end
ngx.ctx.checked = "checked"
'''
ACCESS_CONTENT = 'ngx.say("welcome ", ngx.var.http_x_user, " ", tostring(ngx.ctx.checked))'


@pytest.fixture(scope="module")
def servers(peers, tmp_path_factory):
    lua = {name: c.lua for name, c in CASES.items()}
    lua.update(EXTRA)
    nginx_locations = {LOCATION % n: for_nginx(fill(text, peers, "or")) for n, text in lua.items() if n != "both_names"}
    nginx_locations[LOCATION % "access"] = ("raw", "access_by_lua_block { %s } content_by_lua_block { %s }" % (
        for_nginx(fill(ACCESS_LUA, peers, "or")), ACCESS_CONTENT))
    p, nginx_port = start_openresty(tmp_path_factory.mktemp("openresty"), nginx_locations,
                                    server="default_type text/plain; lua_socket_log_errors off;")
    try:
        g = Gateway(tmp_path_factory.mktemp("moongate"),
                    "".join('mg.route("%s", function(req)\n%s\nend)\n' % (LOCATION % n, fill(text, peers, "mg"))
                            for n, text in lua.items()))
    except BaseException:
        stop_openresty(p)
        raise
    yield {"openresty": nginx_port, "moongate": g.port}
    stop_openresty(p)
    g.stop()


def answer(port, name, headers=()):
    resp = request(port, path=LOCATION % name, headers=list(headers))
    return resp


def check(servers, peers, name, side):
    case = CASES[name]
    ns = "or" if side == "openresty" else "mg"
    resp = answer(servers[side], name, case.headers)
    assert resp.status == 200, resp.body
    assert resp.body.decode("latin-1") == fill(case.expect, peers, ns)
    if case.set_cookies is not None:
        assert [v for k, v in resp.headers if k.lower() == "set-cookie"] == case.set_cookies


def params():
    out = []
    for name in sorted(CASES):
        marks = [pytest.mark.xfail(strict=True, reason=CASES[name].xfail)] if CASES[name].xfail else []
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.mark.parametrize("name", params())
def test_library_under_moongate(servers, peers, name):
    check(servers, peers, name, "moongate")


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_snippet_under_openresty(servers, peers, name):
    """The expected text is OpenResty's: the snippet run by nginx + lua-nginx-module gives it too."""
    check(servers, peers, name, "openresty")


@pytest.mark.parametrize("side", ["moongate", "openresty"])
def test_pubsub_across_requests(servers, side):
    """One request subscribes and waits in read_reply while another request publishes."""
    port = servers[side]
    got = {}

    def subscriber():
        got["sub"] = answer(port, "pubsub_sub")

    t = threading.Thread(target=subscriber)
    t.start()
    pub = answer(port, "pubsub_pub")
    t.join(10)
    assert not t.is_alive()
    ns = "or" if side == "openresty" else "mg"
    assert pub.status == 200 and pub.body.decode().startswith("published to 1 after ")
    assert got["sub"].body.decode() == "subscribe: subscribe,%s:news,1\nread_reply: message,%s:news,extra! nil\n" % (ns, ns)


def test_both_names_load_one_module(servers):
    """moongate finds Debian's libraries under the names OpenResty code uses (resty.X) and the
    names Debian installs them under (nginx.X), as one module."""
    resp = answer(servers["moongate"], "both_names")
    assert resp.body.decode() == "true true true function\nfalse true\n"


@pytest.mark.parametrize("side", ["moongate", "openresty"])
def test_lrucache_lives_across_requests(servers, side):
    """A cache a module keeps (README: per worker) serves the next requests."""
    bodies = [answer(servers[side], "lrucache_per_worker").body.decode() for _ in range(3)]
    assert bodies == ["created\nhits 1\n", "hits 2\n", "hits 3\n"]


def access_hook_checks(port):
    ok = answer(port, "access", [("X-User", "alice")])
    assert (ok.status, ok.body) == (200, b"welcome alice checked\n")
    assert answer(port, "access", [("X-User", "mallory")]).status == 403
    assert answer(port, "access").status == 200


def test_redis_in_an_access_hook_under_moongate(peers, tmp_path):
    """An access hook refusing the users a redis set names (its own gateway, stopped here, so
    that a sanitizer report fails this test)."""
    redis_cli(peers["REDIS"], "sadd", "mg:deny", "mallory")
    g = Gateway(tmp_path, 'mg.route("%s", function(req)\n%s\nend, {hooks = {access = function(req)\n%s\nend}})\n' % (
        LOCATION % "access", ACCESS_CONTENT, fill(ACCESS_LUA, peers, "mg")))
    try:
        access_hook_checks(g.port)
    finally:
        redis_cli(peers["REDIS"], "del", "mg:deny")
        g.stop()


def test_redis_in_an_access_hook_under_openresty(servers, peers):
    """The same access_by_lua under OpenResty."""
    redis_cli(peers["REDIS"], "sadd", "or:deny", "mallory")
    try:
        access_hook_checks(servers["openresty"])
    finally:
        redis_cli(peers["REDIS"], "del", "or:deny")
