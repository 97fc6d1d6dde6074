#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_h2 (tests/fuzz/corpus/h2/) in its record format (the
comment at the top of tests/fuzz/fuzz_h2.c): `python3 tests/fuzz/h2_seeds.py`."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "h2")

# Indexes in fuzz_h2.c's tables.
NAMES = [":method", ":scheme", ":authority", ":path", ":status", ":protocol", "host", "te", "connection",
         "keep-alive", "transfer-encoding", "upgrade", "cookie", "content-length", "content-type", "expect", "a",
         "b", "c", "w", "deny", "x", "x-user", "authorization", "proxy", "x_under", "Upper", "user-agent", "accept",
         "trailer", "x-forwarded-for", "http-x", "proxy-connection", "x.dot", "cookie2", "accept-encoding", "bf"]
VALUES = ["", "GET", "POST", "HEAD", "CONNECT", "/scgi", "/lua", "/wait", "/static/dpkg/copyright", "http", "https",
          "h", "H", "example.com:8080", "trailers", "gzip", "0", "1", "5", "100-continue", "a=1", "b=2; c=3",
          "alice", "Basic eA==", "text/plain", "close", "x", " x", "x ", "a\x01b", "\xc3\xa9", "a, b", "BIG", "*", "eof"]
METHODS = ["GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "DELETE", "get"]
PATHS = ["/scgi", "/scgi/x?q=1", "/scgi?a=%20&b", "/scgi/%2e%2e/lua", "//scgi", "/lua", "/lua?x=1", "/re",
         "/wait", "/stream?q", "/static/dpkg/copyright", "/static/dpkg/changelog.gz", "/static/",
         "/static/../../etc/passwd", "/static/%00", "/err", "/go", "/nothing", "*", "", "lua", "/lua#frag",
         "/lua/\xff", "/a b", "/scgi/", "/scgi/big", "/scgi/cut", "/stream", "/scgi/hold", "/lua?x=%41",
         "/static/dpkg/AUTHORS", "/scgi/nolen"]

OPT_BIG_WINDOWS, OPT_SMALL_SNDBUF, OPT_HALF_CLOSE, OPT_SPLIT_PREFACE = 1, 2, 4, 8
OPT_NO_SETTINGS, OPT_NO_READ, OPT_ZERO_WINDOW, OPT_CLOSE_UNREAD = 16, 32, 64, 128
END_STREAM, END_HEADERS, PADDED, PRIORITY, NO_END_HEADERS = 1, 4, 8, 0x20, 0x40


def sid(n):
    """The stream byte for stream n."""
    if n % 2:
        return bytes([(n - 1) // 2])
    return bytes([0x80 | n])


def fields(pairs):
    b = bytes([len(pairs)])
    for name, value in pairs:
        b += bytes([NAMES.index(name)])
        if value in VALUES:
            b += bytes([VALUES.index(value)])
        else:
            raw = value.encode("latin-1")
            b += bytes([len(VALUES) + len(raw)]) + raw
    return b


def request(stream, method, path, pairs=(), flags=0, o=0):
    m = METHODS.index(method) + 8 * PATHS.index(path)
    return bytes([1, flags]) + sid(stream) + bytes([m, o]) + fields(list(pairs))


def data(stream, body, flags=0):
    return bytes([0, flags]) + sid(stream) + bytes([len(body)]) + body


def control(kind, stream, payload, flags=0):
    return bytes([kind, flags]) + sid(stream) + bytes([0xc0 + len(payload)]) + payload


def rst(stream, code):
    return control(3, stream, struct.pack(">I", code))


def window_update(stream, inc):
    return control(8, stream, struct.pack(">I", inc))


def settings(entries, flags=0):
    return control(4, 0, b"".join(struct.pack(">HI", k, v) for k, v in entries), flags)


def ping(payload=b"12345678", flags=0):
    return control(6, 0, payload, flags)


def goaway(last, code):
    return control(7, 0, struct.pack(">II", last, code))


def continuation(stream, pairs, flags=END_HEADERS):
    return bytes([9, flags]) + sid(stream) + fields(list(pairs))


def trailers(stream, pairs, flags=END_STREAM | END_HEADERS):
    return bytes([10, flags]) + sid(stream) + fields(list(pairs))


BREAK = bytes([14, 0, 0])


def again(times):
    """The record before, again 4 * times times."""
    return bytes([13, times, 0])


TOGGLE_READ = bytes([15, 0, 0])


def seed(cut, opt, *records):
    return bytes([cut, opt]) + b"".join(records)


SEEDS = {
    "get-scgi": seed(128, 0, request(1, "GET", "/scgi", flags=END_STREAM)),
    "post-scgi": seed(200, 0, request(1, "POST", "/scgi", [("content-length", "5"), ("a", "1")]),
                      data(1, b"hello", END_STREAM)),
    "post-scgi-chunked-split": seed(90, OPT_SPLIT_PREFACE, request(1, "POST", "/scgi/x?q=1", [("content-type", "text/plain")]),
                                    data(1, b"abc"), BREAK, data(1, b"def", END_STREAM | PADDED) + b"\x07"),
    "lua-headers": seed(60, 0, request(1, "GET", "/lua?x=1", [("x", "x"), ("cookie", "a=1"), ("cookie", "b=2; c=3"),
                                                               ("user-agent", "h")], flags=END_STREAM, o=8)),
    "scgi-policy": seed(10, 0, request(1, "GET", "/scgi", [("a", "1"), ("b", "1"), ("c", "1"), ("authorization", "Basic eA=="),
                                                            ("cookie", "a=1"), ("cookie", "b=2; c=3"), ("x-user", "mallory"),
                                                            ("x", "a, b"), ("x", ""), ("x_under", "1"), ("proxy", "1"),
                                                            ("http-x", "1")], flags=END_STREAM)),
    "wait": seed(30, 0, request(1, "POST", "/wait", [("w", "1")]), data(1, b"body"), data(1, b"", END_STREAM)),
    "wait-rst": seed(250, 0, request(1, "POST", "/wait", [("w", "1")]), data(1, b"bo"), BREAK, rst(1, 8)),
    "rst-mid-request": seed(128, 0, request(1, "POST", "/scgi", [("content-length", "10"), ("w", "1")]), data(1, b"hello"),
                            BREAK, rst(1, 8), request(3, "GET", "/scgi", flags=END_STREAM)),
    "window-update": seed(0, 0, request(1, "GET", "/static/dpkg/changelog.gz", flags=END_STREAM), BREAK,
                          window_update(0, 1 << 20), window_update(1, 1 << 20), BREAK, window_update(1, 65535)),
    "backpressure": seed(100, OPT_BIG_WINDOWS | OPT_SMALL_SNDBUF | OPT_NO_READ,
                         request(1, "GET", "/static/dpkg/changelog.gz", flags=END_STREAM),
                         request(3, "GET", "/static/dpkg/copyright", flags=END_STREAM),
                         request(5, "GET", "/scgi", flags=END_STREAM)),
    "zero-window": seed(100, OPT_ZERO_WINDOW, request(1, "GET", "/static/dpkg/copyright", flags=END_STREAM), BREAK,
                        settings([(4, 65535)]), BREAK, window_update(1, 100)),
    "ping": seed(128, 0, ping(), ping(b"abcdefgh"), ping(flags=1)),
    "settings": seed(128, OPT_NO_SETTINGS, settings([(1, 0), (2, 0), (3, 100), (4, 1 << 20), (5, 16384), (6, 8192)]),
                     settings([], flags=1), request(1, "GET", "/lua", flags=END_STREAM)),
    "continuation": seed(128, 0, request(1, "GET", "/scgi", [("a", "1")], flags=END_STREAM | NO_END_HEADERS),
                         continuation(1, [("cookie", "a=1")], flags=0), continuation(1, [("cookie", "b=2; c=3")])),
    "trailers": seed(128, 0, request(1, "POST", "/scgi", [("te", "trailers")]), data(1, b"x"),
                     trailers(1, [("x-user", "alice"), ("a", "1")])),
    "streams": seed(50, OPT_HALF_CLOSE, request(1, "GET", "/scgi", flags=END_STREAM), request(3, "GET", "/lua", flags=END_STREAM),
                    request(5, "HEAD", "/static/dpkg/copyright", flags=END_STREAM), request(7, "GET", "/go", flags=END_STREAM),
                    request(9, "GET", "/re", flags=END_STREAM), request(11, "GET", "/err", flags=END_STREAM | PRIORITY) + b"\0\0\0\1\x10",
                    BREAK, goaway(0, 0)),
    "malformed": seed(128, 0, request(1, "GET", "/lua", [("Upper", "1")], flags=END_STREAM),
                      request(3, "GET", "/lua", [("connection", "close")], flags=END_STREAM),
                      request(5, "GET", "/lua", flags=END_STREAM, o=4),
                      request(9, "CONNECT", "/lua", flags=END_STREAM, o=1 | 4),
                      request(11, "GET", "/lua", [("x", " x")], flags=END_STREAM), BREAK,
                      bytes([12, END_HEADERS | END_STREAM, 6, 1, 4]) + b"\xff\xff\xff\xff"),
    "deny-413": seed(128, OPT_BIG_WINDOWS, request(1, "GET", "/lua", [("deny", "1")], flags=END_STREAM),
                     request(3, "POST", "/wait", [("expect", "100-continue")]),
                     *[bytes([11, 0, 1, 127]) + BREAK + BREAK for _ in range(9)], bytes([11, END_STREAM, 1, 10])),
    "flow-control-error": seed(128, 0, request(1, "POST", "/scgi"), *[bytes([11, 0, 0, 255]) for _ in range(3)],
                               request(3, "GET", "/scgi", flags=END_STREAM)),
    "scgi-big": seed(128, OPT_BIG_WINDOWS, request(1, "GET", "/scgi/big", flags=END_STREAM),
                     request(3, "GET", "/scgi/big", flags=END_STREAM), BREAK, rst(3, 8)),
    "scgi-big-backpressure": seed(128, OPT_BIG_WINDOWS | OPT_SMALL_SNDBUF | OPT_NO_READ,
                                  request(1, "GET", "/scgi/big", flags=END_STREAM),
                                  request(3, "GET", "/stream", flags=END_STREAM)),
    "scgi-cut": seed(128, 0, request(1, "GET", "/scgi/cut", flags=END_STREAM), request(3, "GET", "/scgi/nolen", flags=END_STREAM)),
    "scgi-hold-rst": seed(128, 0, request(1, "POST", "/scgi/hold"), data(1, b"abc"), BREAK, BREAK, rst(1, 8),
                          request(3, "GET", "/scgi/hold", flags=END_STREAM)),
    "stream": seed(128, 0, request(1, "GET", "/stream", flags=END_STREAM), BREAK, window_update(0, 100000),
                   window_update(1, 100000)),
    "stream-body-filter": seed(128, OPT_BIG_WINDOWS, request(1, "GET", "/stream", [("bf", "1")], flags=END_STREAM),
                               request(3, "GET", "/stream", [("bf", "eof")], flags=END_STREAM),
                               request(5, "GET", "/stream", [("bf", "x")], flags=END_STREAM)),
    "continuation-flood": seed(128, 0, request(1, "GET", "/lua", flags=END_STREAM | NO_END_HEADERS),
                               continuation(1, [("a", "1")], flags=0), again(3)),
    "settings-flood": seed(128, 0, request(1, "GET", "/lua", flags=END_STREAM), bytes([4, 0, 0x80, 0]), again(255)),
    "empty-data-flood": seed(128, 0, request(1, "POST", "/wait"), data(1, b""), again(255)),
    "ping-flood-unread": seed(128, OPT_NO_READ | OPT_CLOSE_UNREAD | OPT_SMALL_SNDBUF, ping(), again(255)),
    "rapid-reset": seed(128, 0, *[request(2 * i + 1, "GET", "/scgi", flags=END_STREAM) + rst(2 * i + 1, 8)
                                  for i in range(40)]),
    "too-many-streams": seed(128, 0, *[request(2 * i + 1, "GET", "/scgi/hold", flags=END_STREAM) for i in range(12)]),
    "keepalive-requests": seed(128, 0, *[request(2 * i + 1, "GET", "/lua", flags=END_STREAM) + BREAK for i in range(26)]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, body in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(body)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
