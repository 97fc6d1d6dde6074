/* accept: see accept.h. */
#include "accept.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* The weight of "q=..." at s (n bytes) in thousandths, or -1 when it is not a valid qvalue. */
static int parse_q(const char *s, size_t n) {
  if (n < 1 || (s[0] != '0' && s[0] != '1')) return -1;
  int q = (s[0] - '0') * 1000;
  if (n == 1) return q;
  if (s[1] != '.' || n > 5) return -1;
  int scale = 100;
  for (size_t i = 2; i < n; i++, scale /= 10) {
    if (s[i] < '0' || s[i] > '9') return -1;
    q += (s[i] - '0') * scale;
  }
  return q > 1000 ? -1 : q;
}

const char *mg_encoding_name(int enc) {
  switch (enc) {
  case MG_ENC_GZIP: return "gzip";
  case MG_ENC_BR: return "br";
  case MG_ENC_ZSTD: return "zstd";
  default: return NULL;
  }
}

int mg_accept_encoding(const char *field, int offered) {
  if (!field) return MG_ENC_NONE;
  /* Weights: -1 not named. Index 0 gzip, 1 br, 2 zstd, 3 identity, 4 "*". */
  int w[5] = {-1, -1, -1, -1, -1};
  const char *p = field;
  while (*p) {
    while (*p == ',' || is_ows(*p)) p++;
    if (!*p) break;
    const char *tok = p;
    while (*p && *p != ',' && *p != ';' && !is_ows(*p)) p++;
    size_t tl = (size_t)(p - tok);
    int q = 1000;
    /* Parameters: only q matters; a bad q makes the member count as not named. */
    while (*p && *p != ',') {
      while (is_ows(*p) || *p == ';') p++;
      const char *par = p;
      while (*p && *p != ',' && *p != ';') p++;
      const char *end = p;
      while (end > par && is_ows(end[-1])) end--;
      if (end - par >= 2 && (par[0] == 'q' || par[0] == 'Q') && par[1] == '=') q = parse_q(par + 2, (size_t)(end - par - 2));
    }
    int i = -1;
    if ((tl == 4 && strncasecmp(tok, "gzip", 4) == 0) || (tl == 6 && strncasecmp(tok, "x-gzip", 6) == 0)) i = 0;
    else if (tl == 2 && strncasecmp(tok, "br", 2) == 0) i = 1;
    else if (tl == 4 && strncasecmp(tok, "zstd", 4) == 0) i = 2;
    else if (tl == 8 && strncasecmp(tok, "identity", 8) == 0) i = 3;
    else if (tl == 1 && tok[0] == '*') i = 4;
    if (i >= 0 && q >= 0 && q > w[i]) w[i] = q;
  }
  /* The server's preference order. */
  static const int order[3] = {1, 2, 0};
  static const int mask[3] = {MG_ENC_GZIP, MG_ENC_BR, MG_ENC_ZSTD};
  int best = MG_ENC_NONE, best_q = 0;
  for (int k = 0; k < 3; k++) {
    int i = order[k];
    if (!(offered & mask[i])) continue;
    int q = w[i] >= 0 ? w[i] : w[4] >= 0 ? w[4] : 0;
    if (q > best_q) best = mask[i], best_q = q;
  }
  if (best && w[3] > best_q) return MG_ENC_NONE;
  return best;
}
