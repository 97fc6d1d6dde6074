/* The PROXY protocol parser: versions 1 and 2, every family, headers fed whole and a byte at a
 * time, the bytes after the header left alone, and the refusals with their reasons. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "check.h"
#include "proxy.h"

static mg_proxy_hdr_t hdr;
static const char *why;
static size_t taken;

/* Feeds data (len bytes) in pieces of `step` bytes (0: at once). Returns the result; `taken`
 * is how many bytes belonged to the header. */
static int feed(const void *data, size_t len, size_t step) {
  mg_proxy_parser_t p;
  mg_proxy_init(&p);
  const char *d = data;
  size_t off = 0;
  int rc = MG_PROXY_MORE;
  why = NULL;
  taken = 0;
  while (off < len) {
    size_t n = step && len - off > step ? step : len - off, used;
    rc = mg_proxy_parse(&p, d + off, n, &used, &hdr);
    taken += used;
    if (rc != MG_PROXY_MORE) break;
    CHECK(used == n);
    off += n;
  }
  why = p.error;
  return rc;
}

static int feed_s(const char *s, size_t step) { return feed(s, strlen(s), step); }

static const char *src(void) {
  static char out[64];
  inet_ntop(hdr.family, hdr.src, out, sizeof out);
  return out;
}

/* A version 2 header: command, family byte, address block, TLV bytes, then `tail`. */
static size_t v2(uint8_t *out, int cmd, int fam, const void *addr, size_t alen, size_t tlv, const char *tail) {
  static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
  memcpy(out, sig, 12);
  out[12] = (uint8_t)(0x20 | cmd);
  out[13] = (uint8_t)fam;
  size_t len = alen + tlv;
  out[14] = (uint8_t)(len >> 8), out[15] = (uint8_t)len;
  memcpy(out + 16, addr, alen);
  for (size_t i = 0; i < tlv; i++) out[16 + alen + i] = (uint8_t)(i * 7);
  size_t tl = strlen(tail);
  memcpy(out + 16 + len, tail, tl);
  return 16 + len + tl;
}

int main(void) {
  /* Version 1. */
  const char *l4 = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
  for (size_t step = 0; step <= 3; step++) {
    CHECK(feed_s(l4, step) == MG_PROXY_DONE);
    CHECK(taken == strlen("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"));
    CHECK(hdr.version == 1 && hdr.family == AF_INET && !hdr.local);
    CHECK_STR(src(), "192.0.2.7");
    CHECK(hdr.src_port == 56324 && hdr.dst_port == 443);
  }
  CHECK(feed_s("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n", 1) == MG_PROXY_DONE);
  CHECK(hdr.family == AF_INET6 && hdr.src_port == 65535 && hdr.dst_port == 0);
  CHECK_STR(src(), "2001:db8::1");
  CHECK(feed_s("PROXY UNKNOWN\r\n", 0) == MG_PROXY_DONE && hdr.local && hdr.family == 0);
  CHECK(feed_s("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX", 0) == MG_PROXY_DONE && hdr.local && taken == 35);
  /* the longest line there can be: 107 bytes */
  const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  CHECK(strlen(longest) == 104 && feed_s(longest, 5) == MG_PROXY_DONE);
  char toolong[200];
  memset(toolong, 'x', sizeof toolong);
  memcpy(toolong, "PROXY UNKNOWN ", 14);
  CHECK(feed(toolong, sizeof toolong, 0) == MG_PROXY_BAD && strstr(why, "107 bytes"));
  CHECK(taken == 0);

  /* Version 1 refusals. */
  CHECK(feed_s("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0) == MG_PROXY_BAD && strstr(why, "plain HTTP"));
  CHECK(feed_s("\x16\x03\x01\x02", 0) == MG_PROXY_BAD && strstr(why, "TLS"));
  CHECK(feed_s("\x01\x02", 0) == MG_PROXY_BAD && strstr(why, "does not begin"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n", 0) == MG_PROXY_BAD && strstr(why, "LF"));
  CHECK(feed_s("PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n", 0) == MG_PROXY_BAD && strstr(why, "protocol"));
  CHECK(feed_s("PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n", 0) == MG_PROXY_BAD && strstr(why, "TCP4 address"));
  CHECK(feed_s("PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n", 0) == MG_PROXY_BAD && strstr(why, "TCP6 address"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n", 0) == MG_PROXY_BAD && strstr(why, "port"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n", 0) == MG_PROXY_BAD && strstr(why, "port"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n", 0) == MG_PROXY_BAD);
  CHECK(feed_s("PROXY TCP4 192.0.2.7  198.51.100.1 1 443\r\n", 0) == MG_PROXY_BAD);
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 1 443 5\r\n", 0) == MG_PROXY_BAD && strstr(why, "four fields"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", 0) == MG_PROXY_BAD && strstr(why, "four fields"));
  CHECK(feed_s("PROXY TCP4 192.0.2.7 198.51.100.1 1 443 \r\n", 0) == MG_PROXY_BAD);
  CHECK(feed("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33, 0) == MG_PROXY_BAD && strstr(why, "control"));
  CHECK(feed_s("proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n", 0) == MG_PROXY_BAD);
  /* incomplete: more is needed, nothing is refused yet */
  CHECK(feed_s("PROXY TCP4 192.0.2.7", 0) == MG_PROXY_MORE);
  CHECK(feed_s("PRO", 0) == MG_PROXY_MORE);

  /* Version 2. */
  uint8_t buf[5000];
  uint8_t a4[12] = {203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb};
  size_t n = v2(buf, 1, 0x11, a4, sizeof a4, 0, "GET /");
  for (size_t step = 0; step <= 2; step++) {
    CHECK(feed(buf, n, step) == MG_PROXY_DONE && taken == n - 5);
    CHECK(hdr.version == 2 && hdr.family == AF_INET && !hdr.local);
    CHECK_STR(src(), "203.0.113.9");
    CHECK(hdr.src_port == 8080 && hdr.dst_port == 443);
  }
  /* with TLVs, skipped */
  n = v2(buf, 1, 0x11, a4, sizeof a4, 300, "\x16\x03");
  CHECK(feed(buf, n, 7) == MG_PROXY_DONE && taken == n - 2 && hdr.src_port == 8080);
  uint8_t a6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x42, [16] = 0xfe, [17] = 0x80, [31] = 1, [32] = 0xc3, [33] = 0x50, [35] = 80};
  n = v2(buf, 1, 0x21, a6, sizeof a6, 5, "");
  CHECK(feed(buf, n, 1) == MG_PROXY_DONE && taken == n && hdr.family == AF_INET6);
  CHECK_STR(src(), "2001:db8::42");
  CHECK(hdr.src_port == 50000 && hdr.dst_port == 80);
  uint8_t au[216] = "/run/lb.sock";
  n = v2(buf, 1, 0x31, au, sizeof au, 0, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_DONE && hdr.family == AF_UNIX && !hdr.local);
  /* LOCAL: the addresses (whatever is there) are not the client's */
  n = v2(buf, 0, 0x11, a4, sizeof a4, 0, "x");
  CHECK(feed(buf, n, 3) == MG_PROXY_DONE && hdr.local && hdr.family == 0 && taken == n - 1);
  n = v2(buf, 0, 0x00, "", 0, 0, "GET");
  CHECK(feed(buf, n, 0) == MG_PROXY_DONE && hdr.local && taken == 16);
  /* PROXY with AF_UNSPEC: no address either */
  n = v2(buf, 1, 0x00, "", 0, 4, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_DONE && hdr.local);
  /* the largest allowed, and one byte more */
  n = v2(buf, 1, 0x11, a4, sizeof a4, 4096 - 16 - 12, "");
  CHECK(feed(buf, n, 100) == MG_PROXY_DONE && taken == 4096);
  n = v2(buf, 1, 0x11, a4, sizeof a4, 4096 - 16 - 11, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "4096"));

  /* Version 2 refusals. */
  n = v2(buf, 1, 0x11, a4, 8, 0, ""); /* too short for AF_INET */
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "too short"));
  n = v2(buf, 1, 0x21, a4, 12, 0, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "too short"));
  n = v2(buf, 2, 0x11, a4, 12, 0, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "command"));
  n = v2(buf, 1, 0x41, a4, 12, 0, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "family"));
  n = v2(buf, 1, 0x13, a4, 12, 0, "");
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "transport"));
  n = v2(buf, 1, 0x11, a4, 12, 0, "");
  buf[12] = 0x11; /* version 1 in a version 2 header */
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "version"));
  n = v2(buf, 1, 0x11, a4, 12, 0, "");
  buf[7] = 'q'; /* a broken signature */
  CHECK(feed(buf, n, 0) == MG_PROXY_BAD && strstr(why, "does not begin"));
  n = v2(buf, 1, 0x11, a4, 12, 0, "");
  CHECK(feed(buf, 20, 0) == MG_PROXY_MORE); /* the addresses are still to come */

  /* After DONE or BAD the parser takes nothing. */
  mg_proxy_parser_t p;
  size_t used;
  mg_proxy_init(&p);
  CHECK(mg_proxy_parse(&p, "PROXY UNKNOWN\r\n", 15, &used, &hdr) == MG_PROXY_DONE && used == 15);
  CHECK(mg_proxy_parse(&p, "more", 4, &used, &hdr) == MG_PROXY_DONE && used == 0);
  mg_proxy_init(&p);
  CHECK(mg_proxy_parse(&p, "GET", 3, &used, &hdr) == MG_PROXY_BAD);
  CHECK(mg_proxy_parse(&p, "PROXY", 5, &used, &hdr) == MG_PROXY_BAD && used == 0);
  CHECK_DONE();
}
