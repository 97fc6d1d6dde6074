/* addr: socket addresses as the configuration holds them (backends, health probes), and
 * addresses as text for logs, the CGI environment and Lua.
 *
 * Every place that turns an address into text calls this file. */
#ifndef MG_ADDR_H
#define MG_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
  char *url; /* as written in init.lua: the name in logs and status output */
  struct sockaddr_storage sa;
  socklen_t salen;
  char text[80]; /* mg_addr_format's result, made once when the address is set */
} mg_addr_t;

/* Resolves "host", port into addr (IPv4 preferred, as "localhost" backends usually listen
 * there) or a unix socket path. Returns 0 or a negative getaddrinfo/errno code. */
int mg_addr_resolve_tcp(mg_addr_t *addr, const char *host, int port);
int mg_addr_set_unix(mg_addr_t *addr, const char *path);
/* "127.0.0.1:4000" or "unix:/path": for logs. */
void mg_addr_format(const mg_addr_t *addr, char *out, size_t n);

/* Room for any address as text. */
#define MG_ADDR_TEXT 48
/* The 4 or 16 bytes of an AF_INET or AF_INET6 address as text into out (n bytes); IPv4 is
 * formatted without inet_ntop's sprintf (it runs once per request). Returns out. */
char *mg_addr_ntop(int family, const void *bytes, char *out, size_t n);
/* The IP of a socket address as text ("" for a unix socket): returns its port, 0 when none. */
int mg_sockaddr_ip(const struct sockaddr *sa, char *out, size_t n);

#endif
