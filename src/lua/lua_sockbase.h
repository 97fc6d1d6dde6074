/* lua_sockbase: what the TCP and UDP cosockets share (lua_socket.h, lua_udp.h): the lists of
 * cosockets a request or a timer thread owns, a peer's address (literal or resolved), the data
 * argument of send, and the texts of their errors.
 *
 * Owner lists: every cosocket embeds an mg_owned_t first and links it into its owner's list
 * (mg_lua_req_t.sockets, mg_thread_t.sockets); when the owner ends, mg_socket_close_owned
 * calls each one's close function, which must unlink it. */
#ifndef MG_LUA_SOCKBASE_H
#define MG_LUA_SOCKBASE_H

#include <lua.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "buf.h"

/* The default timeout of cosocket operations and pooled connections (ms; lua_socket_timeout),
 * set once per worker. */
void mg_socket_set_default_timeout(uint64_t ms);
extern uint64_t mg_socket_default_ms;

typedef struct mg_owned_s mg_owned_t;
struct mg_owned_s {
  mg_owned_t *next, **prev;
  void (*close)(mg_owned_t *o); /* closes the cosocket without resuming its waiter; unlinks */
};

/* Links o at the head of the list; unlinking twice is harmless. */
void mg_owned_link(mg_owned_t *o, void **list);
void mg_owned_unlink(mg_owned_t *o);

/* Closes every cosocket in an owner's list (a request's, in its mg_lua_req_t; a timer thread's). */
void mg_socket_close_owned(void **list);

/* A literal IPv4 or IPv6 address with its port, into ss: the address's length, or 0 when host
 * is no literal address (a name, to resolve). */
socklen_t mg_sock_literal(const char *host, int port, struct sockaddr_storage *ss);

/* A name being resolved by libuv's thread pool (getaddrinfo, any family). Its request outlives
 * the cosocket that asked when that one closes first, so the owner never frees it: it cancels. */
typedef struct mg_sock_resolve_s mg_sock_resolve_t;

/* Called once with the first address found, its port set, or with sa NULL when the name was
 * not found. When it runs the request is over: the owner forgets it (and must not cancel it). */
typedef void (*mg_sock_resolved_fn)(void *owner, const struct sockaddr *sa, socklen_t len);

/* Starts resolving host for a socket of socktype (SOCK_STREAM, SOCK_DGRAM). Returns NULL when
 * it cannot start (the caller then says "host not found", as for a name that is not found). */
mg_sock_resolve_t *mg_sock_resolve(uv_loop_t *loop, const char *host, int port, int socktype, mg_sock_resolved_fn fn,
                                   void *owner);
/* The owner gives up (it closes, times out, or its thread is killed): fn is never called. */
void mg_sock_resolve_cancel(mg_sock_resolve_t *r);

/* Pushes nil, err (a cosocket's failure, "closed", "socket busy", ...); returns 2. */
int mg_sock_fail(lua_State *L, const char *err);

/* The data argument of send (OpenResty's rules, lua-nginx-module's
 * ngx_http_lua_calc_strlen_in_table in strict mode): a string, a number (an integral one as
 * "%d", others as "%.14g"), nil ("nil"), a boolean ("true"/"false") or an array of strings,
 * numbers and arrays, nested to any depth. Appends the bytes to out; raises "bad argument" for
 * anything else ("bad data type boolean found", "non-array table found", ...) before it appends
 * anything. */
void mg_socket_data(lua_State *L, int idx, mg_buf_t *out);

/* OpenResty's text for a libuv error of a cosocket ("connection refused", "timeout", ...). */
const char *mg_socket_err_text(int err);

/* Adds to the method table at the top of the stack a method for each of `names` (NULL-ended)
 * that raises "KIND:NAME is not supported by moongate": lua-nginx-module's methods moongate
 * does not have are refused by name, never a nil to call. */
void mg_sock_refuse(lua_State *L, const char *kind, const char *const *names);

#endif
