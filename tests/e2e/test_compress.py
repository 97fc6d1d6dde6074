"""SPEC 19: response compression. Bodies are decoded by Python's gzip, brotli and zstandard and by
curl --compressed; the encoding chosen follows the client's q-values; the skip rules, min_length,
types and a route's `compress = false` hold; HEAD gets a GET's headers; Lua, SCGI and static bodies
are compressed; a 20 MB stream keeps the worker's memory bounded; HTTP/2 (h2c) gives the same."""
import gzip
import os
import socket
import subprocess
import time
import zlib

import brotli
import zstandard

from conftest import request


def html(n):
    """Realistic-ish HTML, not one repeated byte."""
    rows = []
    i = 0
    while sum(len(r) for r in rows) < n:
        rows.append('<tr class="r%d"><td><a href="/item/%d">Item %d</a></td><td>%d.%02d EUR</td><td>%s</td></tr>\n'
                    % (i % 7, i * 37 % 1000, i, i * 13 % 500, i % 100, "lorem ipsum dolor"[: 5 + i % 12]))
        i += 1
    return ("<!doctype html><html><body><table>\n" + "".join(rows))[:n]


PAGE = html(20000)

INIT = r"""
mg.listen("127.0.0.1:{PORT}", { http2 = true })
mg.set { compress = { min_length = 100 } }
local PAGE = [==[PAGETEXT]==]
mg.route("=/lua", function(req) ngx.header["Content-Type"] = "text/html"; ngx.say(PAGE) end)
mg.route("=/lua-len", function(req) return 200, PAGE, { ["Content-Type"] = "text/html" } end)
mg.route("=/small", function(req) ngx.header["Content-Type"] = "text/html"; ngx.header["Content-Length"] = 50; ngx.print(string.rep("a", 50)) end)
mg.route("=/json", function(req) ngx.header["Content-Type"] = "application/json; charset=utf-8"; ngx.say(PAGE) end)
mg.route("=/png", function(req) ngx.header["Content-Type"] = "image/png"; ngx.say(PAGE) end)
mg.route("=/notransform", function(req) ngx.header["Content-Type"] = "text/html"; ngx.header["Cache-Control"] = "public, no-transform"; ngx.say(PAGE) end)
mg.route("=/encoded", function(req) ngx.header["Content-Type"] = "text/html"; ngx.header["Content-Encoding"] = "gzip"; ngx.print("not really gzip") end)
mg.route("=/204", function(req) return 204 end)
mg.route("=/304", function(req) ngx.header["Content-Type"] = "text/html"; return 304 end)
mg.route("=/vary", function(req) ngx.header["Content-Type"] = "text/html"; ngx.header["Vary"] = "Cookie"; ngx.header["ETag"] = '"abc"'; ngx.say(PAGE) end)
mg.route("=/off", function(req) ngx.header["Content-Type"] = "text/html"; ngx.say(PAGE) end, { compress = false })
mg.route("=/all", function(req) ngx.header["Content-Type"] = "application/x-thing"; ngx.say(PAGE) end, { compress = { types = "*", levels = { gzip = 6 } } })
mg.route("=/filtered", function(req) ngx.header["Content-Type"] = "text/html"; ngx.say(PAGE) end,
  { hooks = { body_filter = function(req, res, chunk, eof) return chunk:upper() end } })
mg.route("=/parent", function(req)
  local r = ngx.location.capture("/lua")
  return 200, (r.header["Content-Encoding"] or "none") .. " " .. #r.body, { ["Content-Type"] = "text/plain" }
end)
mg.route("/bytes/", "scgi://127.0.0.1:{BACKEND}/", { compress = { types = "*" } })
mg.route("/stream/", "scgi://127.0.0.1:{BACKEND}/", { compress = { types = "*" } })
mg.route("/s/", { root = "static" })
"""


def start(gateway, echo_backend):
    # The static root must exist before the gateway loads: the fixture's folder for subdir "c".
    import inspect
    tmp = inspect.getclosurevars(gateway).nonlocals["tmp_path"]
    st = tmp / "c" / "static"
    st.mkdir(parents=True, exist_ok=True)
    (st / "index.html").write_text(PAGE)
    (st / "data.bin").write_bytes(os.urandom(5000))
    # Past one 64 KiB block: read in place into libdeflate's buffer (200 KB), streamed through
    # zlib (300 KB, over the one-buffer limit).
    (st / "big.html").write_text((PAGE * (200000 // len(PAGE) + 1))[:200000])
    (st / "huge.html").write_text((PAGE * (300000 // len(PAGE) + 1))[:300000])
    return gateway(INIT.replace("PAGETEXT", PAGE), echo_backend, subdir="c")


def get(g, path, ae="gzip", method="GET", headers=(), version="1.1"):
    h = list(headers)
    if ae is not None:
        h.append(("Accept-Encoding", ae))
    return request(g.port, method, path, headers=h, version=version)


def decode(r):
    enc = r.header("Content-Encoding")
    if enc == "gzip":
        return gzip.decompress(r.body)
    if enc == "br":
        return brotli.decompress(r.body)
    if enc == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(r.body)
    return r.body


def test_each_encoding_decodes_lua_streamed_and_whole(gateway, echo_backend):
    g = start(gateway, echo_backend)
    for path, body in (("/lua", PAGE + "\n"), ("/lua-len", PAGE)):
        for enc in ("gzip", "br", "zstd"):
            r = get(g, path, enc)
            assert r.status == 200
            assert r.header("Content-Encoding") == enc, (path, enc)
            assert r.header("Content-Length") is None
            assert r.header("Vary") == "Accept-Encoding"
            assert len(r.body) < len(body) / 3
            assert decode(r).decode() == body, (path, enc)


def test_q_values_choose(gateway, echo_backend):
    g = start(gateway, echo_backend)
    cases = [("gzip, deflate, br, zstd", "br"), ("gzip, zstd", "zstd"), ("br;q=0.5, gzip", "gzip"),
             ("br;q=0, zstd;q=0, gzip;q=0.1", "gzip"), ("*", "br"), ("*;q=0.5, br;q=0", "zstd"),
             ("gzip;q=0", None), ("identity", None), ("deflate", None), (None, None)]
    for ae, want in cases:
        r = get(g, "/lua", ae)
        assert r.header("Content-Encoding") == want, ae
        assert decode(r).decode() == PAGE + "\n"
        assert r.header("Vary") == "Accept-Encoding"  # a cache must know, compressed or not


def test_skip_rules(gateway, echo_backend):
    g = start(gateway, echo_backend)
    assert get(g, "/small").header("Content-Encoding") is None           # min_length
    assert get(g, "/small").body == b"a" * 50
    assert get(g, "/json").header("Content-Encoding") == "gzip"         # type without parameters
    assert get(g, "/png").header("Content-Encoding") is None            # type not listed
    r = get(g, "/notransform")
    assert r.header("Content-Encoding") is None and r.body.decode() == PAGE + "\n"
    r = get(g, "/encoded")
    assert r.header("Content-Encoding") == "gzip" and r.body == b"not really gzip"
    assert get(g, "/204").status == 204
    r = get(g, "/304")
    assert r.status == 304 and r.header("Content-Encoding") is None
    r = get(g, "/lua", version="1.0")                                    # as nginx's gzip_http_version 1.1
    assert r.header("Content-Encoding") is None and r.body.decode() == PAGE + "\n"
    r = get(g, "/off")                                                   # route compress = false
    assert r.header("Content-Encoding") is None and r.header("Vary") is None
    r = get(g, "/all")                                                   # types = "*", level 6
    assert r.header("Content-Encoding") == "gzip" and decode(r).decode() == PAGE + "\n"
    # A Range answer from a static file is not compressed.
    r = get(g, "/s/index.html", headers=[("Range", "bytes=0-99")])
    assert r.status == 206 and r.header("Content-Encoding") is None and r.body.decode() == PAGE[:100]
    # A subrequest's capture gets the body as is; the parent's answer is compressed on its own.
    r = get(g, "/parent", ae=None)
    assert r.body.decode() == "none %d" % (len(PAGE) + 1)


def test_vary_merged_etag_weakened_filters_run_first(gateway, echo_backend):
    g = start(gateway, echo_backend)
    r = get(g, "/vary", "br")
    assert r.header("Vary") == "Cookie, Accept-Encoding"
    assert r.header("ETag") == 'W/"abc"'
    assert decode(r).decode() == PAGE + "\n"
    r = get(g, "/filtered", "zstd")
    assert decode(r).decode() == (PAGE + "\n").upper()


def test_head_gets_the_headers_of_get(gateway, echo_backend):
    g = start(gateway, echo_backend)
    for path in ("/lua-len", "/s/index.html"):
        r = get(g, path, "gzip", method="HEAD")
        assert r.header("Content-Encoding") == "gzip", path
        assert r.header("Vary") == "Accept-Encoding"
        assert r.header("Content-Length") is None
        assert r.body == b""


def test_scgi_and_static_and_access_log_bytes(gateway, echo_backend):
    g = start(gateway, echo_backend)
    r = get(g, "/bytes/300000", "gzip")
    assert r.header("Content-Encoding") == "gzip" and decode(r) == b"x" * 300000
    r = get(g, "/stream/100000", "br")
    assert r.header("Content-Encoding") == "br" and decode(r) == b"y" * 100000
    r = get(g, "/s/index.html", "zstd")
    assert r.header("Content-Encoding") == "zstd" and decode(r).decode() == PAGE
    assert r.header("ETag").startswith('W/"')
    for name, size in (("index.html", len(PAGE)), ("big.html", 200000), ("huge.html", 300000)):
        r = get(g, "/s/" + name, "gzip")
        assert r.header("Content-Type") == "text/html" and r.header("Content-Encoding") == "gzip"
        assert decode(r).decode() == (PAGE * (size // len(PAGE) + 1))[:size]
    r = get(g, "/s/data.bin", "gzip")  # application/octet-stream is not a default type
    assert r.header("Content-Encoding") is None and len(r.body) == 5000
    r = get(g, "/lua-len", "gzip")
    n = len(r.body)
    time.sleep(0.3)
    line = [l for l in g.access_log().splitlines() if "/lua-len" in l][-1]
    assert (" 200 %d " % n) in line, line  # the compressed bytes, as nginx


def test_curl_compressed_and_http2(gateway, echo_backend):
    g = start(gateway, echo_backend)
    base = "http://127.0.0.1:%d" % g.port
    for extra in ([], ["--http2-prior-knowledge"]):
        out = subprocess.run(["curl", "-s", "--compressed"] + extra + [base + "/lua"], capture_output=True, timeout=10)
        assert out.stdout.decode() == PAGE + "\n"
        for path, enc in (("/lua", "br"), ("/lua-len", "zstd"), ("/s/index.html", "gzip"), ("/stream/70000", "gzip")):
            out = subprocess.run(["curl", "-s", "-D", "-", "-H", "Accept-Encoding: " + enc] + extra + [base + path],
                                 capture_output=True, timeout=10)
            head, _, body = out.stdout.partition(b"\r\n\r\n")
            assert b"content-encoding: " + enc.encode() in head.lower(), (extra, path)
            assert b"content-length" not in head.lower()
            if enc == "gzip":
                plain = gzip.decompress(body)
            elif enc == "br":
                plain = brotli.decompress(body)
            else:
                plain = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            assert len(plain) in (len(PAGE), len(PAGE) + 1, 70000), (extra, path)
        out = subprocess.run(["curl", "-s", "-I", "-H", "Accept-Encoding: gzip"] + extra + [base + "/s/index.html"],
                             capture_output=True, timeout=10)
        assert b"content-encoding: gzip" in out.stdout.lower()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_20mb_stream_read_slowly_keeps_memory_bounded(gateway, echo_backend):
    g = start(gateway, echo_backend)
    pid = g.workers()[0]
    get(g, "/stream/1000000", "gzip")  # warm up
    before = rss_kib(pid)
    for enc, dec in (("gzip", zlib.decompressobj(31)), ("zstd", zstandard.ZstdDecompressor().decompressobj()),
                     ("br", brotli.Decompressor())):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /stream/20000000 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: %s\r\nConnection: close\r\n\r\n" % enc.encode())
        raw = b""
        peak = 0
        while True:
            chunk = s.recv(2048)
            if not chunk:
                break
            raw += chunk
            time.sleep(0.0005)
            peak = max(peak, rss_kib(pid))
        s.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Content-Encoding: " + enc.encode() in head
        plain = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            data = rest[:size]
            body = rest[size + 2:]
            plain_part = dec.process(data) if enc == "br" else dec.decompress(data)
            plain += plain_part
        assert len(plain) == 20000000 and plain.count(b"y") == 20000000
        # Compressor state plus a block or two: far below the 20 MB that went through.
        assert peak - before < 16 * 1024, (enc, before, peak)


def test_bad_options_name_the_line(gateway, tmp_path):
    import pytest
    from conftest import MOONGATE
    for bad, words in (('mg.set { compress = { level = 3 } }', "unknown option"),
                       ('mg.set { compress = { levels = { gzip = 10 } } }', "from 1 to 9"),
                       ('mg.set { compress = { types = { "html" } } }', "MIME type"),
                       ('mg.route("/x", "scgi://127.0.0.1:1", { compress = "yes" })', "expected true, false")):
        p = tmp_path / "bad.lua"
        p.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\n' + bad + "\n")
        out = subprocess.run([MOONGATE, "-t", "-c", str(p)], capture_output=True, timeout=10)
        text = (out.stdout + out.stderr).decode()
        assert out.returncode != 0 and "bad.lua:3" in text and words in text, text


def test_precompressed_siblings(gateway, tmp_path):
    st = tmp_path / "p" / "www"
    st.mkdir(parents=True)
    (st / "app.js").write_text("console.log('plain');\n" * 50)
    (st / "app.js.gz").write_bytes(gzip.compress(b"GZ-SIBLING"))
    (st / "app.js.br").write_bytes(brotli.compress(b"BR-SIBLING"))
    (st / "old.css").write_text("body{}\n" * 50)
    (st / "old.css.gz").write_bytes(gzip.compress(b"OLD"))
    t = time.time()
    os.utime(st / "old.css.gz", (t - 3600, t - 3600))  # older than its file: ignored
    g = gateway('mg.route("/p/", { root = "www", precompressed = true })\n', subdir="p")
    r = get(g, "/p/app.js", "gzip, br")
    assert r.header("Content-Encoding") == "br" and brotli.decompress(r.body) == b"BR-SIBLING"
    assert r.header("Content-Type").startswith(("application/javascript", "text/javascript"))
    assert r.header("Vary") == "Accept-Encoding"
    etag_br = r.header("ETag")
    r = get(g, "/p/app.js", "gzip;q=1, br;q=0.5")
    assert r.header("Content-Encoding") == "gzip" and gzip.decompress(r.body) == b"GZ-SIBLING"
    assert r.header("ETag") != etag_br
    assert int(r.header("Content-Length")) == len(r.body)
    r = get(g, "/p/app.js", "zstd")  # no .zst sibling: the file as is
    assert r.header("Content-Encoding") is None and r.body.startswith(b"console.log")
    r = get(g, "/p/old.css", "gzip")
    assert r.header("Content-Encoding") is None and r.body.startswith(b"body{}")


def test_body_filter_failure_before_the_first_byte_is_a_clean_500(gateway):
    g = gateway(r'''
mg.set { compress = { types = "*", min_length = 1 } }
mg.route("=/boom", function(req) return 200, string.rep("page ", 4000), { ["Content-Type"] = "text/html" } end,
  { hooks = { body_filter = function(req, res, chunk, eof) error("boom") end } })
''', subdir="b")
    r = get(g, "/boom", "gzip")
    assert r.status == 500
    assert decode(r) == b"500 Internal Server Error\n"
