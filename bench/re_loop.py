#!/usr/bin/env python3
"""ngx.re.match and ngx.re.find with "jo" in a loop: ns per call, moongate against OpenResty
(Debian's nginx + lua-nginx-module with lua-resty-core), in one run. Run by hand, never from
the timed tests:

    bench/re_loop.py BUILD_DIR [--n 1000000] [--rounds 3]

moongate's mg.re runs either through LuaJIT's FFI (lua/moongate/re.lua) or as classic Lua C
functions (src/lua/lua_re.c); a worker chooses the FFI when the JIT compiler is on
(lua_max_run_time = 0) and the classic functions when it is off (lua_max_run_time on, the
default). The table shows all four ({classic C, FFI} x {lua_max_run_time default, 0}, the
choice forced with mg.re._impl) beside OpenResty with its JIT on (as it runs) and off
(jit.off(), for comparison with moongate's default). Each cell is the median over the rounds of
the CPU time (os.clock) of N calls divided by N, measured inside the server's Lua; the first
10,000 calls warm the cache and the JIT and are not counted.
"""
import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

LOOP = r'''
local function loop(NS, fn, n)
  local f = NS.re[fn]
  local s = "GET /api/v2/users/12345 HTTP/1.1"
  local p = "^/api/v(\\d+)/(\\w+)"
  local s2 = "/api/v2/users/12345"
  for _ = 1, 10000 do f(s2, p, "jo") end
  local t0 = os.clock()
  local r
  for _ = 1, n do r = f(s2, p, "jo") end
  local dt = os.clock() - t0
  assert(r, "no match")
  return string.format("%.1f", dt * 1e9 / n)
end
'''

CASES = [("match", "match"), ("find", "find")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", help="the build folder holding moongate")
    ap.add_argument("--n", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["MG_BUILD"] = os.path.abspath(args.build)
    from conftest import Gateway, request  # noqa: E402  (reads MG_BUILD)
    from openresty import start_openresty, stop_openresty  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="re-loop-")
    n = args.n
    locations = {}
    for fn, _ in CASES:
        locations["/" + fn] = LOOP + 'ngx.print(loop(ngx, "%s", %d))' % (fn, n)
        locations["/" + fn + "-nojit"] = LOOP + 'jit.off() jit.flush() local r = loop(ngx, "%s", %d) jit.on() ngx.print(r)' % (fn, n)
    nginx, oport = start_openresty(os.path.join(tmp, "openresty"), locations)
    gateways = {}
    try:
        for label, setting in (("default", ""), ("0", "mg.set { lua_max_run_time = 0 }\n")):
            lua = setting + LOOP + "".join(
                'mg.route("=/%s-%s", function() local was = mg.re._impl() mg.re._impl("%s") '
                'local r = loop(mg, "%s", %d) mg.re._impl("auto") return 200, was .. " " .. r end)\n'
                % (fn, impl, impl, fn, n) for fn, _ in CASES for impl in ("c", "ffi"))
            d = os.path.join(tmp, "moongate-" + label)
            os.makedirs(d)
            gateways[label] = Gateway(d, lua)
        rows = []
        for fn, _ in CASES:
            cells = {}
            for _ in range(args.rounds):
                for key, port, path in [("openresty jit", oport, "/" + fn), ("openresty jit.off", oport, "/" + fn + "-nojit")] + [
                        ("moongate %s max_run_time=%s" % (impl, label), g.port, "/%s-%s" % (fn, impl))
                        for label, g in gateways.items() for impl in ("c", "ffi")]:
                    r = request(port, path=path)
                    body = r.body.decode()
                    if r.status != 200:
                        raise SystemExit("%s %s: %d %s" % (key, path, r.status, body))
                    cells.setdefault(key, []).append(float(body.split()[-1]))
                    if key.startswith("moongate"):
                        cells.setdefault(key + " chosen", []).append(body.split()[0])
            rows.append((fn, cells))
        print("ns per call, %d calls of ngx.re.FN(\"/api/v2/users/12345\", \"^/api/v(\\\\d+)/(\\\\w+)\", \"jo\"), "
              "median of %d rounds" % (n, args.rounds))
        keys = ["openresty jit", "openresty jit.off"] + ["moongate %s max_run_time=%s" % (i, l)
                                                        for l in ("0", "default") for i in ("ffi", "c")]
        print("%-34s %10s %10s" % ("", "match", "find"))
        for k in keys:
            print("%-34s %10.1f %10.1f" % (k, statistics.median(rows[0][1][k]), statistics.median(rows[1][1][k])))
        print("the workers' own choice: lua_max_run_time=0 -> %s, default -> %s" % (
            rows[0][1]["moongate c max_run_time=0 chosen"][0], rows[0][1]["moongate c max_run_time=default chosen"][0]))
    finally:
        stop_openresty(nginx)
        for g in gateways.values():
            g.stop()


if __name__ == "__main__":
    main()
