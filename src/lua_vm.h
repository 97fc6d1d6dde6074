/* lua_vm: the Lua state of a configuration.
 *
 * Creates a state with the standard libraries and the embedded `moongate` module, calls Lua
 * functions under a traceback handler, and locks globals once init.lua has run so that a
 * misspelt name is an error, not a new global. */
#ifndef MG_LUA_VM_H
#define MG_LUA_VM_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* Protected calls made by this process: the status page reports it, so a user can see that a
 * route without hooks never enters Lua. */
extern uint64_t mg_lua_calls;

/* A new state with package.path starting at `dir`. Returns NULL when out of memory. */
lua_State *mg_lua_new(const char *dir);

/* Calls the function below `nargs` arguments on the stack, as lua_pcall does, with a
 * traceback handler. Returns 0, or -1 with the error message and traceback in err. The
 * function and its arguments are popped; nresults values are left on success. */
int mg_lua_call(lua_State *L, int nargs, int nresults, char *err, size_t err_len);

/* Makes reads of undefined globals and writes of new ones raise an error. */
void mg_lua_lock_globals(lua_State *L);

#endif
