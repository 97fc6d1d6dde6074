"""Debian's nginx + lua-nginx-module (OpenResty's Lua) for the differential tests.

    proc, port = start_openresty(folder, {"/t": "ngx.say(1)"})
    proc, port = start_openresty(folder, {"/t": ("file", "/path/t.lua")}, http="lua_shared_dict d 1m;")

Each location is `location = PATH { content_by_lua_block { LUA } }`, or content_by_lua_file for
a ("file", PATH) pair, a prefix location for a ("prefix", LUA) pair, or the raw directives of a
("raw", TEXT) pair. `http` goes into the http
block, `server` into the server block. The server runs in one process (master_process off) so
that per-worker state (timers, caches, pools) is the one the Lua sees, as in a moongate worker;
`workers=N` runs a master and N workers instead.
Stop it with stop_openresty(proc).
"""
import os
import shutil
import subprocess

import pytest

from conftest import free_port, wait_port

NGINX_MODULES = "/usr/lib/nginx/modules"


def require_openresty():
    if not shutil.which("nginx") or not os.path.exists(os.path.join(NGINX_MODULES, "ngx_http_lua_module.so")):
        pytest.fail("nginx with lua-nginx-module is missing: make deps installs nginx-light and libnginx-mod-http-lua")


def location(path, body):
    if isinstance(body, tuple) and body[0] == "file":
        return "location = %s { content_by_lua_file %s; }" % (path, body[1])
    if isinstance(body, tuple) and body[0] == "prefix":
        return "location %s { content_by_lua_block { %s } }" % (path, body[1])
    if isinstance(body, tuple) and body[0] == "raw_prefix":
        return "location %s { %s }" % (path, body[1])
    if isinstance(body, tuple) and body[0] == "raw":
        return "location = %s { %s }" % (path, body[1])
    return "location = %s { content_by_lua_block { %s } }" % (path, body)


def start_openresty(folder, locations, http="", server="", name="nginx", workers=0):
    """nginx in `folder` (its logs in folder/logs) serving `locations`: (process, port). With
    `workers`, a master and that many worker processes, as nginx is deployed."""
    require_openresty()
    folder = str(folder)
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    port = free_port()
    conf = os.path.join(folder, name + ".conf")
    blocks = "\n".join(location(p, b) for p, b in locations.items())
    with open(conf, "w") as f:
        f.write("""
load_module %(m)s/ndk_http_module.so;
load_module %(m)s/ngx_http_lua_module.so;
daemon off; %(mp)s
error_log %(d)s/logs/error.log; pid %(d)s/%(n)s.pid;
events {}
http { access_log off; %(h)s
  server { listen 127.0.0.1:%(p)d; %(s)s
%(b)s
  } }
""" % {"m": NGINX_MODULES, "d": folder, "n": name, "p": port, "h": http, "s": server, "b": blocks,
       "mp": "master_process on; worker_processes %d;" % workers if workers else "master_process off;"})
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", folder], stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def stop_openresty(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
