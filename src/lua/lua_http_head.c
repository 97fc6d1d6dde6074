/* lua_http_head: see lua_http_head.h.
 *
 * The whole head is handed to llhttp in one llhttp_execute, so every span (the reason, a field
 * name, a field value) lies in the caller's string; the callbacks only note where, extending a
 * span when llhttp reports it in more than one piece. The parser pauses at the end of the head,
 * so a body or a pipelined response after it is never looked at, and a head that ends before
 * its empty line is reported as incomplete rather than accepted. llhttp is a library here, used
 * directly: this unit does not call src/http (the server's parser), which the layering forbids.
 *
 * Lua stack while parsing: 1 the bytes, 2 the headers table, 3 a map from each lower-case name
 * to the name it first arrived as (how repeated fields in another case find their list). */
#include "lua_http_head.h"

#include <lauxlib.h>
#include <llhttp.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  const char *at;
  size_t len;
} span_t;

typedef struct {
  lua_State *L;
  span_t reason, field, value;
  int done;
} head_t;

/* Extends s by the piece at..at+len, which follows it in the same buffer. */
static void span_add(span_t *s, const char *at, size_t len) {
  if (!s->at) s->at = at, s->len = 0;
  s->len = (size_t)(at + len - s->at);
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  span_add(&((head_t *)p->data)->reason, at, len);
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  span_add(&((head_t *)p->data)->field, at, len);
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  span_add(&((head_t *)p->data)->value, at, len);
  return 0;
}

/* One field is complete: headers[name] = value, or the value appended to the name's list. */
static int on_header_value_complete(llhttp_t *p) {
  head_t *h = p->data;
  lua_State *L = h->L;
  const char *v = h->value.at ? h->value.at : "";
  size_t vlen = h->value.len;
  while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--; /* trailing OWS */
  /* An obs-fold (a line break then a space or tab) stays in llhttp's value; RFC 9112 5.2 has a
   * client replace it with spaces, so no CR or LF ever reaches a value. */
  char *unfolded = NULL;
  if (memchr(v, '\n', vlen) || memchr(v, '\r', vlen)) {
    unfolded = lua_newuserdata(L, vlen ? vlen : 1); /* freed by the collector, also on a raise */
    for (size_t i = 0; i < vlen; i++) unfolded[i] = (v[i] == '\r' || v[i] == '\n') ? ' ' : v[i];
    v = unfolded;
    lua_insert(L, 4); /* kept below the working slots: stack: bytes, headers, names, unfolded */
  }
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  for (size_t i = 0; i < h->field.len; i++) {
    char c = h->field.at[i];
    luaL_addchar(&lb, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
  }
  luaL_pushresult(&lb);
  /* stack: bytes, headers, names, lower */
  lua_pushvalue(L, -1);
  lua_rawget(L, 3);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushlstring(L, h->field.at, h->field.len);
    lua_pushvalue(L, -1);
    lua_insert(L, -3);
    lua_rawset(L, 3); /* names[lower] = name */
    lua_pushlstring(L, v, vlen);
    lua_rawset(L, 2); /* headers[name] = value */
  } else {
    lua_remove(L, -2);
    /* stack: bytes, headers, names, name */
    lua_pushvalue(L, -1);
    lua_rawget(L, 2);
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, 2); /* headers[name] = { first } */
    }
    /* stack: bytes, headers, names, name, list */
    lua_pushlstring(L, v, vlen);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
  }
  if (unfolded) lua_pop(L, 1);
  h->field.at = h->value.at = NULL;
  h->field.len = h->value.len = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  ((head_t *)p->data)->done = 1;
  return HPE_PAUSED; /* the body is the caller's to read */
}

static const llhttp_settings_t settings = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
};

/* nil, "malformed response head: WHY, in line N: "LINE"", the line quoted with its control
 * bytes escaped and cut at 100 bytes. */
static int push_malformed(lua_State *L, const char *why, const char *data, size_t len, const char *pos) {
  if (!pos || pos < data || pos > data + len) pos = data + len;
  const char *line = data;
  int lineno = 1;
  for (const char *c = data; c < pos; c++)
    if (*c == '\n' && c + 1 < pos) line = c + 1, lineno++;
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  luaL_addstring(&lb, "malformed response head: ");
  if (why[0] >= 'A' && why[0] <= 'Z' && !(why[1] >= 'A' && why[1] <= 'Z')) {
    luaL_addchar(&lb, (char)(why[0] + 32)); /* "Invalid status code" reads as part of a sentence */
    why++;
  }
  luaL_addstring(&lb, why);
  char num[32];
  snprintf(num, sizeof num, ", in line %d: \"", lineno);
  luaL_addstring(&lb, num);
  const char *end = memchr(line, '\n', (size_t)(data + len - line));
  if (!end) end = data + len;
  if (end > line && end[-1] == '\r') end--; /* the line ending is not part of what is quoted */
  size_t shown = 0;
  for (const char *c = line; c < end && shown < 100; c++, shown++) {
    unsigned char b = (unsigned char)*c;
    if (b < 0x20 || b == 0x7f || b == '"' || b == '\\') {
      char esc[8];
      snprintf(esc, sizeof esc, "\\x%02x", b);
      luaL_addstring(&lb, esc);
    } else {
      luaL_addchar(&lb, (char)b);
    }
  }
  if (line + shown < end) luaL_addstring(&lb, "...");
  luaL_addchar(&lb, '"');
  lua_pushnil(L);
  luaL_pushresult(&lb);
  return 2;
}

/* mg._http_head(bytes) → status, reason, version, headers or nil, err (see the header). */
static int l_http_head(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  lua_newtable(L); /* 2: headers */
  lua_newtable(L); /* 3: lower-case name → name */
  head_t h = {.L = L};
  llhttp_t p;
  llhttp_init(&p, HTTP_RESPONSE, &settings);
  p.data = &h;
  llhttp_errno_t err = llhttp_execute(&p, data, len);
  if (err == HPE_PAUSED && h.done) {
    lua_pushinteger(L, p.status_code);
    lua_pushlstring(L, h.reason.at ? h.reason.at : "", h.reason.len);
    lua_pushnumber(L, p.http_major + p.http_minor / 10.0);
    lua_pushvalue(L, 2);
    return 4;
  }
  if (err == HPE_OK) {
    if (len == 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "malformed response head: it is empty");
      return 2;
    }
    return push_malformed(L, "incomplete (no empty line ends it)", data, len, data + len);
  }
  return push_malformed(L, llhttp_get_error_reason(&p), data, len, llhttp_get_error_pos(&p));
}

void mg_http_head_open(lua_State *L) {
  lua_pushcfunction(L, l_http_head);
  lua_setfield(L, -2, "_http_head");
}
