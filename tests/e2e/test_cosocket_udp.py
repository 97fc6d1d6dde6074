"""UDP cosockets, mg.socket.udp() (docs/lua-api.md, "Cosockets"), differential against Debian's
nginx + lua-nginx-module: the same Lua under both, every result compared line by line.

A Python UDP server on loopback answers each datagram: "echo:<data>", or for "multi N", N
datagrams "part1".."partN"; "quiet" gets no answer (a receive times out). A unix datagram
server does the same on a socket path.
"""
import os
import socket
import threading

import pytest

from conftest import request
from openresty import start_openresty, stop_openresty


def answer(s):
    for _ in range(100000):
        try:
            data, peer = s.recvfrom(70000)
        except OSError:
            return
        try:
            if data.startswith(b"multi "):
                for i in range(int(data[6:])):
                    s.sendto(b"part%d" % (i + 1), peer)
            elif data == b"big":
                s.sendto(b"x" * 60000, peer)
            elif data != b"quiet":
                s.sendto(b"echo:" + data, peer)
        except OSError:
            pass


@pytest.fixture(scope="module")
def udp_server(tmp_path_factory):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    path = str(tmp_path_factory.mktemp("dgram") / "echo.sock")
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    u.bind(path)
    for sock in (s, u):
        threading.Thread(target=answer, args=(sock,), daemon=True).start()
    # A port where nobody listens: bound, read its number, closed.
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.bind(("127.0.0.1", 0))
    dead = d.getsockname()[1]
    d.close()
    yield {"port": s.getsockname()[1], "path": path, "dead": dead}
    s.close()
    u.close()


CASES = {
    "echo": r'''
local u = UDP()
OUT(u:setpeername("127.0.0.1", PORT))
OUT(u:send("hello"))
OUT(u:receive())
OUT(u:send({"a", {"b", 7, {1.5}}}))
OUT(u:receive())
OUT(u:send(nil)) OUT(u:receive())
OUT(u:send(true)) OUT(u:receive())
OUT(u:send(42)) OUT(u:receive())
OUT(u:close())
OUT(u:close())
OUT(u:send("x"))''',
    "several_datagrams": r'''
local u = UDP()
u:settimeout(2000)
assert(u:setpeername("127.0.0.1", PORT))
OUT(u:send("multi 3"))
for i = 1, 3 do OUT(u:receive()) end
OUT(u:send("big"))
local d = u:receive() OUT(#d)
OUT(u:send("big"))
OUT(u:receive(10))''',
    "timeout": r'''
local u = UDP()
u:settimeout(200)
assert(u:setpeername("127.0.0.1", PORT))
OUT(u:send("quiet"))
OUT(u:receive())
OUT(u:send("again"))
OUT(u:receive())''',
    "unreachable": r'''
local u = UDP()
u:settimeout(1000)
OUT(u:setpeername("127.0.0.1", DEAD))
OUT(u:send("anyone"))
OUT(u:receive())
OUT(u:send("anyone"))
OUT(u:receive())''',
    "unix": r'''
local u = UDP()
u:settimeout(2000)
OUT(u:setpeername("unix:PATH"))
OUT(u:send("over unix"))
OUT(u:receive())
local v = UDP()
OUT(v:setpeername("unix:PATH.missing"))
OUT(v:send("x"))''',
    "busy": r'''
local u = UDP() u:settimeout(300)
assert(u:setpeername("127.0.0.1", PORT))
u:send("quiet")
local t = SPAWN(function() return u:receive() end)
OUT(u:send("x"))
OUT(u:receive())
OUT(u:close())
OUT(u:setpeername("127.0.0.1", PORT))
OUT(WAIT(t))
OUT(u:close())''',
    "arguments": r'''
local u = UDP()
OUT(u:setpeername("127.0.0.1", 70000))
OUT(u:send("x"))
OUT(u:receive())
OUT(u:close())
local ok, err = pcall(u.setpeername, u)
OUT(ok, (tostring(err):gsub("^.-:%d+: ", "")))
assert(u:setpeername("127.0.0.1", PORT))
ok, err = pcall(u.send, u, {true})
OUT(ok, (tostring(err):gsub("^.-:%d+: ", "")))
ok, err = pcall(u.send, u, print)
OUT(ok, (tostring(err):gsub("^.-:%d+: ", "")))
OUT(u:setpeername("127.0.0.1", PORT))
u:settimeout(0)
OUT(u:send("after")) OUT(u:receive())''',
}


def out_fn(say):
    return ("local function OUT(...) local t = {} for i = 1, select('#', ...) do t[#t + 1] = tostring((select(i, ...))) end "
            + say + "(table.concat(t, ' ')) end\n")


def body_for(case, srv, udp, say):
    ngx = udp.startswith("ngx")
    lua = CASES[case].replace("SPAWN(", "ngx.thread.spawn(" if ngx else "mg.spawn(") \
        .replace("WAIT(", "ngx.thread.wait(" if ngx else "mg.wait(").replace("UDP()", udp + "()").replace("PORT", str(srv["port"])) \
        .replace("DEAD", str(srv["dead"])).replace("PATH", srv["path"])
    return out_fn(say) + lua


@pytest.fixture(scope="module")
def openresty(tmp_path_factory, udp_server):
    d = tmp_path_factory.mktemp("openresty")
    locs = {"/" + c: body_for(c, udp_server, "ngx.socket.udp", "ngx.say") for c in CASES}
    proc, port = start_openresty(d, locs, http="lua_socket_log_errors off; lua_socket_read_timeout 1s;")
    yield port
    stop_openresty(proc)


@pytest.fixture
def ours(gateway, udp_server):
    lines = ["mg.set { lua_socket_timeout = 1000 }"]
    for c in CASES:
        lines.append('mg.route("=/%s", function(req)\nlocal acc = {}\nlocal function o(s) acc[#acc + 1] = s .. "\\n" end\n'
                     '%s\nreturn 200, table.concat(acc)\nend)' % (c, body_for(c, udp_server, "mg.socket.udp", "o")))
    return gateway("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_udp_results_match_openresty(ours, openresty, case):
    mine = request(ours.port, path="/" + case).body.decode()
    theirs = request(openresty, path="/" + case).body.decode()
    assert mine == theirs, (case, mine, theirs)


def test_udp_results_spelled_out(ours):
    """What the differential compares, so that a change on both sides is seen."""
    got = request(ours.port, path="/unreachable").body.decode().splitlines()
    assert got[:3] == ["1", "1", "nil connection refused"]
    got = request(ours.port, path="/timeout").body.decode().splitlines()
    assert got == ["1", "nil timeout", "1", "echo:again"]


def test_host_names_resolve_and_the_socket_closes_with_the_request(gateway, udp_server):
    g = gateway('mg.route("=/t", function(req)\n'
                'local u = mg.socket.udp() u:settimeout(2000)\n'
                'assert(u:setpeername("localhost", %d))\n'
                'assert(u:send("by name"))\n'
                'local bad = mg.socket.udp()\n'
                'local ok, err = bad:setpeername("no-such-host.invalid", 53)\n'
                'return 200, assert(u:receive()) .. "|" .. tostring(ok) .. " " .. tostring(err) end)\n'
                % udp_server["port"])
    assert request(g.port, path="/t").body == b"echo:by name|nil host not found"
    # The socket left open by the Lua code is closed with the request: the gateway's stop
    # checks that the worker holds no more descriptors than at its start.
