/* lua_sockbase: what the TCP and UDP cosockets share (lua_socket.h, lua_udp.h): the lists of
 * cosockets a request or a timer thread owns, the data argument of send, and the texts of
 * their errors.
 *
 * Owner lists: every cosocket embeds an mg_owned_t first and links it into its owner's list
 * (mg_lua_req_t.sockets, mg_thread_t.sockets); when the owner ends, mg_socket_close_owned
 * calls each one's close function, which must unlink it. */
#ifndef MG_LUA_SOCKBASE_H
#define MG_LUA_SOCKBASE_H

#include <lua.h>
#include <stdint.h>

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
