/* lua_ngx: see lua_ngx.h.
 *
 * Each function finds its request with mg_lua_req_running (lua_request.h): the request the
 * running Lua code serves, or the error "no request found" (OpenResty's words) in a timer or
 * init_worker. Phases are checked
 * as lua-nginx-module checks them, with its message "API disabled in the context of <phase>".
 * The C functions go into a table of primitives that lua/moongate/ngx.lua places into `ngx`. */
#include "lua_ngx.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "fields.h"
#include "handler.h"
#include "log.h"
#include "lua_headers.h"
#include "lua_hooks.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "path.h"

#define PH_OUTPUT (MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT)


static void need_phase(lua_State *L, int allowed, const char *what) {
  if (!(mg_lua_phase_now & allowed))
    luaL_error(L, "API disabled in the context of %s: %s", mg_lua_phase_name(mg_lua_phase_now), what);
}

static void push_opt(lua_State *L, const char *s) {
  if (s) lua_pushstring(L, s);
  else lua_pushnil(L);
}

/* ---- output: ngx.say, ngx.print, ngx.flush, ngx.send_headers, ngx.eof ------------------------- */

/* Appends the value at idx as ngx.print writes it: strings, numbers, nil, booleans, ngx.null
 * (a NULL light userdata) and arrays of these, nested. 0; -1 for a value of another type, -2
 * for a table that is not an array. */
static int add_value(lua_State *L, mg_buf_t *b, int idx, int depth) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      mg_buf_append(b, s, n);
      return 0;
    }
    case LUA_TNIL: mg_buf_puts(b, "nil"); return 0;
    case LUA_TBOOLEAN: mg_buf_puts(b, lua_toboolean(L, idx) ? "true" : "false"); return 0;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != NULL) return -1;
      mg_buf_puts(b, "null");
      return 0;
    case LUA_TTABLE: {
      if (depth > 64) return -2;
      /* An array: every key a whole number from 1 to its length. */
      int n = (int)lua_objlen(L, idx), keys = 0;
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
          lua_pop(L, 1);
          return -2;
        }
        keys++;
      }
      if (keys != n) return -2;
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int rc = add_value(L, b, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        if (rc < 0) return rc;
      }
      return 0;
    }
    default: return -1;
  }
}

/* The head out if it is not yet: the status ngx.status set (200 by default) and a Content-Type
 * of text/plain unless one is set (nginx's default_type). */
static void start_output(mg_req_t *req) {
  mg_lua_req_t *lr = req->lua;
  lr->ngx_output = 1;
  if (req->head_sent) return;
  if (!mg_fields_get(&req->resp_headers, "Content-Type"))
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Type", "text/plain");
  mg_req_send_head(req);
}

static int output(lua_State *L, int newline, const char *what) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, what);
  mg_lua_req_t *lr = req->lua;
  if (lr->ngx_eof) {
    lua_pushnil(L);
    lua_pushliteral(L, "seen eof");
    return 2;
  }
  int n = lua_gettop(L);
  mg_buf_t out;
  mg_buf_init(&out);
  for (int i = 1; i <= n; i++) {
    int rc = add_value(L, &out, i, 0);
    if (rc < 0) {
      mg_buf_free(&out);
      if (rc == -2) return luaL_argerror(L, i, "non-array table found");
      return luaL_argerror(L, i, lua_pushfstring(L, "string, number, boolean, nil, ngx.null, or array table expected, but got %s",
                                                 luaL_typename(L, i)));
    }
  }
  if (newline) mg_buf_append(&out, "\n", 1);
  start_output(req);
  size_t total = out.len;
  if (total) mg_req_send_heap(req, mg_buf_steal(&out), total);
  mg_buf_free(&out);
  lua_pushinteger(L, 1);
  return 1;
}

static int l_say(lua_State *L) { return output(L, 1, "ngx.say"); }
static int l_print(lua_State *L) { return output(L, 0, "ngx.print"); }

/* The client has taken what ngx.flush(true) waited for: the thread goes on next turn. */
static void on_flushed(mg_req_t *req) {
  mg_lua_req_t *lr = req->lua;
  mg_thread_t *t = lr ? lr->flush_waiter : NULL;
  if (!t) return;
  lr->flush_waiter = NULL;
  lua_pushinteger(t->co, 1);
  mg_thread_wake(t, 1);
}

static void flush_cancel(mg_thread_t *t) {
  mg_req_t *req = t->wait;
  mg_req_on_drain(req, NULL);
  if (req->lua) ((mg_lua_req_t *)req->lua)->flush_waiter = NULL;
}

/* ngx.flush(wait?): the head and what is buffered go out; with wait, returns once the client
 * has taken it (the write queue has drained). */
static int l_flush(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, "ngx.flush");
  if (((mg_lua_req_t *)req->lua)->ngx_eof) {
    lua_pushnil(L);
    lua_pushliteral(L, "seen eof");
    return 2;
  }
  start_output(req);
  mg_req_flush(req);
  if (lua_toboolean(L, 1) && mg_req_write_queue(req) > 0) {
    mg_thread_t *t = mg_thread_check(L, "ngx.flush(true)");
    if (t->req != req) return luaL_error(L, "ngx.flush(true) works in a thread of its own request");
    ((mg_lua_req_t *)req->lua)->flush_waiter = t;
    mg_req_on_drain(req, on_flushed);
    return mg_thread_wait(L, t, flush_cancel, req);
  }
  lua_pushinteger(L, 1);
  return 1;
}

static int l_send_headers(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, "ngx.send_headers");
  if (req->head_sent) {
    lua_pushnil(L);
    lua_pushliteral(L, "header already sent");
    return 2;
  }
  start_output(req);
  lua_pushinteger(L, 1);
  return 1;
}

/* ngx.eof(): the response ends now; the Lua code may go on (to log, to call a service). */
static int l_eof(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, "ngx.eof");
  mg_lua_req_t *lr = req->lua;
  if (lr->ngx_eof) {
    lua_pushnil(L);
    lua_pushliteral(L, "seen eof");
    return 2;
  }
  start_output(req);
  lr->ngx_eof = 1;
  mg_req_send_end(req);
  lua_pushinteger(L, 1);
  return 1;
}

/* ---- ngx.exit, ngx.redirect, ngx.exec ----------------------------------------------------------- */

/* The thread ngx.exit may end: the running thread, itself the request's own (a light thread
 * cannot end its request here). */
static mg_thread_t *exit_thread(lua_State *L, const char *what) {
  mg_thread_t *t = mg_thread_current();
  if (!t || t->co != L || !(mg_lua_phase_now & (PH_OUTPUT | MG_PH_TIMER | MG_PH_INIT_WORKER)))
    luaL_error(L, "API disabled in the context of %s: %s", mg_lua_phase_name(mg_lua_phase_now), what);
  if (t->parent) luaL_error(L, "%s in a light thread (ngx.thread.spawn) is not supported by moongate", what);
  return t;
}

static int l_exit(lua_State *L) {
  int status = (int)luaL_checkinteger(L, 1);
  mg_thread_t *t = exit_thread(L, "ngx.exit");
  mg_req_t *req = t->req;
  if (!req) return mg_thread_exit(L, t); /* a timer: it ends */
  mg_lua_req_t *lr = mg_lua_req_attach(req);
  if (lr->ngx_output || req->head_sent) {
    /* The response ends, whole; but 444, 408 and 499 cut it where it is (mg_lua_end_output). */
    if (mg_status_answers_nothing(status)) mg_lua_exit_of(req)->status = status;
    return mg_thread_exit(L, t);
  }
  if (status == 0) {
    /* ngx.OK: this hook is done and the request goes on; in content, an empty response with
     * ngx.status (200 unless set). */
    return mg_thread_exit(L, t);
  }
  mg_lua_exit_t *e = mg_lua_exit_of(req);
  if (status < 0) {
    /* ngx.ERROR and the like: no answer, as nginx's (which logs 000; here 500). */
    e->status = 500;
    e->drop = 1;
  } else if (status < 200 || status > 599) {
    return luaL_error(L, "bad argument #1 to 'exit' (status %d is not a final status (200 to 599) or ngx.OK/ngx.ERROR)",
                      status);
  } else {
    e->status = status;
  }
  if (req->status != status && lr->ngx_status_set && status >= 200 && status < 300) e->status = req->status;
  return mg_thread_exit(L, t);
}

static int l_redirect(lua_State *L) {
  size_t ul;
  const char *uri = luaL_checklstring(L, 1, &ul);
  int status = (int)luaL_optinteger(L, 2, 302);
  if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
    return luaL_error(L, "only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, "
                         "ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed");
  mg_thread_t *t = exit_thread(L, "ngx.redirect");
  mg_req_t *req = t->req;
  if (!req) return luaL_error(L, "no request found");
  if (req->head_sent) return luaL_error(L, "attempt to call ngx.redirect after sending out the headers");
  if (!mg_http_value_is_safe(uri, ul)) return luaL_error(L, "ngx.redirect: the URI holds CR, LF or NUL");
  mg_fields_set(&req->pool, &req->resp_headers, "Location", mg_pool_strndup(&req->pool, uri, ul));
  mg_lua_exit_of(req)->status = status;
  return mg_thread_exit(L, t);
}

/* ngx.exec(uri, args?): an internal redirect (nginx's), the request restarted at uri. */
static int l_exec(lua_State *L) {
  size_t ul;
  const char *uri = luaL_checklstring(L, 1, &ul);
  mg_thread_t *t = exit_thread(L, "ngx.exec");
  mg_req_t *req = t->req;
  if (!req) return luaL_error(L, "no request found");
  if (uri[0] == '@') return luaL_error(L, "ngx.exec to a named location (%s) is not supported by moongate", uri);
  if (uri[0] != '/') return luaL_error(L, "ngx.exec: the URI must be a local path starting with '/', got '%s'", uri);
  if (req->head_sent) return luaL_error(L, "attempt to call ngx.exec after sending out response headers");
  const char *args = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2); /* a table is encoded by ngx.lua */
  mg_lua_exit_t *e = mg_lua_exit_of(req);
  e->redirect = 1;
  if (args && *args) {
    lua_pushfstring(L, "%s%s%s", uri, strchr(uri, '?') ? "&" : "?", args);
    e->location = mg_pool_strdup(&req->pool, lua_tostring(L, -1));
  } else {
    e->location = mg_pool_strndup(&req->pool, uri, ul);
  }
  return mg_thread_exit(L, t);
}

/* ---- ngx.status, ngx.headers_sent, ngx.is_subrequest, ngx.ctx (the dynamic fields) ------------ */

static int l_get_status(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  /* Before a status is set or the head is out, OpenResty's is 0; on an error page, the error's. */
  int unset = !req->head_sent && !((mg_lua_req_t *)req->lua)->ngx_status_set;
  if (unset && req->errpage_status) lua_pushinteger(L, req->errpage_status);
  else if (unset && (mg_lua_phase_now & PH_OUTPUT)) lua_pushinteger(L, 0);
  else lua_pushinteger(L, req->status);
  return 1;
}

static int l_set_status(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT | MG_PH_HEADER_FILTER, "ngx.status");
  int status = (int)luaL_checkinteger(L, 1);
  if (req->head_sent) {
    mg_log_error(MG_LOG_ERROR, req->id, "attempt to set ngx.status after sending out response headers");
    return 0;
  }
  if (status < 100 || status > 999) return luaL_error(L, "ngx.status must be a status code from 100 to 999, got %d", status);
  req->status = status;
  req->errpage_uri = 0; /* an error page that sets its status sends it, as under OpenResty */
  ((mg_lua_req_t *)req->lua)->ngx_status_set = 1;
  return 0;
}

static int l_headers_sent(lua_State *L) {
  lua_pushboolean(L, mg_lua_req_running(L)->head_sent);
  return 1;
}

static int l_is_subrequest(lua_State *L) {
  lua_pushboolean(L, mg_lua_req_running(L)->is_subrequest);
  return 1;
}

/* ngx.ctx: the request's ctx table (req.ctx), made on first use. */
static int l_ctx(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  mg_lua_req_t *lr = req->lua;
  if (lr->ctx_ref == LUA_NOREF) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lr->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, lr->ctx_ref);
  return 1;
}

/* The request's req object, for the Lua half (ngx.ctx, ngx.req.read_body, ...). */
static int l_req(lua_State *L) {
  mg_req_t *req = mg_lua_req_now;
  if (!req) return 0;
  mg_lua_push_req(L, req);
  return 1;
}

/* Sets field `name` (a token, checked by the caller) of f to the value at vidx: a string or a
 * number at once; a list through the one rule for a table of fields (lua_headers.h). */
static int set_field(lua_State *L, mg_req_t *req, mg_fields_t *f, const char *name, int vidx) {
  int t = lua_type(L, vidx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    size_t vl;
    const char *v = lua_tolstring(L, vidx, &vl);
    if (!mg_http_value_is_safe(v, vl)) return luaL_error(L, "header value for '%s' holds CR, LF or NUL", name);
    mg_fields_set(&req->pool, f, name, NULL); /* removes the old ones; the add copies */
    mg_fields_add(&req->pool, f, name, strlen(name), v, vl);
    return 0;
  }
  lua_settop(L, vidx);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, name);
  lua_pushvalue(L, vidx);
  lua_rawset(L, -3);
  const char *err = mg_lua_fields_from_table(L, -1, &req->pool, f, 1);
  if (err) return luaL_error(L, "%s", err);
  return 0;
}

/* ---- ngx.header ------------------------------------------------------------------------------- */

/* The name as ngx.header reads it: '_' is '-'. Content-Type, which nginx keeps apart from the
 * other fields, is sent with that spelling whatever the case written; any other name is sent
 * as written (nginx's `ngx.header.content_length = 3` sends "content-length" too). */
static const char *header_name(lua_State *L, int idx) {
  size_t n;
  const char *k = luaL_checklstring(L, idx, &n);
  if (n == 12 && (strcasecmp(k, "content-type") == 0 || strcasecmp(k, "content_type") == 0)) return "Content-Type";
  if (!memchr(k, '_', n)) return k;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) luaL_addchar(&b, k[i] == '_' ? '-' : k[i]);
  luaL_pushresult(&b);
  lua_replace(L, idx);
  return lua_tostring(L, idx);
}

static int l_header_get(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  const char *name = header_name(L, 2);
  const mg_fields_t *f = &req->resp_headers;
  int found = 0, first = -1;
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) found++, first = first < 0 ? i : first;
  if (!found) return 0;
  if (found == 1) return lua_pushstring(L, f->v[first].value), 1;
  lua_createtable(L, found, 0);
  for (int i = 0, k = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) lua_pushstring(L, f->v[i].value), lua_rawseti(L, -2, ++k);
  return 1;
}

static int l_header_set(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT | MG_PH_HEADER_FILTER, "ngx.header");
  const char *name = header_name(L, 2);
  if (req->head_sent) {
    mg_log_error(MG_LOG_ERROR, req->id, "attempt to set ngx.header.HEADER after sending out response headers");
    return 0;
  }
  if (!mg_http_is_token(name, strlen(name))) return luaL_error(L, "invalid header field name '%s'", name);
  if (lua_isnil(L, 3) || (lua_istable(L, 3) && lua_objlen(L, 3) == 0)) {
    mg_fields_set(&req->pool, &req->resp_headers, name, NULL);
    return 0;
  }
  return set_field(L, req, &req->resp_headers, name, 3);
}

/* ---- ngx.req.* -------------------------------------------------------------------------------- */

/* ngx.req.get_headers(max?, raw?): lowercase names (as written with raw), a list for a repeated
 * field, read case-insensitively and with '_' for '-'; at most max fields (100; 0: all) and
 * "truncated" as a second value when there were more. */
static int push_headers(lua_State *L, const mg_fields_t *f);

static int l_get_headers(lua_State *L) { return push_headers(L, &mg_lua_req_running(L)->headers); }

/* ngx.resp.get_headers(max?, raw?): the response's fields, by the same rules. */
static int l_resp_get_headers(lua_State *L) { return push_headers(L, &mg_lua_req_running(L)->resp_headers); }

static int push_headers(lua_State *L, const mg_fields_t *f) {
  int max = (int)luaL_optinteger(L, 1, 100), raw = lua_toboolean(L, 2);
  int n = max > 0 && f->n > max ? max : f->n;
  mg_fields_t view = *f;
  view.n = n;
  if (raw) mg_lua_push_fields_raw(L, &view);
  else mg_lua_push_fields(L, &view);
  if (n < f->n) {
    lua_pushliteral(L, "truncated");
    return 2;
  }
  return 1;
}

static int l_set_header(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT | MG_PH_BALANCER, "ngx.req.set_header");
  size_t nl;
  const char *name = luaL_checklstring(L, 1, &nl);
  if (!mg_http_is_token(name, nl)) return luaL_error(L, "invalid header field name '%s'", name);
  if (lua_isnil(L, 2) || (lua_istable(L, 2) && lua_objlen(L, 2) == 0)) {
    mg_fields_set(&req->pool, &req->headers, name, NULL);
    return 0;
  }
  return set_field(L, req, &req->headers, name, 2);
}

static int l_clear_header(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT | MG_PH_BALANCER, "ngx.req.clear_header");
  mg_fields_set(&req->pool, &req->headers, luaL_checkstring(L, 1), NULL);
  return 0;
}

static int l_get_method(lua_State *L) {
  lua_pushstring(L, mg_lua_req_running(L)->method);
  return 1;
}

static int l_set_method_name(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT, "ngx.req.set_method");
  size_t ml;
  const char *m = luaL_checklstring(L, 1, &ml);
  req->method = mg_pool_strndup(&req->pool, m, ml);
  req->is_head = strcmp(m, "HEAD") == 0;
  return 0;
}

static int l_http_version(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  lua_pushnumber(L, req->http_major + req->http_minor / 10.0);
  return 1;
}

static int l_is_internal(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  lua_pushboolean(L, req->is_subrequest || req->redirects > 0);
  return 1;
}

/* The request's start in seconds since the epoch (with ms), as ngx.req.start_time(). */
static int l_start_time(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  double age = (double)(uv_hrtime() - req->start_ns) / 1e9;
  lua_pushnumber(L, (double)(int64_t)((now - age) * 1000) / 1000);
  return 1;
}

/* ngx.req.raw_header(no_request_line?): the head as moongate received it, rebuilt from its
 * parts (names as sent, one space after each colon, CRLF line ends). */
static int l_raw_header(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (!lua_toboolean(L, 1)) {
    const char *m = req->orig_method ? req->orig_method : req->method;
    luaL_addstring(&b, m);
    luaL_addchar(&b, ' ');
    luaL_addstring(&b, req->target ? req->target : "/");
    char v[24];
    snprintf(v, sizeof v, " HTTP/%d.%d\r\n", req->http_major, req->http_minor);
    luaL_addstring(&b, v);
  }
  for (int i = 0; i < req->headers.n; i++) {
    luaL_addstring(&b, req->headers.v[i].name);
    luaL_addstring(&b, ": ");
    luaL_addstring(&b, req->headers.v[i].value);
    luaL_addstring(&b, "\r\n");
  }
  luaL_addstring(&b, "\r\n");
  luaL_pushresult(&b);
  return 1;
}

static int l_get_query(lua_State *L) {
  push_opt(L, mg_lua_req_running(L)->query);
  return 1;
}

static int l_set_query(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, "ngx.req.set_uri_args");
  size_t n;
  const char *q = luaL_checklstring(L, 1, &n);
  req->query = n ? mg_pool_strndup(&req->pool, q, n) : NULL;
  return 0;
}

/* ngx.req.set_uri(uri): the path being served (nginx's $uri). */
static int l_set_uri(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  need_phase(L, PH_OUTPUT, "ngx.req.set_uri");
  size_t len;
  const char *uri = luaL_checklstring(L, 1, &len);
  if (len == 0) return luaL_error(L, "attempt to use zero-length uri");
  char *path, *query;
  size_t pl;
  int rc = mg_target_parse(&req->pool, uri, len, req->cfg->set.allow_encoded_slashes, &path, &pl, &query);
  if (rc < 0 || uri[0] != '/') return luaL_error(L, "ngx.req.set_uri: '%s' is not a local path starting with '/'", uri);
  req->path = path, req->path_len = pl;
  (void)query; /* nginx's set_uri keeps a '?' as part of the path; moongate's path cannot hold one */
  return 0;
}

/* ngx.arg[i] / ngx.arg[i] = v in body_filter (lua_hooks.c keeps the chunk). */
static int l_arg_get(lua_State *L) { return mg_lua_body_arg(L, (int)luaL_checkinteger(L, 2)); }
static int l_arg_set(lua_State *L) { return mg_lua_body_arg_set(L, (int)luaL_checkinteger(L, 2), 3); }

/* ---- ngx.log and print ------------------------------------------------------------------------ */

/* The arguments from `first` joined as lua-nginx-module joins them; raises its errors, the
 * argument numbers counted from `first`. */
static const char *log_text(lua_State *L, int first) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = first; i <= n; i++) {
    int t = lua_type(L, i);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
      lua_pushvalue(L, i);
      luaL_addvalue(&b);
    } else if (t == LUA_TNIL) {
      luaL_addstring(&b, "nil");
    } else if (t == LUA_TBOOLEAN) {
      luaL_addstring(&b, lua_toboolean(L, i) ? "true" : "false");
    } else if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, i) == NULL) {
      luaL_addstring(&b, "null");
    } else if (t == LUA_TTABLE && luaL_callmeta(L, i, "__tostring")) {
      if (!lua_isstring(L, -1)) luaL_error(L, "'__tostring' must return a string");
      luaL_addvalue(&b);
    } else {
      /* Numbered as OpenResty numbers them: the level is not counted. */
      luaL_argerror(L, i - first + 1, "expected table to have __tostring metamethod");
    }
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

static const int log_levels[] = {MG_LOG_ERROR, MG_LOG_ERROR, MG_LOG_ERROR, MG_LOG_ERROR, MG_LOG_ERROR,
                                 MG_LOG_WARN,  MG_LOG_NOTICE, MG_LOG_INFO, MG_LOG_DEBUG};

/* ngx.log(level, ...). */
static int l_log(lua_State *L) {
  lua_Integer level = luaL_checkinteger(L, 1);
  if (level < 0 || level > 8) return luaL_argerror(L, 1, lua_pushfstring(L, "bad log level: %d", (int)level));
  const char *msg = log_text(L, 2);
  mg_log_error(log_levels[level], mg_lua_req_now ? mg_lua_req_now->id : NULL, "%s", msg);
  return 0;
}

/* print(...): the error log at notice, as OpenResty's. */
static int l_print_log(lua_State *L) {
  const char *msg = log_text(L, 1);
  mg_log_error(MG_LOG_NOTICE, mg_lua_req_now ? mg_lua_req_now->id : NULL, "%s", msg);
  return 0;
}

/* ---- ngx.get_phase, ngx.worker.pid ------------------------------------------------------------- */

static int l_get_phase(lua_State *L) {
  lua_pushstring(L, mg_lua_phase_name(mg_lua_phase_now));
  return 1;
}

void mg_ngx_var_open(lua_State *L);

void mg_ngx_open(lua_State *L) {
  int mg = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moongate.ngx");
  lua_call(L, 1, 1); /* the builder: fn(mg, primitives) -> ngx */
  lua_pushvalue(L, mg);
  static const luaL_Reg prims[] = {
      {"say", l_say},
      {"print", l_print},
      {"flush", l_flush},
      {"send_headers", l_send_headers},
      {"eof", l_eof},
      {"exit", l_exit},
      {"redirect", l_redirect},
      {"exec", l_exec},
      {"get_status", l_get_status},
      {"set_status", l_set_status},
      {"headers_sent", l_headers_sent},
      {"is_subrequest", l_is_subrequest},
      {"req", l_req},
      {"ctx", l_ctx},
      {"header_get", l_header_get},
      {"header_set", l_header_set},
      {"get_headers", l_get_headers},
      {"resp_get_headers", l_resp_get_headers},
      {"set_header", l_set_header},
      {"clear_header", l_clear_header},
      {"get_method", l_get_method},
      {"set_method_name", l_set_method_name},
      {"http_version", l_http_version},
      {"is_internal", l_is_internal},
      {"start_time", l_start_time},
      {"raw_header", l_raw_header},
      {"get_query", l_get_query},
      {"set_query", l_set_query},
      {"set_uri", l_set_uri},
      {"get_phase", l_get_phase},
      {"arg_get", l_arg_get},
      {"log", l_log},
      {"print_log", l_print_log},
      {"arg_set", l_arg_set},
      {NULL, NULL},
  };
  lua_newtable(L);
  luaL_register(L, NULL, prims);
  mg_ngx_var_open(L); /* prims.var_get, prims.var_set */
  lua_pushlightuserdata(L, NULL); /* ngx.null, the same value as cjson.null */
  lua_setfield(L, -2, "null");
  lua_call(L, 2, 2);
  lua_setglobal(L, "print"); /* OpenResty's print: to the error log, at notice */
  lua_setglobal(L, "ngx");
}
