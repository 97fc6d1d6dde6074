/* lua_hooks: the Lua binding's entries in the hooks table (core/hooks.h). */
#ifndef MG_LUA_HOOKS_H
#define MG_LUA_HOOKS_H

/* Points mg_hooks at the binding's table: once, when a configuration is loaded. */
void mg_lua_hooks_install(void);

#endif
