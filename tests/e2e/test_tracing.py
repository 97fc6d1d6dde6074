"""Tracing (SPEC 20): W3C traceparent read or started per request, what the backend gets, the
JSON access log's trace_id and span_id, ngx.var names, tracing = false."""
import json
import re
import time

from conftest import request, scgi_vars

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = "00-%s-%s-01" % (TRACE, PARENT)
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

BASIC = '''
mg.set { access_log = "access.log", access_log_format = "json" }
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("=/ids", function(req)
  ngx.say(ngx.var.trace_id, " ", ngx.var.span_id, " ", tostring(ngx.var.parent_span_id), " ",
          tostring(ngx.var.otel_trace_id == ngx.var.trace_id), " ", ngx.var.traceparent)
end)
'''


def backend_tp(g, headers, path="/vars/x"):
    v = dict(scgi_vars(request(g.port, path=path, headers=headers).body))
    tp = v.get("HTTP_TRACEPARENT")
    assert tp is not None, v
    m = TP_RE.match(tp)
    assert m, tp
    return m.group(1), m.group(2), m.group(3), v


def log_lines(g, n, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = [json.loads(l) for l in g.access_log().splitlines() if l.strip()]
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError("access log has fewer than %d lines:\n%s" % (n, g.access_log()))


def test_traceparent_propagated_with_moongate_span(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    trace, span, flags, v = backend_tp(g, [("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE,rojo=00f067")])
    assert trace == TRACE           # the same trace
    assert span != PARENT and span != "0" * 16  # moongate's own span is the backend's parent
    assert flags == "01"            # sampled stays sampled
    assert v["HTTP_TRACESTATE"] == "congo=t61rcWkgMzE,rojo=00f067"  # unchanged
    # Unsampled stays unsampled.
    assert backend_tp(g, [("traceparent", "00-%s-%s-00" % (TRACE, PARENT))])[2] == "00"
    # The access log names the same trace and moongate's span (the one the backend got).
    line = log_lines(g, 2)[0]
    assert line["trace_id"] == TRACE and line["span_id"] == span


def test_new_trace_when_none_and_ids_are_valid_and_distinct(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    seen_traces, seen_spans = set(), set()
    for _ in range(20):
        trace, span, flags, v = backend_tp(g, [])
        assert trace != "0" * 32 and span != "0" * 16
        assert flags == "01"
        seen_traces.add(trace)
        seen_spans.add(span)
    assert len(seen_traces) == 20 and len(seen_spans) == 20  # random per request


def test_malformed_traceparent_replaced(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    bad = [
        "00-%s-%s-01-extra" % (TRACE, PARENT),        # version 00 has exactly 55 characters
        "00-%s-%s-01" % ("0" * 32, PARENT),           # all-zero trace-id
        "00-%s-%s-01" % (TRACE, "0" * 16),            # all-zero parent-id
        "00-%s-%s-01" % (TRACE.upper(), PARENT),      # upper-case hex
        "ff-%s-%s-01" % (TRACE, PARENT),              # version ff is invalid
        "00-%s-%s-0g" % (TRACE, PARENT),              # flags not hex
        "00-%s-%s-01" % (TRACE[:-1], PARENT),         # short trace-id
        "00_%s_%s_01" % (TRACE, PARENT),              # wrong separators
        "garbage",
        "",
    ]
    for value in bad:
        trace, span, flags, v = backend_tp(g, [("traceparent", value), ("tracestate", "a=b")])
        assert trace != TRACE, value
        assert v["HTTP_TRACESTATE"] == "a=b", value  # passed on unchanged (SPEC 20)
    # Two traceparent fields: invalid as a whole (W3C), a new trace.
    assert backend_tp(g, [("traceparent", VALID), ("traceparent", VALID)])[0] != TRACE


def test_future_version_accepted_and_sent_as_00(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    trace, span, flags, v = backend_tp(g, [("traceparent", "01-%s-%s-01-whatever" % (TRACE, PARENT))])
    assert trace == TRACE and flags == "01"
    assert v["HTTP_TRACEPARENT"].startswith("00-")
    # A later version must still have a '-' after the flags.
    assert backend_tp(g, [("traceparent", "01-%s-%s-01x" % (TRACE, PARENT))])[0] != TRACE


def test_ngx_var_names_and_json_log(gateway, echo_backend):
    g = gateway(BASIC, echo_backend)
    body = request(g.port, path="/ids", headers=[("traceparent", VALID)]).body.decode().split()
    assert body[0] == TRACE and len(body[1]) == 16 and body[2] == PARENT and body[3] == "true"
    assert body[4] == "00-%s-%s-01" % (TRACE, body[1])  # ngx.var.traceparent: what a backend gets
    body = request(g.port, path="/ids").body.decode().split()
    assert len(body[0]) == 32 and body[0] != TRACE and body[2] == "nil"
    lines = log_lines(g, 2)
    assert lines[0]["trace_id"] == TRACE and lines[0]["span_id"] != PARENT
    assert lines[1]["trace_id"] == body[0] and lines[1]["span_id"] == body[1]


def test_tracing_off(gateway, echo_backend):
    g = gateway('mg.set { tracing = false, access_log = "access.log", access_log_format = "json" }\n'
                'mg.route("/", "scgi://127.0.0.1:{BACKEND}/")\n', echo_backend)
    v = dict(scgi_vars(request(g.port, path="/vars/x", headers=[("traceparent", VALID), ("tracestate", "a=b")]).body))
    # Off: the fields pass as any other header, untouched.
    assert v["HTTP_TRACEPARENT"] == VALID and v["HTTP_TRACESTATE"] == "a=b"
    assert "HTTP_TRACEPARENT" not in dict(scgi_vars(request(g.port, path="/vars/y").body))
    line = log_lines(g, 2)[0]
    assert line["trace_id"] is None and line["span_id"] is None


def test_tracing_setting_checked(tmp_path):
    import subprocess
    from conftest import MOONGATE
    cfg = tmp_path / "init.lua"
    cfg.write_text('local mg = require "moongate"\nmg.listen("127.0.0.1:1")\nmg.set { tracing = "yes" }\n')
    p = subprocess.run([MOONGATE, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 1 and "init.lua:3:" in p.stderr and "tracing: expected true or false" in p.stderr, p.stderr


def test_subrequest_is_a_child_span(gateway, echo_backend):
    g = gateway('''
mg.route("/", "scgi://127.0.0.1:{BACKEND}/")
mg.route("=/sub", function(req)
  local r = req:subrequest("/vars/inner")
  ngx.say(ngx.var.span_id)
  ngx.print(r.body)
end)
''', echo_backend)
    body = request(g.port, path="/sub", headers=[("traceparent", VALID)]).body
    outer_span, _, rest = body.partition(b"\n")
    v = dict(scgi_vars(rest))
    m = TP_RE.match(v["HTTP_TRACEPARENT"])
    assert m and m.group(1) == TRACE              # the same trace
    assert m.group(2) != outer_span.decode()      # the subrequest's own span
    assert m.group(2) != PARENT
