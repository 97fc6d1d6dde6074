/* lua_socket: cosockets, mg.socket.tcp() (docs/lua-api.md, "Waiting: coroutines, cosockets, subrequests"), with OpenResty's names and results.
 *
 * A cosocket is a TCP or unix-socket connection whose operations wait in the calling Lua
 * thread without blocking the worker. Results follow ngx.socket.tcp: connect → 1 or nil, err;
 * send → bytes or nil, err; receive("*l" | "*a" | n) → data or nil, err, partial;
 * receiveuntil(pattern) → an iterator; close → 1 or nil, err; setkeepalive([idle_ms[, size]])
 * → 1 or nil, err (the connection goes to a per-worker pool keyed by "host:port" or the socket
 * path, and the object is closed for its caller); connect takes a pooled connection when one
 * is idle for the same key (getreusedtimes() counts the reuses). Each operation has its own
 * timeout (settimeout(ms) or settimeouts(connect, send, read); lua_socket_timeout, 60 s, by
 * default, as OpenResty's lua_socket_*_timeout). A timeout of 0 means that default (as in
 * lua-nginx-module), never "no timeout"; NaN, an infinity or a negative one is a bad argument;
 * one above 2^31 - 1 ms is capped to it. setkeepalive's idle time follows the same rules.
 *
 * Ownership: a cosocket belongs to the request whose Lua code connected it (or to the timer
 * thread, without a request); when that ends, the cosocket is closed unless it was put in the
 * pool. A connected cosocket keeps reading into its buffer (up to 64 KiB unread) so that a
 * receive the buffer can satisfy never waits, and a pooled connection notices its peer
 * closing. */
#ifndef MG_LUA_SOCKET_H
#define MG_LUA_SOCKET_H

#include <lua.h>
#include <stdint.h>

#include "lua_sockbase.h" /* mg_socket_close_owned, mg_socket_set_default_timeout */

/* mg.socket = { tcp, connect, udp } into the table at the top of the stack. */
void mg_socket_open(lua_State *L);

#endif
