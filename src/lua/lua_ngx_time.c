/* lua_ngx_time: the time functions of mg.* and ngx.*, and the nginx C functions pure-Lua
 * libraries call through LuaJIT's FFI (docs/openresty.md, "Time" and "FFI").
 *
 * The clock is cached per turn of the worker's loop, as nginx caches its time: mg.now() /
 * ngx.now() read the wall clock once per turn (when the loop's own time has moved on) and give
 * the same value until the next, so code that stamps many things in one burst stamps them
 * alike; ngx.update_time() reads it again at once. Times have millisecond resolution, as
 * nginx's. Outside a worker's loop (init.lua) every call reads the clock. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "lua_ngx.h"
#include "lua_thread.h"

static struct {
  int64_t ms;         /* wall clock, ms since the epoch */
  uint64_t loop_ms;   /* uv_now() when it was read */
  int valid;
} cached;

static void read_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  cached.ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(void) {
  uv_loop_t *loop = mg_thread_loop();
  if (!loop) {
    read_clock();
    return cached.ms;
  }
  uint64_t l = uv_now(loop);
  if (!cached.valid || l != cached.loop_ms) {
    read_clock();
    cached.loop_ms = l, cached.valid = 1;
  }
  return cached.ms;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)now_ms() / 1000.0);
  return 1;
}

static int l_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)(now_ms() / 1000));
  return 1;
}

static int l_update_time(lua_State *L) {
  (void)L;
  uv_loop_t *loop = mg_thread_loop();
  if (loop) uv_update_time(loop), cached.loop_ms = uv_now(loop), cached.valid = 1;
  read_clock();
  return 0;
}

int mg_ngx_push_time(lua_State *L, const char *fmt, int local) {
  time_t t = (time_t)(now_ms() / 1000);
  struct tm tm;
  if (local) localtime_r(&t, &tm);
  else gmtime_r(&t, &tm);
  char out[64];
  strftime(out, sizeof out, fmt, &tm);
  lua_pushstring(L, out);
  return 1;
}

static int l_today(lua_State *L) { return mg_ngx_push_time(L, "%Y-%m-%d", 1); }
static int l_localtime(lua_State *L) { return mg_ngx_push_time(L, "%Y-%m-%d %H:%M:%S", 1); }
static int l_utctime(lua_State *L) { return mg_ngx_push_time(L, "%Y-%m-%d %H:%M:%S", 0); }

static const char *wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* ngx.http_time(sec): "Thu, 18 Nov 2010 11:27:35 GMT". */
static int l_http_time(lua_State *L) {
  time_t t = (time_t)luaL_checknumber(L, 1);
  struct tm tm;
  gmtime_r(&t, &tm);
  lua_pushfstring(L, "%s, %s%d %s %d %s%d:%s%d:%s%d GMT", wdays[tm.tm_wday], tm.tm_mday < 10 ? "0" : "", tm.tm_mday,
                  months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour < 10 ? "0" : "", tm.tm_hour, tm.tm_min < 10 ? "0" : "",
                  tm.tm_min, tm.tm_sec < 10 ? "0" : "", tm.tm_sec);
  return 1;
}

/* ngx.cookie_time(sec): "Thu, 18-Nov-10 11:27:35 GMT", the year in two digits up to 2037 as
 * nginx's ngx_http_cookie_time writes it (four beyond). */
static int l_cookie_time(lua_State *L) {
  time_t t = (time_t)luaL_checknumber(L, 1);
  struct tm tm;
  gmtime_r(&t, &tm);
  int year = tm.tm_year + 1900;
  char out[64];
  snprintf(out, sizeof out, "%s, %02d-%s-%02d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
           year > 2037 ? year : year % 100, tm.tm_hour, tm.tm_min, tm.tm_sec);
  lua_pushstring(L, out);
  return 1;
}

static int month_of(const char *m) {
  for (int i = 0; i < 12; i++)
    if (strncasecmp(m, months[i], 3) == 0) return i;
  return -1;
}

/* ngx.parse_http_time(str): seconds, or nil. The three forms nginx reads: RFC 1123
 * ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime
 * ("Sun Nov  6 08:49:37 1994"). */
static int l_parse_http_time(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  char wd[16], mon[4];
  int day, year, h, m, sec, n = 0;
  const char *comma = strchr(s, ',');
  if (comma && sscanf(comma + 1, " %d %3s %d %d:%d:%d GMT%n", &day, mon, &year, &h, &m, &sec, &n) == 6 && n) {
  } else if (comma && sscanf(comma + 1, " %d-%3s-%d %d:%d:%d GMT%n", &day, mon, &year, &h, &m, &sec, &n) == 6 && n) {
    if (year < 70) year += 2000;
    else if (year < 100) year += 1900;
  } else if (!comma && sscanf(s, "%15s %3s %d %d:%d:%d %d%n", wd, mon, &day, &h, &m, &sec, &year, &n) == 7 && n) {
  } else {
    lua_pushnil(L);
    return 1;
  }
  int mo = month_of(mon);
  if (mo < 0 || day < 1 || day > 31 || h > 23 || m > 59 || sec > 60 || year < 1970) {
    lua_pushnil(L);
    return 1;
  }
  tm.tm_year = year - 1900, tm.tm_mon = mo, tm.tm_mday = day;
  tm.tm_hour = h, tm.tm_min = m, tm.tm_sec = sec;
  lua_pushnumber(L, (lua_Number)timegm(&tm));
  return 1;
}

void mg_ngx_time_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"now", l_now},
      {"time", l_time},
      {"update_time", l_update_time},
      {"today", l_today},
      {"localtime", l_localtime},
      {"utctime", l_utctime},
      {"http_time", l_http_time},
      {"cookie_time", l_cookie_time},
      {"parse_http_time", l_parse_http_time},
      {NULL, NULL},
  };
  luaL_register(L, NULL, fns);
}

/* ---- the FFI symbols -------------------------------------------------------------------------- */

/* Exported by the binary (ENABLE_EXPORTS) for lua-resty-string and its kin, which declare
 * them with ffi.cdef and call them through ffi.C, with nginx's signatures and results. */
unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len);
intptr_t ngx_atoi(const unsigned char *line, size_t n);

__attribute__((used, visibility("default"))) unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src,
                                                                          size_t len) {
  static const char hex[] = "0123456789abcdef";
  while (len--) {
    *dst++ = (unsigned char)hex[*src >> 4];
    *dst++ = (unsigned char)hex[*src++ & 0xf];
  }
  return dst;
}

/* A decimal number of n digits, or -1 (NGX_ERROR) for none, a non-digit or an overflow. */
__attribute__((used, visibility("default"))) intptr_t ngx_atoi(const unsigned char *line, size_t n) {
  if (n == 0) return -1;
  intptr_t value = 0, cutoff = INTPTR_MAX / 10, cutlim = INTPTR_MAX % 10;
  for (; n--; line++) {
    if (*line < '0' || *line > '9') return -1;
    if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) return -1;
    value = value * 10 + (*line - '0');
  }
  return value;
}
