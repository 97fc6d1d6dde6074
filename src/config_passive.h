/* config_passive: a balancer's `passive` and `retries` tables, as lua/_passive.lua checked and
 * normalised them, mapped to its mg_passive_t (handler/passive.h). */
#ifndef MG_CONFIG_PASSIVE_H
#define MG_CONFIG_PASSIVE_H

#include <lua.h>

#include "balancer.h"

/* Reads the balancer table on top of L's stack into b->passive (left NULL when the balancer
 * declares neither). The stack is left as it was. */
void mg_config_passive_load(lua_State *L, mg_balancer_t *b);

#endif
