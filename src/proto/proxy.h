/* proxy: the PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), which a
 * load balancer sends ahead of a connection's own bytes to say whose connection it is.
 *
 * A pure, incremental parser: it is fed the connection's first bytes as they arrive, in any
 * pieces, and takes exactly the header, never a byte past it, so what follows (HTTP/1.1, the
 * HTTP/2 preface, a TLS ClientHello) is left to the caller. Its state is bounded: a version 1
 * line is at most 107 bytes, a version 2 header at most MG_PROXY_V2_MAX bytes, of which only
 * the fixed part and the addresses (at most 232 bytes) are kept; TLVs are skipped as they pass.
 *
 * Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN ...\r\n". Version 2:
 * the 12-byte signature, PROXY or LOCAL, AF_INET, AF_INET6, AF_UNIX or AF_UNSPEC. UNKNOWN, LOCAL
 * and AF_UNSPEC carry no address: the connection's own peer stands (mg_proxy_hdr_t.family 0
 * and local 1). */
#ifndef MG_PROXY_H
#define MG_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define MG_PROXY_V1_MAX 107
/* A version 2 header, the 16 fixed bytes and what its length field announces: nginx's cap. */
#define MG_PROXY_V2_MAX 4096

enum { MG_PROXY_MORE = 0, MG_PROXY_DONE = 1, MG_PROXY_BAD = -1 };

/* What the header says. */
typedef struct {
  int version; /* 1 or 2 */
  /* 1: no address to use (v1 UNKNOWN, v2 LOCAL, v2 AF_UNSPEC): the socket's peer stands. */
  int local;
  int family;  /* AF_INET, AF_INET6, AF_UNIX, or 0 when local */
  uint8_t src[16], dst[16]; /* 4 or 16 bytes */
  uint16_t src_port, dst_port;
} mg_proxy_hdr_t;

typedef struct {
  int state;
  const char *error; /* why the header is refused, in words */
  uint32_t have;     /* bytes kept in buf */
  uint32_t need;     /* v2: the bytes of the header still to come (fixed part, addresses, TLVs) */
  uint32_t keep;     /* v2: how many of them are kept (the fixed part and the addresses) */
  uint8_t buf[232];  /* v1: the line so far; v2: the fixed part and the address block */
} mg_proxy_parser_t;

void mg_proxy_init(mg_proxy_parser_t *p);
/* Feeds data[0..len): MG_PROXY_MORE when all of it was taken and the header is not complete;
 * MG_PROXY_DONE with *used the bytes that belonged to the header (the rest is the
 * connection's own) and *out filled in; MG_PROXY_BAD with the reason in p->error. After DONE
 * or BAD the parser takes nothing more. */
int mg_proxy_parse(mg_proxy_parser_t *p, const char *data, size_t len, size_t *used, mg_proxy_hdr_t *out);

#endif
