/* cidr: see cidr.h.
 *
 * The parsers accept exactly what nginx's do, quirks included, because the differential test
 * (tests/e2e/test_realip.py) holds moongate to nginx's answer for the same header: IPv4 allows
 * an empty octet ("1..2.3" is 1.0.2.3), IPv6 skips one leading colon and lets a trailing "::"
 * take the place of a group. Addresses that no client would send; what matters is that two
 * gateways that trust the same proxies name the same client. */
#include "cidr.h"

#include <string.h>
#include <sys/socket.h>

/* Digits and dots, exactly three dots, every octet at most 255. */
static int ip4_parse(const char *s, size_t len, uint8_t out[4]) {
  unsigned octet = 0, dots = 0;
  uint8_t b[4];
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c >= '0' && c <= '9') {
      octet = octet * 10 + (unsigned)(c - '0');
      if (octet > 255) return -1;
    } else if (c == '.') {
      if (dots == 3) return -1;
      b[dots++] = (uint8_t)octet;
      octet = 0;
    } else {
      return -1;
    }
  }
  if (dots != 3) return -1;
  b[3] = (uint8_t)octet;
  memcpy(out, b, 4);
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Groups of 1 to 4 hex digits separated by colons, one "::" at most, an IPv4 tail after the
 * last colon. */
static int ip6_parse(const char *s, size_t len, uint8_t out[16]) {
  uint16_t w[8];
  int nw = 0, zero_at = -1, digits = 0;
  unsigned word = 0;
  size_t i = 0, group = (size_t)-1; /* where the group after the last colon begins */
  if (len == 0) return -1;
  if (s[0] == ':') i = 1;
  for (; i < len; i++) {
    char c = s[i];
    if (c == ':') {
      group = i + 1;
      if (digits) {
        w[nw++] = (uint16_t)word;
        word = 0, digits = 0;
        if (nw == 8) return -1;
        continue;
      }
      if (zero_at >= 0) return -1;
      zero_at = nw;
      continue;
    }
    if (c == '.' && digits) {
      uint8_t v4[4];
      if (nw > 6 || group == (size_t)-1 || ip4_parse(s + group, len - group, v4) < 0) return -1;
      w[nw++] = (uint16_t)(v4[0] << 8 | v4[1]);
      word = (unsigned)(v4[2] << 8 | v4[3]);
      digits = 1;
      break;
    }
    int h = hexval(c);
    if (h < 0 || ++digits > 4) return -1;
    word = word * 16 + (unsigned)h;
  }
  if (digits == 0 && zero_at < 0) return -1;
  w[nw++] = (uint16_t)word; /* the last group; after a trailing "::" it is a zero group */
  if ((nw < 8) != (zero_at >= 0)) return -1;
  uint16_t full[8] = {0};
  if (zero_at < 0) {
    memcpy(full, w, sizeof full);
  } else {
    int tail = nw - zero_at;
    memcpy(full, w, (size_t)zero_at * 2);
    memcpy(full + 8 - tail, w + zero_at, (size_t)tail * 2);
  }
  for (int k = 0; k < 8; k++) out[2 * k] = (uint8_t)(full[k] >> 8), out[2 * k + 1] = (uint8_t)full[k];
  return 0;
}

int mg_ip_parse(const char *text, size_t len, int *family, uint8_t out[16]) {
  if (ip4_parse(text, len, out) == 0) {
    *family = AF_INET;
    return 0;
  }
  if (ip6_parse(text, len, out) == 0) {
    *family = AF_INET6;
    return 0;
  }
  return -1;
}

/* A decimal number of digits only: its value, or -1 (empty, a sign, too large). */
static long parse_uint(const char *s, size_t len, long max) {
  if (len == 0) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
    if (v > max) return -1;
  }
  return v;
}

int mg_ip_port_parse(const char *text, size_t len, int *family, uint8_t out[16], int *port) {
  *port = 0;
  if (mg_ip_parse(text, len, family, out) == 0) return 0;
  const char *end = text + len, *colon;
  if (len && text[0] == '[') {
    const char *rb = memchr(text, ']', len);
    if (!rb || rb + 1 >= end || rb[1] != ':') return -1;
    colon = rb + 1;
    text++;
    len = (size_t)(rb - text);
  } else {
    colon = memchr(text, ':', len);
    if (!colon) return -1;
    len = (size_t)(colon - text);
  }
  long p = parse_uint(colon + 1, (size_t)(end - colon - 1), 65535);
  if (p < 1) return -1;
  if (mg_ip_parse(text, len, family, out) < 0) return -1;
  *port = (int)p;
  return 0;
}

int mg_cidr_parse(const char *text, size_t len, mg_cidr_t *out) {
  memset(out, 0, sizeof *out);
  if (len == 5 && memcmp(text, "unix:", 5) == 0) {
    out->family = AF_UNIX;
    return 0;
  }
  const char *slash = memchr(text, '/', len);
  size_t alen = slash ? (size_t)(slash - text) : len;
  int family;
  if (mg_ip_parse(text, alen, &family, out->addr) < 0) return -1;
  int width = family == AF_INET ? 32 : 128;
  long bits = width;
  if (slash && (bits = parse_uint(slash + 1, len - alen - 1, width)) < 0) return -1;
  out->family = (uint8_t)family;
  out->bits = (uint8_t)bits;
  int low = 0;
  for (int i = 0; i < width / 8; i++) {
    int b = bits > 8 ? 8 : (int)bits;
    bits -= b;
    out->mask[i] = (uint8_t)(0xff00u >> b);
    if (out->addr[i] & ~out->mask[i]) low = 1, out->addr[i] &= out->mask[i];
  }
  return low;
}

int mg_cidr_match(const mg_cidr_t *list, int n, int family, const uint8_t *bytes) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET6 && memcmp(bytes, mapped, 12) == 0) family = AF_INET, bytes += 12;
  for (int i = 0; i < n; i++) {
    const mg_cidr_t *c = &list[i];
    if (c->family != (family ? family : AF_UNIX)) continue;
    if (!family) return 1;
    int k = family == AF_INET ? 4 : 16, j = 0;
    while (j < k && (bytes[j] & c->mask[j]) == c->addr[j]) j++;
    if (j == k) return 1;
  }
  return 0;
}
