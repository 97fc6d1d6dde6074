/* addr: see addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "buf.h"


int mg_addr_resolve_tcp(mg_addr_t *addr, const char *host, int port) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", port);
  int rc = getaddrinfo(host, portstr, &hints, &res);
  if (rc != 0) return rc;
  struct addrinfo *pick = res;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET) {
      pick = ai;
      break;
    }
  memcpy(&addr->sa, pick->ai_addr, pick->ai_addrlen);
  addr->salen = pick->ai_addrlen;
  freeaddrinfo(res);
  addr->text[0] = 0;
  mg_addr_format(addr, addr->text, sizeof addr->text);
  return 0;
}

int mg_addr_set_unix(mg_addr_t *addr, const char *path) {
  struct sockaddr_un *un = (struct sockaddr_un *)&addr->sa;
  if (strlen(path) >= sizeof un->sun_path) return -ENAMETOOLONG;
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  strcpy(un->sun_path, path);
  addr->salen = sizeof *un;
  addr->text[0] = 0;
  mg_addr_format(addr, addr->text, sizeof addr->text);
  return 0;
}

void mg_addr_format(const mg_addr_t *addr, char *out, size_t n) {
  if (addr->text[0] && out != addr->text && n > 0) {
    size_t l = strnlen(addr->text, sizeof addr->text);
    if (l >= n) l = n - 1;
    memcpy(out, addr->text, l);
    out[l] = 0;
    return;
  }
  char ip[MG_ADDR_TEXT] = "?";
  int port = mg_sockaddr_ip((const struct sockaddr *)&addr->sa, ip, sizeof ip);
  if (addr->sa.ss_family == AF_INET) snprintf(out, n, "%s:%d", ip, port);
  else if (addr->sa.ss_family == AF_INET6) snprintf(out, n, "[%s]:%d", ip, port);
  else snprintf(out, n, "unix:%s", ((const struct sockaddr_un *)&addr->sa)->sun_path);
}

char *mg_addr_ntop(int family, const void *bytes, char *out, size_t n) {
  if (family == AF_INET && n >= 16) {
    const uint8_t *b = bytes;
    size_t k = 0;
    for (int i = 0; i < 4; i++) {
      /* Once per request (the client's address): three digits at most, no division loop. */
      unsigned v = b[i];
      if (i) out[k++] = '.';
      if (v >= 100) out[k++] = (char)('0' + v / 100);
      if (v >= 10) out[k++] = (char)('0' + v / 10 % 10);
      out[k++] = (char)('0' + v % 10);
    }
    out[k] = 0;
    return out;
  }
  if (!inet_ntop(family, bytes, out, (socklen_t)n) && n) out[0] = 0;
  return out;
}

int mg_sockaddr_ip(const struct sockaddr *sa, char *out, size_t n) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    mg_addr_ntop(AF_INET, &in->sin_addr, out, n);
    return ntohs(in->sin_port);
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    mg_addr_ntop(AF_INET6, &in6->sin6_addr, out, n);
    return ntohs(in6->sin6_port);
  }
  if (n) out[0] = 0;
  return 0;
}


