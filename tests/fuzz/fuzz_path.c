/* Fuzz target: request targets through splitting, normalization, the SCRIPT_NAME/PATH_INFO
 * split and the round-trip invariant. */
#include <stdlib.h>
#include <string.h>

#include "cgi_env.h"
#include "path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *t = (const char *)data;
  const char *path, *query;
  size_t pl, ql;
  if (mg_target_split(t, size, &path, &pl, &query, &ql) < 0) return 0;
  char *norm = malloc(pl + 2);
  int n = mg_path_normalize(path, pl, norm, size & 1);
  if (n >= 0) {
    if (norm[0] != '/' || strstr(norm, "//") || strstr(norm, "/../") || strstr(norm, "/./")) abort();
    mg_pool_t pool;
    mg_pool_init(&pool);
    const char *s, *pi;
    /* Route prefixes end at a segment boundary (route.c): split after the first segment. */
    const char *slash = strchr(norm + 1, '/');
    size_t prefix = slash ? (size_t)(slash - norm + 1) : (size_t)n;
    mg_cgi_split_path(&pool, norm, (size_t)n, norm, prefix, 1, &s, &pi);
    size_t jl = strlen(s) + strlen(pi);
    char *joined = malloc(jl + 1), *enc = malloc(3 * jl + 1);
    strcpy(joined, s);
    strcat(joined, pi);
    mg_path_encode(joined, jl, enc);
    /* Encoding the decoded halves gives a path equivalent to the normalized one: decoding
     * both gives the same bytes. */
    char *d1 = malloc(strlen(enc) + 1), *d2 = malloc((size_t)n + 1);
    mg_path_decode(enc, strlen(enc), d1);
    mg_path_decode(norm, (size_t)n, d2);
    if (strcmp(d1, d2) != 0) abort();
    free(d1), free(d2), free(joined), free(enc);
    mg_pool_free(&pool);
  }
  free(norm);
  return 0;
}
