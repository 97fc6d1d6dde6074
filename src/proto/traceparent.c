/* traceparent: see traceparent.h. */
#include "traceparent.h"

#include <string.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1; /* upper case is invalid (W3C: lowercase hex) */
}

/* n hex digits at p, not all zero when nonzero is set: 0, or -1. */
static int hex_field(const char *p, size_t n, int nonzero) {
  int any = 0;
  for (size_t i = 0; i < n; i++) {
    int v = hexval(p[i]);
    if (v < 0) return -1;
    any |= v;
  }
  return nonzero && !any ? -1 : 0;
}

int mg_traceparent_parse(const char *v, size_t len, mg_traceparent_t *tp) {
  while (len && (*v == ' ' || *v == '\t')) v++, len--;
  while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
  if (len < 55 || hex_field(v, 2, 0) < 0 || v[2] != '-' || v[35] != '-' || v[52] != '-') return -1;
  int version = hexval(v[0]) * 16 + hexval(v[1]);
  if (version == 0xff) return -1;
  if (version == 0 && len != 55) return -1;
  if (len > 55 && v[55] != '-') return -1;
  if (hex_field(v + 3, 32, 1) < 0 || hex_field(v + 36, 16, 1) < 0 || hex_field(v + 53, 2, 0) < 0) return -1;
  memcpy(tp->trace_id, v + 3, 32);
  tp->trace_id[32] = 0;
  memcpy(tp->parent_id, v + 36, 16);
  tp->parent_id[16] = 0;
  tp->flags = (uint8_t)(hexval(v[53]) * 16 + hexval(v[54]));
  return 0;
}

void mg_traceparent_format(char *out, const char *trace_id, const char *span_id, uint8_t flags) {
  static const char hex[] = "0123456789abcdef";
  memcpy(out, "00-", 3);
  memcpy(out + 3, trace_id, 32);
  out[35] = '-';
  memcpy(out + 36, span_id, 16);
  out[52] = '-';
  out[53] = hex[flags >> 4];
  out[54] = hex[flags & 15];
  out[55] = 0;
}
