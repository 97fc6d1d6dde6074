/* Fuzz target: the PROXY protocol parser (proto/proxy.c). The input is fed at once and again in
 * pieces (their sizes from the first byte); both must give the same answer, the same header
 * and the same count of header bytes, which never exceeds the caps (107 bytes for version 1,
 * 4096 for version 2) nor the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

static int run(const uint8_t *data, size_t size, size_t step, size_t *taken, mg_proxy_hdr_t *hdr) {
  mg_proxy_parser_t p;
  mg_proxy_init(&p);
  size_t off = 0;
  int rc = MG_PROXY_MORE;
  *taken = 0;
  while (off < size) {
    size_t n = step && size - off > step ? step : size - off, used;
    rc = mg_proxy_parse(&p, (const char *)data + off, n, &used, hdr);
    if (used > n) abort();
    *taken += used;
    if (rc != MG_PROXY_MORE) break;
    if (used != n) abort(); /* MORE takes everything */
    off += n;
  }
  if (rc == MG_PROXY_BAD && !p.error) abort();
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t step = data[0] % 17 + 1;
  data++, size--;
  mg_proxy_hdr_t a, b;
  memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
  size_t ta, tb;
  int ra = run(data, size, 0, &ta, &a), rb = run(data, size, step, &tb, &b);
  if (ra != rb) abort();
  if (ra == MG_PROXY_DONE) {
    if (ta != tb || memcmp(&a, &b, sizeof a) != 0) abort();
    if (ta > size || (a.version == 1 && ta > MG_PROXY_V1_MAX) || ta > MG_PROXY_V2_MAX) abort();
    if (a.local != (a.family == 0)) abort();
  }
  return 0;
}
