/* accept: Accept-Encoding negotiation (RFC 9110 12.5.3), pure.
 *
 * The server offers a set of content codings; the client's field gives each a weight (q,
 * 0 to 1 in thousandths). The choice is the offered coding of the highest weight above 0,
 * ties broken by the server's order of preference: br, zstd, gzip. A coding the client does
 * not name takes the weight of `*` if it is there, else 0. "x-gzip" is gzip. `identity`
 * weighs in too: when the client gives it a weight above every offered coding's, the answer
 * is none. No field (or an empty one) is none: nginx compresses only on a request that asks. */
#ifndef MG_ACCEPT_H
#define MG_ACCEPT_H

enum { MG_ENC_NONE = 0, MG_ENC_GZIP = 1, MG_ENC_BR = 2, MG_ENC_ZSTD = 4 };
#define MG_ENC_ALL (MG_ENC_GZIP | MG_ENC_BR | MG_ENC_ZSTD)

/* The coding to use among `offered` (a mask of MG_ENC_*) for the Accept-Encoding value
 * `field` (NULL: absent), or MG_ENC_NONE. */
int mg_accept_encoding(const char *field, int offered);
/* "gzip", "br", "zstd" for one MG_ENC_*; NULL for none. */
const char *mg_encoding_name(int enc);

#endif
