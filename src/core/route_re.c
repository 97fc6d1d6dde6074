/* route_re: see route_re.h. */
#include "route_re.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>

static pcre2_match_data *match_data;

int mg_route_re_compile(mg_route_t *r, int caseless, char *err, size_t err_len) {
  int code;
  PCRE2_SIZE off;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)r->match, r->match_len, caseless ? PCRE2_CASELESS : 0, &code, &off, NULL);
  if (!re) {
    char msg[256];
    pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
    snprintf(err, err_len, "%s at offset %zu", msg, (size_t)off);
    return -1;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT (unsupported CPU) it interprets */
  r->re = re;
  return 0;
}

int mg_route_re_match(const mg_route_t *r, const char *path, size_t len, long *ov, int max) {
  if (!match_data) match_data = pcre2_match_data_create(MG_ROUTE_RE_MAX_PAIRS, NULL);
  if (!match_data) return -1;
  int rc = pcre2_match(r->re, (PCRE2_SPTR)path, len, 0, 0, match_data, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) return -1;
  if (rc == 0) rc = MG_ROUTE_RE_MAX_PAIRS; /* more groups than pairs: the first ones */
  uint32_t groups = 0;
  pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &groups);
  int n = (int)groups + 1;
  if (n > MG_ROUTE_RE_MAX_PAIRS) n = MG_ROUTE_RE_MAX_PAIRS;
  if (n > max) n = max;
  PCRE2_SIZE *o = pcre2_get_ovector_pointer(match_data);
  for (int i = 0; i < n; i++) {
    int set = i < rc && o[2 * i] != PCRE2_UNSET;
    ov[2 * i] = set ? (long)o[2 * i] : -1;
    ov[2 * i + 1] = set ? (long)o[2 * i + 1] : -1;
  }
  return n;
}

int mg_route_re_name(const mg_route_t *r, int i, const char **name) {
  uint32_t count = 0, size = 0;
  PCRE2_SPTR table = NULL;
  pcre2_pattern_info(r->re, PCRE2_INFO_NAMECOUNT, &count);
  if (i < 0 || (uint32_t)i >= count) return -1;
  pcre2_pattern_info(r->re, PCRE2_INFO_NAMEENTRYSIZE, &size);
  pcre2_pattern_info(r->re, PCRE2_INFO_NAMETABLE, &table);
  PCRE2_SPTR e = table + (size_t)i * size;
  *name = (const char *)e + 2;
  return (e[0] << 8) | e[1];
}

void mg_route_re_free(mg_route_t *r) {
  if (r->re) pcre2_code_free(r->re);
  r->re = NULL;
}
