"""The policy invariant (docs/reliability.md): what the last access hook left in req.headers and
req.env is exactly what the backend receives, whatever the client sent.

Requests are generated from a fixed seed: repeated fields in mixed case, fields named like CGI
variables or holding underscores, Content-Length and chunked bodies, trailers that repeat or
contradict the head, several requests pipelined in one write. A global access hook edits the
headers and env as a policy would; the route's access hook (the last one) records its whole
view in the variable MG_VIEW. The test then derives, from that view alone, the HTTP_* and env
variables the backend gets (docs/reference.md, "What the backend receives"), and compares them
with what the backend echoed.
"""
import random
import socket
import urllib.parse

from conftest import read_response, scgi_vars
from test_http2 import H2

SEED = 1616
CONNECTIONS = 60

CONFIG = r"""
local function esc(s) return (s:gsub("[^%w%-_. ]", function(c) return string.format("%%%02X", c:byte()) end)) end

mg.on("access", function(req)
  -- a policy: an identity from Authorization, a header removed, env set and removed
  if req.headers["Authorization"] then req.headers["X-User"] = "alice" end
  req.headers["Authorization"] = nil
  if req.headers["X-Drop"] then req.headers["X-Drop"] = nil end
  req.env.APP_ENV = "prod"
  if req.headers["X-Env-Off"] then req.env.HTTP_X_ENV_OFF = false end
  if req.headers["X-Env-Set"] then req.env.HTTP_X_ENV_SET = "from-hook" end
end)

mg.route("/", "scgi://127.0.0.1:{BACKEND}/", { hooks = { access = function(req)
  local parts = {}
  for name, v in pairs(req:headers()) do
    if type(v) == "table" then
      local vs = {}
      for i, x in ipairs(v) do vs[i] = esc(x) end
      v = table.concat(vs, ",")
    else
      v = esc(v)
    end
    parts[#parts + 1] = "h:" .. esc(name) .. "=" .. v
  end
  for name, v in pairs(req.env) do
    parts[#parts + 1] = "e:" .. esc(name) .. "=" .. (v == false and "\1" or esc(tostring(v)))
  end
  -- SPEC 20: the traceparent moongate sends in place of the client's (tracing is on by default)
  if ngx.var.traceparent then parts[#parts + 1] = "t:" .. ngx.var.traceparent end
  table.sort(parts)
  req.env.MG_VIEW = table.concat(parts, ";")
end } })
"""

NAMES = ["X-User", "x-user", "X-USER", "Authorization", "Cookie", "cookie", "X-Forwarded-For", "Remote-Addr",
         "Script-Name", "Https", "Content-Type", "Path-Info", "X_User", "Proxy", "Server-Name", "Query-String",
         "X-Drop", "X-Env-Off", "X-Env-Set", "Accept", "X-A", "x-a", "Content-Length-X", "Scgi", "Http-Host",
         "traceparent", "Tracestate"]


def value(rng):
    if rng.random() < 0.1:
        return ""  # empty values: a repeated field must keep their places when joined
    return "".join(rng.choice("abcdefgh0123 =;,/.") for _ in range(rng.randint(1, 12))).strip() or "v"


def make_request(rng, last):
    fields = [("Host", "h%d.test" % rng.randint(0, 3))]
    for _ in range(rng.randint(0, 10)):
        fields.append((rng.choice(NAMES), value(rng)))
    rng.shuffle(fields)
    body_kind = rng.choice(["none", "length", "chunked", "chunked"])
    body = b""
    tail = b""
    if body_kind != "none":
        body = bytes(rng.choice(b"abcdef\r\n:X") for _ in range(rng.randint(0, 40)))
    if body_kind == "length":
        fields.append(("Content-Length", str(len(body))))
        tail = body
    elif body_kind == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
        pos = 0
        while pos < len(body):
            n = rng.randint(1, 10)
            tail += b"%x\r\n" % len(body[pos:pos + n]) + body[pos:pos + n] + b"\r\n"
            pos += n
        tail += b"0\r\n"
        for _ in range(rng.randint(0, 4)):
            tail += ("%s: %s\r\n" % (rng.choice(NAMES), value(rng))).encode()
        tail += b"\r\n"
    if last:
        fields.append(("Connection", "close"))
    head = "POST /vars/%d HTTP/1.1\r\n" % rng.randint(0, 99) + "".join("%s: %s\r\n" % f for f in fields) + "\r\n"
    return head.encode() + tail, body


def parse_view(text):
    headers, env = {}, {}
    for part in text.split(";") if text else []:
        kind, _, rest = part.partition(":")
        name, _, v = rest.partition("=")
        name = urllib.parse.unquote(name)
        if kind == "h":
            headers[name] = [urllib.parse.unquote(x) for x in v.split(",")]
        elif kind == "t":
            headers["\0traceparent"] = rest
        else:
            env[name] = False if v == "\x01" else urllib.parse.unquote(v)
    return headers, env


def expected_vars(headers, env):
    """What the backend receives, applied to a hook's view: one HTTP_* per forwardable name,
    repeats joined, then env overrides (false removes)."""
    out = {}
    traceparent = headers.pop("\0traceparent", None)
    for name, values in headers.items():
        if name in ("content-length", "content-type", "proxy"):
            continue
        if not all(c.isalnum() or c == "-" for c in name):
            continue
        out["HTTP_" + name.upper().replace("-", "_")] = ("; " if name == "cookie" else ", ").join(values)
    if traceparent:
        out["HTTP_TRACEPARENT"] = traceparent  # moongate's, in place of the client's
    for name, v in env.items():
        if v is False:
            out.pop(name, None)
        else:
            out[name] = v
    return out


def check(request, status, answer, body):
    """The backend's variables are those the last access hook's view implies; the body is whole."""
    assert status == 200, (request, status, answer)
    got = scgi_vars(answer)
    names = [k for k, _ in got]
    assert len(names) == len(set(names)), "duplicate variable: %r" % got
    d = dict(got)
    headers, env = parse_view(d.pop("MG_VIEW", ""))
    want = expected_vars(headers, env)
    actual = {k: v for k, v in d.items() if k.startswith("HTTP_") or k in env}
    actual.pop("MG_VIEW", None)
    assert "HTTP_TRACEPARENT" in want, request  # tracing is on by default (SPEC 20)
    assert actual == want, "request %r:\nbackend %r\nhook view %r" % (request, actual, want)
    assert d["CONTENT_LENGTH"] == str(len(body)), request
    assert answer.split(b"BODY=", 1)[1] == body, request


def test_the_backend_receives_exactly_what_the_last_access_hook_left(gateway, echo_backend):
    g = gateway(CONFIG, echo_backend)
    rng = random.Random(SEED)
    checked = trailers_seen = 0
    for _ in range(CONNECTIONS):
        n = rng.randint(1, 4)
        reqs = [make_request(rng, i == n - 1) for i in range(n)]
        trailers_seen += sum(1 for data, _ in reqs if b"0\r\n" in data and not data.endswith(b"0\r\n\r\n"))
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        s.sendall(b"".join(data for data, _ in reqs))  # pipelined in one write
        f = s.makefile("rb")
        for data, body in reqs:
            r = read_response(f)
            check(data, r.status, r.body, body)
            checked += 1
        f.close()
        s.close()
    assert checked >= CONNECTIONS and trailers_seen > 10


def make_h2_request(rng):
    """The same kinds of fields as over HTTP/1.1, lowercase as HTTP/2 requires, with the
    authority as :authority (and sometimes a matching host field), cookie crumbs as separate
    fields; a body with or without content-length, in several DATA frames, and sometimes
    trailers (a HEADERS frame after the DATA) that repeat or contradict the head."""
    authority = "h%d.test" % rng.randint(0, 3)
    fields = []
    if rng.random() < 0.3:
        fields.append(("host", authority))
    for _ in range(rng.randint(0, 10)):
        fields.append((rng.choice(NAMES).lower(), value(rng)))
    rng.shuffle(fields)
    body = b""
    if rng.random() < 0.75:
        body = bytes(rng.choice(b"abcdef\r\n:X") for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            fields.append(("content-length", str(len(body))))
    trailers = [(rng.choice(NAMES).lower(), value(rng) or "t") for _ in range(rng.randint(0, 4))] \
        if rng.random() < 0.4 else []
    head = [(":method", "POST"), (":scheme", "http"), (":authority", authority),
            (":path", "/vars/%d" % rng.randint(0, 99))] + fields
    return head, body, trailers


def test_the_backend_receives_exactly_what_the_last_access_hook_left_over_http2(gateway, echo_backend):
    """The HTTP/2 variant: several streams at once on each connection, bodies in DATA frames,
    trailers in a second HEADERS frame; the same derivation from the hook's view (where the
    cookie crumbs are one field already)."""
    g = gateway('mg.listen("127.0.0.1:{PORT}", { http2 = true })\n' + CONFIG, echo_backend)
    rng = random.Random(SEED)
    checked = trailers_sent = 0
    for _ in range(CONNECTIONS // 2):
        c = H2(g.port, validate=False)
        streams = {}
        for _ in range(rng.randint(1, 4)):
            head, body, trailers = make_h2_request(rng)
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, head, end_stream=False)
            pos = 0
            while pos < len(body):
                n = rng.randint(1, 10)
                c.conn.send_data(sid, body[pos:pos + n])
                pos += n
            if trailers:
                c.conn.send_headers(sid, trailers, end_stream=True)
                trailers_sent += 1
            else:
                c.conn.end_stream(sid)
            streams[sid] = (head, body, trailers)
        c.flush()
        for sid, (head, body, trailers) in streams.items():
            status, answer, reset = c.response(sid)
            assert reset is None, (head, reset)
            check((head, trailers), status, answer, body)
            checked += 1
        c.close()
    assert checked >= CONNECTIONS // 2 and trailers_sent > 5
