/* CIDR parsing and matching, and the address parsers, as nginx's realip reads them. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "cidr.h"
#include "check.h"

/* The address text[...] as inet_ntop writes it, or "bad". */
static const char *ip(const char *text) {
  static char out[64];
  uint8_t b[16];
  int family;
  if (mg_ip_parse(text, strlen(text), &family, b) < 0) return "bad";
  inet_ntop(family, b, out, sizeof out);
  return out;
}

static const char *ip_port(const char *text) {
  static char out[80];
  uint8_t b[16];
  int family, port;
  if (mg_ip_port_parse(text, strlen(text), &family, b, &port) < 0) return "bad";
  char a[64];
  inet_ntop(family, b, a, sizeof a);
  snprintf(out, sizeof out, "%s %d", a, port);
  return out;
}

static mg_cidr_t list[8];
static int nlist;

static int add(const char *text) { return mg_cidr_parse(text, strlen(text), &list[nlist++]); }

/* Whether the address (text) is in the list. */
static int in(const char *text) {
  uint8_t b[16] = {0};
  int family;
  if (strcmp(text, "unix:") == 0) return mg_cidr_match(list, nlist, 0, b);
  if (mg_ip_parse(text, strlen(text), &family, b) < 0) return -1;
  return mg_cidr_match(list, nlist, family, b);
}

int main(void) {
  /* IPv4, with nginx's leniency about empty octets and nothing else. */
  CHECK_STR(ip("192.0.2.1"), "192.0.2.1");
  CHECK_STR(ip("0.0.0.0"), "0.0.0.0");
  CHECK_STR(ip("255.255.255.255"), "255.255.255.255");
  CHECK_STR(ip("1..2.3"), "1.0.2.3");
  CHECK_STR(ip("01.2.3.4"), "1.2.3.4");
  CHECK_STR(ip("256.1.1.1"), "bad");
  CHECK_STR(ip("1.2.3"), "bad");
  CHECK_STR(ip("1.2.3.4.5"), "bad");
  CHECK_STR(ip("1.2.3.4 "), "bad");
  CHECK_STR(ip(""), "bad");
  CHECK_STR(ip("unknown"), "bad");
  CHECK_STR(ip("-1.2.3.4"), "bad");
  /* mg_addr_ntop writes IPv4 as inet_ntop does, every octet value in every place. */
  for (int v = 0; v < 256; v++) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(255 - v), (uint8_t)(v * 7), (uint8_t)(v / 3)};
    char ours[64], theirs[64];
    mg_addr_ntop(AF_INET, b, ours, sizeof ours);
    inet_ntop(AF_INET, b, theirs, sizeof theirs);
    CHECK_STR(ours, theirs);
  }
  /* IPv6. */
  CHECK_STR(ip("::1"), "::1");
  CHECK_STR(ip("::"), "::");
  CHECK_STR(ip("2001:db8::17"), "2001:db8::17");
  CHECK_STR(ip("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  CHECK_STR(ip("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
  CHECK_STR(ip("1::"), "1::");
  CHECK_STR(ip("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
  CHECK_STR(ip("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4:5:6:102:304");
  CHECK_STR(ip("1:2:3:4:5:6:7:1.2.3.4"), "bad");
  CHECK_STR(ip("1:2:3:4:5:6:7:8:9"), "bad");
  CHECK_STR(ip("1::2::3"), "bad");
  CHECK_STR(ip("12345::"), "bad");
  CHECK_STR(ip("1:2:3:4:5:6:7"), "bad");
  CHECK_STR(ip("1:2:3:4:5:6:7:8::"), "bad");
  CHECK_STR(ip("fe80::1%eth0"), "bad");
  CHECK_STR(ip("[::1]"), "bad");
  CHECK_STR(ip("g::1"), "bad");
  /* With a port (X-Forwarded-For may carry one). */
  CHECK_STR(ip_port("192.0.2.1"), "192.0.2.1 0");
  CHECK_STR(ip_port("192.0.2.1:8080"), "192.0.2.1 8080");
  CHECK_STR(ip_port("[2001:db8::1]:443"), "2001:db8::1 443");
  CHECK_STR(ip_port("2001:db8::1"), "2001:db8::1 0");
  CHECK_STR(ip_port("[2001:db8::1]"), "bad");
  CHECK_STR(ip_port("192.0.2.1:0"), "bad");
  CHECK_STR(ip_port("192.0.2.1:65536"), "bad");
  CHECK_STR(ip_port("192.0.2.1:"), "bad");
  CHECK_STR(ip_port("192.0.2.1:+80"), "bad");
  CHECK_STR(ip_port("host:80"), "bad");

  /* CIDRs: an address alone is a /32 or /128; low bits are cleared and reported. */
  mg_cidr_t c;
  CHECK(mg_cidr_parse("10.0.0.0/8", 10, &c) == 0 && c.family == AF_INET && c.bits == 8);
  CHECK(mg_cidr_parse("10.1.2.3/8", 10, &c) == 1 && c.addr[1] == 0 && c.addr[3] == 0);
  CHECK(mg_cidr_parse("::1", 3, &c) == 0 && c.family == AF_INET6 && c.bits == 128);
  CHECK(mg_cidr_parse("unix:", 5, &c) == 0 && c.family == AF_UNIX);
  CHECK(mg_cidr_parse("0.0.0.0/0", 9, &c) == 0 && c.bits == 0);
  CHECK(mg_cidr_parse("10.0.0.0/33", 11, &c) == -1);
  CHECK(mg_cidr_parse("::/129", 6, &c) == -1);
  CHECK(mg_cidr_parse("10.0.0.0/", 9, &c) == -1);
  CHECK(mg_cidr_parse("10.0.0.0/-1", 11, &c) == -1);
  CHECK(mg_cidr_parse("10.0.0.300/8", 12, &c) == -1);
  CHECK(mg_cidr_parse("localhost", 9, &c) == -1);
  CHECK(mg_cidr_parse("unix:/tmp/s", 11, &c) == -1);
  CHECK(mg_cidr_parse("", 0, &c) == -1);

  /* Matching. */
  nlist = 0;
  CHECK(add("10.0.0.0/8") == 0);
  CHECK(add("192.0.2.1") == 0);
  CHECK(add("2001:db8::/32") == 0);
  CHECK(add("172.16.0.0/12") == 0);
  CHECK(in("10.0.0.1") == 1);
  CHECK(in("10.255.255.255") == 1);
  CHECK(in("11.0.0.1") == 0);
  CHECK(in("192.0.2.1") == 1);
  CHECK(in("192.0.2.2") == 0);
  CHECK(in("172.31.255.1") == 1);
  CHECK(in("172.32.0.1") == 0);
  CHECK(in("2001:db8:1::5") == 1);
  CHECK(in("2001:db9::5") == 0);
  CHECK(in("::ffff:10.1.2.3") == 1); /* IPv4-mapped: matched as IPv4 */
  CHECK(in("::ffff:11.1.2.3") == 0);
  CHECK(in("::10.1.2.3") == 0);      /* IPv4-compatible is not mapped */
  CHECK(in("unix:") == 0);
  CHECK(add("unix:") == 0);
  CHECK(in("unix:") == 1);
  nlist = 0;
  CHECK(add("::/0") == 0);
  CHECK(in("::1") == 1);
  CHECK(in("1.2.3.4") == 0); /* an IPv6 range never holds an IPv4 peer */
  CHECK(in("::ffff:1.2.3.4") == 0);
  CHECK(add("0.0.0.0/0") == 0);
  CHECK(in("1.2.3.4") == 1);
  CHECK(in("::ffff:1.2.3.4") == 1);
  CHECK_DONE();
}
