/* traceparent: the W3C Trace Context `traceparent` header (https://www.w3.org/TR/trace-context/,
 * section 3.2), pure: parsing by the spec's rules and the text moongate sends on.
 *
 * A valid value is `VV-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-PPPPPPPPPPPPPPPP-FF` in lower-case hex:
 * version 00 is exactly those 55 characters; a later version (01..fe) may carry more after a
 * `-` at position 55, which is ignored (the spec's forward compatibility); version ff, upper
 * case, an all-zero trace-id or parent-id, or any other shape is invalid. */
#ifndef MG_TRACEPARENT_H
#define MG_TRACEPARENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char trace_id[33];  /* 32 lower-case hex digits */
  char parent_id[17]; /* 16 */
  uint8_t flags;      /* bit 0: sampled */
} mg_traceparent_t;

/* 0 with the fields in *tp, or -1 when `v` (len bytes, surrounding spaces and tabs allowed) is
 * not a valid traceparent. */
int mg_traceparent_parse(const char *v, size_t len, mg_traceparent_t *tp);
/* "00-<trace_id>-<span_id>-<flags>" into out (at least 56 bytes), NUL-terminated. */
void mg_traceparent_format(char *out, const char *trace_id, const char *span_id, uint8_t flags);

#endif
