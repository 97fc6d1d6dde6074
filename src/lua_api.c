/* lua_api: see lua_api.h. */
#include "lua_api.h"

#include "lua_request.h"
#include "lua_socket.h"
#include "lua_thread.h"
#include "lua_util.h"
#include "shdict.h"
#include "subrequest.h"

void mg_lua_api_open(lua_State *L) {
  mg_thread_open(L);
  mg_socket_open(L);
  mg_shdict_open(L);
  mg_util_open(L);
  mg_lua_set_subrequest(mg_subrequest_lua);
}
