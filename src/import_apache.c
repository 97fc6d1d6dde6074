/* import_apache: `moongate import-apache FILE` (SPEC 16).
 *
 * The translation is Lua (lua/_import_apache.lua, compiled into the binary): a parser of
 * Apache's configuration syntax and a writer of init.lua. This file runs it in a Lua state of
 * its own and gives it the two things Lua lacks: glob(3) for Include patterns and a folder test.
 * Returns the exit status: 0 all translated, 3 something was not, 1 a syntax or read error. */
#include "import_apache.h"

#include <glob.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "lua_vm.h"

/* glob(pattern) -> sorted list of matching paths ({} when none). */
static int l_glob(lua_State *L) {
  const char *pattern = luaL_checkstring(L, 1);
  glob_t g;
  memset(&g, 0, sizeof g);
  int rc = glob(pattern, 0, NULL, &g);
  lua_createtable(L, rc == 0 ? (int)g.gl_pathc : 0, 0);
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; i++) {
      lua_pushstring(L, g.gl_pathv[i]);
      lua_rawseti(L, -2, (int)i + 1);
    }
  globfree(&g);
  return 1;
}

static int l_isdir(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
  return 1;
}

int mg_import_apache(const char *file) {
  char dir[4096];
  const char *slash = strrchr(file, '/');
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - file) : 1, slash ? file : ".");
  lua_State *L = mg_lua_new(dir);
  if (!L) {
    fprintf(stderr, "moongate import-apache: out of memory\n");
    return 1;
  }
  /* stack: */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "_import_apache");
  lua_call(L, 1, 1); /* module */
  lua_getfield(L, -1, "run"); /* module run */
  lua_pushstring(L, file);
  lua_createtable(L, 0, 2); /* module run file sys */
  lua_pushcfunction(L, l_glob);
  lua_setfield(L, -2, "glob");
  lua_pushcfunction(L, l_isdir);
  lua_setfield(L, -2, "isdir");
  char err[4096];
  int rc = 1;
  if (mg_lua_call(L, 2, 1, err, sizeof err) == 0) { /* module status */
    rc = (int)lua_tointeger(L, -1);
  } else {
    fprintf(stderr, "moongate import-apache: internal error: %s\n", err);
  }
  fflush(stdout);
  lua_close(L);
  return rc;
}
