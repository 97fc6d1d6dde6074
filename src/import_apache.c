/* import_apache: `moongate import-apache FILE` (docs/migrating-from-apache.md, "Start with the
 * importer").
 *
 * The translation is Lua (lua/_import_apache.lua and the lua/_apache_*.lua modules it joins,
 * compiled into the binary): a reader of Apache's configuration syntax, a translation and a
 * writer of init.lua. This file runs it in a Lua state of its own and gives it what Lua lacks:
 * glob(3) for Include patterns, a folder test, a reader that refuses what is not a regular
 * file (a FIFO would block it, /dev/zero never end) and stops at a size limit, the user and
 * group lookup of moongate's own checks, and the two output streams. Returns the exit status: 0 all translated, 3 something was not, 1 a syntax
 * or read error. */
#include "import_apache.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <lauxlib.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "lua_re.h"
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

static int l_exists(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
  return 1;
}

/* read(path, limit) -> the file's bytes; nil and why when it cannot be read or is not a regular
 * file; false when it holds more than `limit` bytes. O_NONBLOCK makes opening a FIFO return at
 * once, so fstat can refuse it; a regular file ignores the flag. */
static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Number limit = luaL_checknumber(L, 2);
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  struct stat st;
  const char *why = NULL;
  if (fstat(fd, &st) < 0) why = strerror(errno);
  else if (!S_ISREG(st.st_mode)) why = "not a regular file (a FIFO, device or socket is never read)";
  if (why) {
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  size_t max = limit < 0 ? 0 : (size_t)limit;
  mg_buf_t b;
  mg_buf_init(&b);
  char chunk[65536];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      mg_buf_free(&b);
      lua_pushnil(L);
      lua_pushstring(L, strerror(e));
      return 2;
    }
    if (n == 0) break;
    if (b.len + (size_t)n > max) {
      close(fd);
      mg_buf_free(&b);
      lua_pushboolean(L, 0);
      return 1;
    }
    mg_buf_append(&b, chunk, (size_t)n);
  }
  close(fd);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  mg_buf_free(&b);
  return 1;
}

/* lookup("user" | "group", name) -> true when the name exists: what mg.set{ user = } checks. */
static int l_lookup(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
  int found = strcmp(kind, "user") == 0 ? getpwnam(name) != NULL : getgrnam(name) != NULL;
  lua_pushboolean(L, found);
  return 1;
}

/* out(text) / err(text): write to the FILE * in the closure's upvalue. */
static int l_write(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  FILE *f = lua_touserdata(L, lua_upvalueindex(1));
  fwrite(s, 1, len, f);
  return 0;
}

int mg_import_apache_run(const char *file, FILE *out, FILE *err) {
  char dir[4096];
  const char *slash = strrchr(file, '/');
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - file) : 1, slash ? file : ".");
  lua_State *L = mg_lua_new(dir);
  if (!L) {
    fprintf(err, "moongate import-apache: out of memory\n");
    return 1;
  }
  static const luaL_Reg fns[] = {
      {"glob", l_glob}, {"isdir", l_isdir}, {"exists", l_exists}, {"read", l_read}, {"lookup", l_lookup}, {NULL, NULL}};
  /* stack: */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "_import_apache");
  lua_call(L, 1, 1); /* module */
  lua_getfield(L, -1, "run"); /* module run */
  lua_pushstring(L, file);
  lua_createtable(L, 0, 8); /* module run file sys */
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  /* sys.re: mg.re, with which the translation checks the regexes it hands on. */
  mg_re_open(L);
  lua_pushlightuserdata(L, out);
  lua_pushcclosure(L, l_write, 1);
  lua_setfield(L, -2, "out");
  lua_pushlightuserdata(L, err);
  lua_pushcclosure(L, l_write, 1);
  lua_setfield(L, -2, "err");
  char msg[4096];
  int rc = 1;
  if (mg_lua_call(L, 2, 1, msg, sizeof msg) == 0) { /* module status */
    rc = (int)lua_tointeger(L, -1);
  } else {
    fprintf(err, "moongate import-apache: internal error: %s\n", msg);
  }
  fflush(out);
  fflush(err);
  lua_close(L);
  return rc;
}

int mg_import_apache(const char *file) { return mg_import_apache_run(file, stdout, stderr); }
