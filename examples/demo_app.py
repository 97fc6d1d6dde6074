#!/usr/bin/env python3
"""A small SCGI application: the demo behind `make run`, and the scriptable backend of the
end-to-end tests. Standard library only; one thread per connection.

    demo_app.py HOST:PORT | unix:/path

It answers according to the path the gateway sends (SCRIPT_NAME + PATH_INFO):
  /garbage          a response header without a colon (the gateway must answer 502)
  /hang             accepts the request and never answers (504 after `timeout`)
  /close            closes the connection without answering (502)
  /splithead        a response head sent in three pieces, the body in the last one
  /truncate         promises Content-Length 100, sends 50 bytes, closes
  /crlf             a header value holding a bare CR (502)
  /bigheader        a header block over 64 KiB (502)
  /status/NNN       that status
  /rawhead?head=H   the response head H exactly (percent-encoded bytes), then a blank line and "body"
  /redirect?to=URL  200 with Location: URL (internal redirect)
  /xlocation?to=URL 200 with X-Location: URL
  /loop             200 with Location: /loop (an endless internal redirect)
  /sendfile?path=P  200 with X-Sendfile: P and a body the gateway must discard
  /slow?ms=N        answers after N milliseconds
  /auth..., /_auth... an auth service: 200 with X-User: NAME when the request carries
                    Authorization: Bearer TOKEN for a known token (DEMO_TOKENS, default
                    "alice:letmein,bob:hunter2"), 403 for an unknown token, 401 without one
  anything else     200, text/plain: the variables received, one NAME=value per line,
                    then BODY= and the request body
"""
import os
import socket
import sys
import threading
import time
import urllib.parse

NAME = os.environ.get("DEMO_NAME", "")
TOKENS = dict(reversed(t.split(":", 1)) for t in os.environ.get("DEMO_TOKENS", "alice:letmein,bob:hunter2").split(","))


def read_request(conn):
    f = conn.makefile("rb")
    length = b""
    while True:
        c = f.read(1)
        if not c:
            return None, None
        if c == b":":
            break
        length += c
    head = f.read(int(length) + 1)
    items = head[:-1].split(b"\0")
    env = {}
    order = []
    for i in range(0, len(items) - 1, 2):
        k, v = items[i].decode("latin-1"), items[i + 1].decode("latin-1")
        env[k] = v
        order.append((k, v))
    body = f.read(int(env.get("CONTENT_LENGTH", "0")))
    return env, (order, body)


def handle(conn):
    try:
        env, rest = read_request(conn)
        if env is None:
            return
        order, body = rest
        path = env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")
        if not path:  # nginx's stock scgi_params send neither
            path = env.get("REQUEST_URI", "").split("?", 1)[0]
        query = urllib.parse.parse_qs(env.get("QUERY_STRING", ""))
        to = query.get("to", [""])[0]
        out = None
        if path.endswith("/garbage"):
            out = b"this is not a header\r\n\r\nbody"
        elif path.endswith("/splithead"):
            # The head in three writes, the body starting in the last one.
            conn.sendall(b"Status: 201 Made\r\nX-Part: 1\r\n")
            time.sleep(0.05)
            conn.sendall(b"Content-Type: text/plain\r\nContent-Length: 10\r")
            time.sleep(0.05)
            out = b"\n\r\n0123456789"
        elif path.endswith("/close"):
            return  # closes without answering
        elif path.endswith("/hang"):
            time.sleep(30)
            return
        elif path.endswith("/truncate"):
            out = b"Content-Length: 100\r\n\r\n" + b"t" * 50
        elif path.endswith("/crlf"):
            out = b"X-Bad: a\rb\r\n\r\nbody"
        elif path.endswith("/bigheader"):
            out = b"X-Big: " + b"b" * 70000 + b"\r\n\r\nbody"
        elif path.endswith("/rawhead"):
            qs = env.get("QUERY_STRING", "")
            head = urllib.parse.unquote_to_bytes(qs.split("head=", 1)[1] if "head=" in qs else "")
            out = head + b"\r\n\r\nbody"
        elif "/status/" in path:
            code = path.rsplit("/", 1)[1]
            out = ("Status: %s Custom\r\nContent-Type: text/plain\r\n\r\nstatus %s\n" % (code, code)).encode()
        elif path.endswith("/redirect"):
            out = ("Location: %s\r\nContent-Type: text/plain\r\n\r\nbody to discard" % to).encode()
        elif path.endswith("/loop"):
            out = b"Location: /loop\r\n\r\n"
        elif path.endswith("/xlocation"):
            out = ("X-Location: %s\r\n\r\nbody to discard" % to).encode()
        elif path.endswith("/sendfile"):
            p = query.get("path", [""])[0]
            hdr = query.get("header", ["X-Sendfile"])[0]
            out = ("%s: %s\r\nContent-Type: application/x-test\r\nX-Kept: yes\r\n\r\nbackend body" % (hdr, p)).encode()
        elif path.startswith(("/auth", "/_auth")):
            auth = env.get("HTTP_AUTHORIZATION", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token is None:
                out = b"Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nno token\n"
            elif token in TOKENS:
                out = ("Status: 200 OK\r\nX-User: %s\r\nContent-Type: text/plain\r\n\r\nok\n" % TOKENS[token]).encode()
            else:
                out = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nunknown token\n"
        elif path.endswith("/slow"):
            time.sleep(int(query.get("ms", ["100"])[0]) / 1000.0)
            out = b"Content-Type: text/plain\r\n\r\nslow\n"
        if out is None:
            text = "".join("%s=%s\n" % kv for kv in order)
            if NAME:
                text = "APP=%s\n" % NAME + text
            out = b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode("latin-1") + b"BODY=" + body
        conn.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:4000"
    if addr.startswith("unix:"):
        path = addr[5:]
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
