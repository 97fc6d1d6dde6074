/* cidr: IP addresses and address ranges as nginx's realip module reads and matches them.
 *
 * The configuration's `real_ip_from = { "10.0.0.0/8", "::1", "unix:" }` becomes a list of
 * mg_cidr_t (mg_cidr_parse); the trust check of core/realip.c asks whether a peer is in it
 * (mg_cidr_match). The address parsers follow nginx's rules exactly, since a gateway behind the
 * same load balancer must pick the same client address as nginx would from the same header:
 * IPv4 is digits and dots with exactly three dots and octets up to 255 (an empty octet is 0,
 * as in nginx's ngx_inet_addr), IPv6 is inet_pton's text form, and an address followed by a
 * port is "1.2.3.4:80" or "[2001:db8::1]:80" (ngx_parse_addr_port). An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is matched as the IPv4 address it carries, as nginx does.
 *
 * Pure: no allocation, no I/O. */
#ifndef MG_CIDR_H
#define MG_CIDR_H

#include <stddef.h>
#include <stdint.h>

/* An address range. family AF_INET (the first 4 bytes of addr and mask), AF_INET6 (16), or
 * AF_UNIX, which matches every unix-socket peer. addr is already masked. */
typedef struct {
  uint8_t family;
  uint8_t bits;
  uint8_t addr[16];
  uint8_t mask[16];
} mg_cidr_t;

/* Parses "unix:", "ADDR" or "ADDR/BITS" (text[0..len)). Returns 0; 1 when the address had
 * bits set below the mask (they are cleared, as nginx does after its warning "low address bits
 * are meaningless"); -1 when it is not a CIDR. */
int mg_cidr_parse(const char *text, size_t len, mg_cidr_t *out);
/* Whether an address is in one of list[0..n): family AF_INET (4 bytes), AF_INET6 (16 bytes),
 * or 0 for a unix-socket peer (bytes unused). Returns 1 or 0. */
int mg_cidr_match(const mg_cidr_t *list, int n, int family, const uint8_t *bytes);

/* An address alone (nginx's ngx_parse_addr): *family AF_INET or AF_INET6 and its bytes.
 * Returns 0, or -1 when text[0..len) is not an address. */
int mg_ip_parse(const char *text, size_t len, int *family, uint8_t out[16]);
/* An address with an optional port (nginx's ngx_parse_addr_port): "1.2.3.4", "::1",
 * "1.2.3.4:80", "[::1]:80". *port is 0 when there is none. Returns 0 or -1. */
int mg_ip_port_parse(const char *text, size_t len, int *family, uint8_t out[16], int *port);

#endif
