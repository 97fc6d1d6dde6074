/* lua_api: see lua_api.h. */
#include "lua_api.h"

#include <grp.h>
#include <lauxlib.h>
#include <pwd.h>
#include <string.h>

#include "cidr.h"
#include "lua_http_head.h"
#include "lua_manager.h"
#include "lua_ngx.h"
#include "lua_socket.h"
#include "lua_thread.h"
#include "lua_timer.h"
#include "lua_util.h"
#include "lua_shdict.h"
#include "lua_re.h"

/* M._lookup("user" | "group", name) → the id, or nil: for mg.set{ user =, group = }. */
static int l_lookup(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
  if (strcmp(kind, "user") == 0) {
    struct passwd *pw = getpwnam(name);
    if (!pw) return 0;
    lua_pushinteger(L, (lua_Integer)pw->pw_uid);
    return 1;
  }
  struct group *gr = getgrnam(name);
  if (!gr) return 0;
  lua_pushinteger(L, (lua_Integer)gr->gr_gid);
  return 1;
}

/* M._cidr(text) → true when base/cidr.c reads it (real_ip_from), else nil. */
static int l_cidr(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  mg_cidr_t c;
  if (mg_cidr_parse(s, len, &c) < 0) return 0;
  lua_pushboolean(L, 1);
  return 1;
}

void mg_lua_api_open(lua_State *L) {
  lua_pushcfunction(L, l_lookup);
  lua_setfield(L, -2, "_lookup");
  lua_pushcfunction(L, l_cidr);
  lua_setfield(L, -2, "_cidr");
  mg_thread_open(L);
  mg_lua_timer_open(L);
  mg_socket_open(L);
  mg_shdict_open(L);
  mg_re_open(L);
  mg_util_open(L);
  mg_http_head_open(L);
  mg_ngx_time_open(L);
  mg_manager_open(L);
  /* Last: ngx is put together from the mg.* functions above. */
  mg_ngx_open(L);
}
