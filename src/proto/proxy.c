/* proxy: see proxy.h.
 *
 * The parser is a small state machine over bytes: the signature decides the version (the
 * first bytes are kept until they match "PROXY " or the 12-byte version 2 signature, or
 * cannot), then a version 1 line is kept whole up to its CRLF and parsed at once, and a
 * version 2 header keeps its 16 fixed bytes and its address block while the TLVs after them
 * are only counted. Every refusal says what was wrong in words, for the error log. */
#include "proxy.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

enum { ST_SIG, ST_V1, ST_V2_FIXED, ST_V2_REST, ST_DONE, ST_BAD };

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[6] = "PROXY ";

void mg_proxy_init(mg_proxy_parser_t *p) { memset(p, 0, sizeof *p); }

static int bad(mg_proxy_parser_t *p, const char *why) {
  p->state = ST_BAD;
  p->error = why;
  return MG_PROXY_BAD;
}

/* The first bytes match no signature: said in words, with a guess at what they are. */
static int bad_start(mg_proxy_parser_t *p) {
  uint8_t c = p->buf[0];
  if (c == 0x16) return bad(p, "the connection does not begin with a PROXY protocol header (it begins with a TLS handshake)");
  if (c >= 'A' && c <= 'Z')
    return bad(p, "the connection does not begin with a PROXY protocol header (it begins like a plain HTTP request)");
  return bad(p, "the connection does not begin with a PROXY protocol header");
}

/* A port of version 1: 0 to 65535 in decimal, no leading zero. Returns it, or -1. */
static long v1_port(const char *s, size_t len) {
  if (len == 0 || len > 5 || (len > 1 && s[0] == '0')) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v <= 65535 ? v : -1;
}

/* An address of version 1 for the family (inet_pton's strict form). */
static int v1_addr(int family, const char *s, size_t len, uint8_t *out) {
  char tmp[64];
  if (len == 0 || len >= sizeof tmp) return -1;
  memcpy(tmp, s, len);
  tmp[len] = 0;
  return inet_pton(family, tmp, out) == 1 ? 0 : -1;
}

/* The line in buf[0..have) without its CRLF, "PROXY " already matched. */
static int v1_parse(mg_proxy_parser_t *p, mg_proxy_hdr_t *out) {
  const char *s = (const char *)p->buf + 6, *end = (const char *)p->buf + p->have - 2;
  const char *f[5];
  size_t fl[5];
  int n = 0;
  memset(out, 0, sizeof *out);
  out->version = 1;
  if ((size_t)(end - s) >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (end - s == 7 || s[7] == ' ')) {
    /* The rest of an UNKNOWN line is to be ignored (proxy-protocol.txt 2.1). */
    out->local = 1;
    return MG_PROXY_DONE;
  }
  /* TCP4 or TCP6 and four fields, each after exactly one space. */
  while (n < 5) {
    const char *sp = memchr(s, ' ', (size_t)(end - s));
    const char *e = sp ? sp : end;
    f[n] = s, fl[n] = (size_t)(e - s);
    n++;
    if (!sp) break;
    s = sp + 1;
  }
  if (fl[0] != 4 || (memcmp(f[0], "TCP4", 4) != 0 && memcmp(f[0], "TCP6", 4) != 0))
    return bad(p, "PROXY v1 header with an unknown protocol (TCP4, TCP6 or UNKNOWN)");
  if (n != 5 || f[4] + fl[4] != end) return bad(p, "PROXY v1 header without its four fields (source, destination, ports)");
  int family = f[0][3] == '4' ? AF_INET : AF_INET6;
  if (v1_addr(family, f[1], fl[1], out->src) < 0 || v1_addr(family, f[2], fl[2], out->dst) < 0)
    return bad(p, family == AF_INET ? "PROXY v1 header with a bad TCP4 address" : "PROXY v1 header with a bad TCP6 address");
  long sp = v1_port(f[3], fl[3]), dp = v1_port(f[4], fl[4]);
  if (sp < 0 || dp < 0) return bad(p, "PROXY v1 header with a bad port");
  out->family = family;
  out->src_port = (uint16_t)sp, out->dst_port = (uint16_t)dp;
  return MG_PROXY_DONE;
}

/* The fixed part is in buf: checked, and what is kept of the rest decided. */
static int v2_fixed(mg_proxy_parser_t *p) {
  uint8_t vc = p->buf[12], ft = p->buf[13];
  uint32_t len = (uint32_t)p->buf[14] << 8 | p->buf[15];
  if (vc >> 4 != 2) return bad(p, "PROXY v2 header with an unknown version");
  if ((vc & 15) > 1) return bad(p, "PROXY v2 header with an unknown command (LOCAL or PROXY)");
  if (ft >> 4 > 3) return bad(p, "PROXY v2 header with an unknown address family");
  if ((ft & 15) > 2) return bad(p, "PROXY v2 header with an unknown transport");
  if (16 + len > MG_PROXY_V2_MAX) return bad(p, "PROXY v2 header longer than 4096 bytes");
  static const uint32_t addr_len[4] = {0, 12, 36, 216};
  uint32_t alen = (vc & 15) == 1 ? addr_len[ft >> 4] : 0;
  if (len < alen) return bad(p, "PROXY v2 header too short for its addresses");
  p->keep = 16 + alen;
  p->need = len;
  p->state = ST_V2_REST;
  return MG_PROXY_MORE;
}

static void v2_result(const mg_proxy_parser_t *p, mg_proxy_hdr_t *out) {
  memset(out, 0, sizeof *out);
  out->version = 2;
  const uint8_t *a = p->buf + 16;
  int family = (p->buf[12] & 15) == 1 ? p->buf[13] >> 4 : 0;
  if (family == 1) {
    out->family = AF_INET;
    memcpy(out->src, a, 4), memcpy(out->dst, a + 4, 4);
    out->src_port = (uint16_t)(a[8] << 8 | a[9]), out->dst_port = (uint16_t)(a[10] << 8 | a[11]);
  } else if (family == 2) {
    out->family = AF_INET6;
    memcpy(out->src, a, 16), memcpy(out->dst, a + 16, 16);
    out->src_port = (uint16_t)(a[32] << 8 | a[33]), out->dst_port = (uint16_t)(a[34] << 8 | a[35]);
  } else if (family == 3) {
    out->family = AF_UNIX;
  } else {
    out->local = 1;
  }
}

int mg_proxy_parse(mg_proxy_parser_t *p, const char *data, size_t len, size_t *used, mg_proxy_hdr_t *out) {
  size_t i = 0;
  *used = 0;
  if (p->state == ST_BAD) return MG_PROXY_BAD;
  if (p->state == ST_DONE) return MG_PROXY_DONE;
  while (i < len) {
    uint8_t c = (uint8_t)data[i];
    switch (p->state) {
      case ST_SIG: {
        p->buf[p->have++] = c;
        i++;
        int v1 = p->have <= sizeof v1_sig && memcmp(p->buf, v1_sig, p->have) == 0;
        int v2 = p->have <= sizeof v2_sig && memcmp(p->buf, v2_sig, p->have) == 0;
        if (!v1 && !v2) return bad_start(p);
        if (v1 && p->have == sizeof v1_sig) p->state = ST_V1;
        if (v2 && p->have == sizeof v2_sig) p->state = ST_V2_FIXED;
        break;
      }
      case ST_V1:
        p->buf[p->have++] = c;
        i++;
        if (c == '\n') {
          if (p->buf[p->have - 2] != '\r') return bad(p, "PROXY v1 header ends in LF without CR");
          *used = i;
          if (v1_parse(p, out) < 0) return MG_PROXY_BAD;
          p->state = ST_DONE;
          return MG_PROXY_DONE;
        }
        if (c < 0x20 && c != '\r') return bad(p, "PROXY v1 header with a control byte");
        if (p->have >= MG_PROXY_V1_MAX) return bad(p, "PROXY v1 header longer than 107 bytes");
        break;
      case ST_V2_FIXED:
        p->buf[p->have++] = c;
        i++;
        if (p->have == 16 && v2_fixed(p) < 0) return MG_PROXY_BAD;
        break;
      default: { /* ST_V2_REST: the addresses are kept, the TLVs after them only counted */
        size_t n = len - i < p->need ? len - i : p->need;
        size_t k = p->keep - p->have < n ? p->keep - p->have : n;
        memcpy(p->buf + p->have, data + i, k);
        p->have += (uint32_t)k;
        p->need -= (uint32_t)n;
        i += n;
        break;
      }
    }
    if (p->state == ST_V2_REST && p->need == 0) {
      *used = i;
      v2_result(p, out);
      p->state = ST_DONE;
      return MG_PROXY_DONE;
    }
  }
  *used = i;
  return MG_PROXY_MORE;
}
