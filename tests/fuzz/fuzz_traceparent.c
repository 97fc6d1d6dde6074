/* Fuzz target: the W3C traceparent parser (proto/traceparent.c). A value it accepts has
 * lower-case hex ids, neither all zero; formatted again as version 00 it parses back to the
 * same ids and flags. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "traceparent.h"

static int lower_hex(const char *s, size_t n) {
  int any = 0;
  for (size_t i = 0; i < n; i++) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    any |= s[i] != '0';
  }
  return any;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mg_traceparent_t tp;
  if (mg_traceparent_parse((const char *)data, size, &tp) < 0) return 0;
  if (strlen(tp.trace_id) != 32 || strlen(tp.parent_id) != 16) abort();
  if (!lower_hex(tp.trace_id, 32) || !lower_hex(tp.parent_id, 16)) abort();
  char out[56];
  mg_traceparent_format(out, tp.trace_id, tp.parent_id, tp.flags);
  mg_traceparent_t again;
  if (mg_traceparent_parse(out, strlen(out), &again) < 0) abort();
  if (memcmp(&tp, &again, sizeof tp) != 0) abort();
  return 0;
}
