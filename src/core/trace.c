/* trace: see trace.h. */
#include "trace.h"

#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "traceparent.h"

static uint64_t state;
static int seeded;

/* splitmix64 (Vigna): fast, every 64-bit output equally likely; ids need not be secret. */
static uint64_t next_random(void) {
  if (!seeded) {
    if (getrandom(&state, sizeof state, 0) != (ssize_t)sizeof state)
      state = (uint64_t)getpid() * 0x9e3779b97f4a7c15u ^ uv_hrtime();
    seeded = 1;
  }
  uint64_t z = (state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* A nonzero 64-bit id as 16 hex digits (W3C: an all-zero id is invalid). */
static void random_hex16(char *out) {
  static const char hex[] = "0123456789abcdef";
  uint64_t r;
  while ((r = next_random()) == 0) {
  }
  for (int i = 15; i >= 0; i--, r >>= 4) out[i] = hex[r & 15];
  out[16] = 0;
}

void mg_trace_begin(mg_req_t *req) {
  if (!req->cfg->set.tracing) return;
  req->traced = 1;
  random_hex16(req->span_id);
  /* One traceparent field, valid; anything else starts a new trace (W3C 4.3). */
  const char *v = NULL;
  int n = 0;
  for (int i = 0; i < req->headers.n; i++)
    if (mg_name_eq(req->headers.v[i].name, "traceparent")) v = req->headers.v[i].value, n++;
  mg_traceparent_t tp;
  if (n == 1 && mg_traceparent_parse(v, strlen(v), &tp) == 0) {
    memcpy(req->trace_id, tp.trace_id, sizeof req->trace_id);
    memcpy(req->parent_span_id, tp.parent_id, sizeof req->parent_span_id);
    req->trace_flags = tp.flags;
    return;
  }
  random_hex16(req->trace_id);
  random_hex16(req->trace_id + 16);
  req->parent_span_id[0] = 0;
  /* moongate records no spans itself, but the trace it starts is meant to be followed:
   * sampled, so that the backend's tracer (parent-based sampling) records its part. */
  req->trace_flags = 0x01;
}

void mg_trace_child(mg_req_t *child, const mg_req_t *parent) {
  if (!parent->traced) return;
  child->traced = 1;
  memcpy(child->trace_id, parent->trace_id, sizeof child->trace_id);
  memcpy(child->parent_span_id, parent->span_id, sizeof child->parent_span_id);
  child->trace_flags = parent->trace_flags;
  random_hex16(child->span_id);
}
