/* Fuzz target: a backend's response head, as mg_cgi_parse sees it. */
#include <stdlib.h>
#include <string.h>

#include "scgi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mg_cgi_head_t h;
  char *copy = malloc(size ? size : 1);
  memcpy(copy, data, size);
  int rc = mg_cgi_parse(copy, size, &h);
  if (rc == MG_CGI_DONE) {
    if (h.head_len > size) abort();
    for (int i = 0; i < h.nheaders; i++) {
      const mg_header_t *f = &h.headers[i];
      if (!mg_http_is_token(f->name, f->name_len)) abort();
      for (uint32_t k = 0; k < f->value_len; k++)
        if (f->value[k] == '\r' || f->value[k] == '\n' || f->value[k] == 0) abort();
    }
  }
  mg_vars_t v;
  mg_vars_init(&v);
  mg_scgi_decode(copy, size, &v);
  mg_vars_free(&v);
  free(copy);
  return 0;
}
