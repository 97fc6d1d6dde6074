/* Accept-Encoding negotiation: q-values, "*", q=0 refusals, identity, the server's order. */
#include "accept.h"
#include "check.h"

static const char *pick(const char *field, int offered) {
  const char *n = mg_encoding_name(mg_accept_encoding(field, offered));
  return n ? n : "none";
}

int main(void) {
  CHECK_STR(pick(NULL, MG_ENC_ALL), "none");
  CHECK_STR(pick("", MG_ENC_ALL), "none");
  CHECK_STR(pick("gzip", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("GZIP", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("x-gzip", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("gzip, deflate, br, zstd", MG_ENC_ALL), "br");     /* tie: the server's order */
  CHECK_STR(pick("gzip, zstd", MG_ENC_ALL), "zstd");
  CHECK_STR(pick("gzip;q=1, br;q=0.5", MG_ENC_ALL), "gzip");         /* the client's weight first */
  CHECK_STR(pick("br;q=0.9, zstd;q=0.95,gzip;q=0.1", MG_ENC_ALL), "zstd");
  CHECK_STR(pick("br ; q=0.001", MG_ENC_ALL), "br");
  CHECK_STR(pick("br;q=0", MG_ENC_ALL), "none");                     /* q=0 refuses */
  CHECK_STR(pick("br;q=0, gzip", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("*", MG_ENC_ALL), "br");
  CHECK_STR(pick("*;q=0.5, br;q=0", MG_ENC_ALL), "zstd");            /* * covers the unnamed */
  CHECK_STR(pick("*;q=0", MG_ENC_ALL), "none");
  CHECK_STR(pick("gzip;q=0.5, *;q=0.8", MG_ENC_GZIP), "gzip");      /* named beats * */
  CHECK_STR(pick("deflate, compress", MG_ENC_ALL), "none");
  CHECK_STR(pick("br", MG_ENC_GZIP), "none");                       /* not offered */
  CHECK_STR(pick("br, gzip", MG_ENC_GZIP | MG_ENC_ZSTD), "gzip");
  CHECK_STR(pick("identity", MG_ENC_ALL), "none");
  CHECK_STR(pick("gzip;q=0.5, identity", MG_ENC_ALL), "none");       /* identity preferred */
  CHECK_STR(pick("gzip, identity;q=0.5", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("gzip;q=1.5", MG_ENC_ALL), "none");                 /* bad q: not named */
  CHECK_STR(pick("gzip;q=abc, br", MG_ENC_ALL), "br");
  CHECK_STR(pick("gzip;q=0.1234", MG_ENC_ALL), "none");
  CHECK_STR(pick("gzip;Q=0.3;foo=bar", MG_ENC_ALL), "gzip");
  CHECK_STR(pick(" , ,gzip,,", MG_ENC_ALL), "gzip");
  CHECK_STR(pick("gzip;q=0, gzip;q=0.5", MG_ENC_ALL), "gzip");       /* the larger of a repeat */
  CHECK_DONE();
}
