"""Header fields from a Lua table: req:exit's, a content handler's returned ones and
req:subrequest's opts.headers go through one rule, with one answer. A name that is not an HTTP
token or a value holding CR, LF or NUL is never sent: the request gets 500 and the error log
says which field, in the same words wherever the table came from."""
import pytest

from conftest import request

BAD = {
    "name": ('{ ["x y"] = "1" }', "invalid header field name 'x y'"),
    "value": ('{ ["X-A"] = "1\\r\\nSet-Cookie: evil=1" }', "header value for 'X-A' holds CR, LF or NUL"),
    "number key": ('{ [1] = "v" }', "header field names must be strings, not number"),
}

LUA = '''
mg.route("=/exit", function(req) req:exit(200, "body\\n", %(t)s) end)
mg.route("=/content", function(req) return 200, "body\\n", %(t)s end)
mg.route("=/target", function(req) return 200, "sub\\n" end, { internal = true })
mg.route("=/sub", function(req)
  local r, err = req:subrequest("/target", { headers = %(t)s })
  return 200, r and r.body or tostring(err)
end)
mg.route("=/good", function(req)
  local r = req:subrequest("/target", { headers = { ["X-Sub"] = "ok" } })
  req:exit(200, r.body, { ["X-Exit"] = "yes" })
end)
'''


@pytest.mark.parametrize("what", sorted(BAD))
@pytest.mark.parametrize("where", ["exit", "content", "sub"])
def test_bad_field_from_a_lua_table_is_a_500_naming_it(gateway, where, what):
    table, message = BAD[what]
    g = gateway(LUA % {"t": table})
    r = request(g.port, path="/" + where)
    assert r.status == 500
    assert r.header("X-A") is None and r.header("Set-Cookie") is None
    g.wait_log(message)
    if where == "content":
        g.wait_log("returned headers that cannot be sent: " + message)
    # The worker goes on, and a good table is sent as given.
    r = request(g.port, path="/good")
    assert (r.status, r.body, r.header("X-Exit")) == (200, b"sub\n", "yes")
