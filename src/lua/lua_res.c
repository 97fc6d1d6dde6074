/* lua_res: see lua_res.h. */
#include "lua_res.h"

#include <lauxlib.h>
#include <string.h>

#include "lua_headers.h"
#include "lua_request.h"

static mg_req_t *check_res(lua_State *L) {
  mg_lua_box_t *b = luaL_checkudata(L, 1, MG_LUA_RES_MT);
  if (!b->req) luaL_error(L, "response object used after its request ended");
  return b->req;
}

static int res_index(lua_State *L) {
  mg_req_t *req = check_res(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") == 0) return lua_pushinteger(L, req->status), 1;
  if (strcmp(k, "headers") == 0) return mg_lua_headers_push(L, req, 1), 1;
  if (strcmp(k, "bytes_sent") == 0) return lua_pushnumber(L, (lua_Number)req->bytes_sent), 1;
  return luaL_error(L, "res has no field '%s'", k);
}

static int res_newindex(lua_State *L) {
  mg_req_t *req = check_res(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") == 0) {
    mg_lua_check_phase(L, req, MG_PH_HEADER_FILTER, "setting res.status");
    int s;
    if (!mg_lua_final_status(L, 3, &s))
      return luaL_error(L, "res.status: status %s is not a final status (200 to 599)", mg_lua_status_text(L, 3));
    req->status = s;
    return 0;
  }
  return luaL_error(L, "res.%s cannot be assigned", k);
}

void mg_lua_push_res(lua_State *L, mg_req_t *req) {
  mg_lua_box_t *b = mg_lua_push_box(L, &mg_lua_req_attach(req)->res_ref, sizeof *b, MG_LUA_RES_MT);
  if (b) b->req = req;
}

void mg_lua_res_open(lua_State *L) {
  if (luaL_newmetatable(L, MG_LUA_RES_MT)) {
    lua_pushcfunction(L, res_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, res_newindex);
    lua_setfield(L, -2, "__newindex");
  }
  lua_pop(L, 1);
}
