/* lua_manager: the C side of mg.manager_handler (docs/balancer.md, "Live control"): the
 * balancers' members as Lua tables, and an operator's change to one, for lua/moongate/manager.lua,
 * which writes the page, the JSON and reads the forms. */
#ifndef MG_LUA_MANAGER_H
#define MG_LUA_MANAGER_H

typedef struct lua_State lua_State;

/* Adds mg._balancers() and mg._member_set(balancer, url, status, lbfactor) to the table on top. */
void mg_manager_open(lua_State *L);

#endif
