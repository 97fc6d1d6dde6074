/* lua_hooks: the Lua binding's entries in the hooks table (core/hooks.h). */
#ifndef MG_LUA_HOOKS_H
#define MG_LUA_HOOKS_H

#include <lua.h>

/* Points mg_hooks at the binding's table: once, when a configuration is loaded. */
void mg_lua_hooks_install(void);

/* ngx.arg[i] while a body_filter hook runs: pushes the chunk (1) or eof (2). Raises outside. */
int mg_lua_body_arg(lua_State *L, int i);
/* ngx.arg[1] = value at vidx: the chunk the next hook sees and that is sent. */
int mg_lua_body_arg_set(lua_State *L, int i, int vidx);

#endif
