/* lua_udp: UDP cosockets, mg.socket.udp() (= ngx.socket.udp; docs/lua-api.md, "Cosockets"),
 * with OpenResty's names and results.
 *
 * sock:setpeername(host, port) or setpeername("unix:/path") → 1 or nil, err ("bad port
 * number: N", "host not found", the system's text of a failed connect, lower-case);
 * sock:send(data) → 1 or nil, err (data: a string, a number, nil, a boolean or a nested array of
 * strings and numbers, as the TCP cosocket's send; a datagram is sent at once or not at all,
 * never waited for); sock:receive([size]) → one datagram (at most size bytes, default and most
 * 65536) or nil, err ("timeout", "connection refused" after an ICMP port unreachable, ...);
 * sock:settimeout(ms) (receive's timeout; 0, a negative number or NaN: lua_socket_timeout, as
 * lua-nginx-module); sock:close() → 1 or nil, "closed". A second setpeername closes the first
 * peer's socket. An operation while a receive waits gives nil, "socket busy".
 *
 * Ownership and waiting follow the TCP cosocket's (lua_socket.h): a UDP cosocket belongs to the
 * request (or timer thread) that called setpeername and is closed when it ends; receive waits
 * only where waiting is allowed (mg_thread_check). */
#ifndef MG_LUA_UDP_H
#define MG_LUA_UDP_H

#include <lua.h>

/* udp = the constructor, into the table at the top of the stack (mg.socket). */
void mg_udp_open(lua_State *L);

#endif
