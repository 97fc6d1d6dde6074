/* scgi-echo: the project's own SCGI backend for end-to-end tests and the benchmark.
 *
 *   scgi-echo HOST:PORT | unix:/path
 *
 * A fixed pool of threads each accepts and serves one connection at a time (one request per
 * connection, as SCGI works), so the backend creates no thread per request and is never the
 * bottleneck of a benchmark. What it
 * answers depends on the path (SCRIPT_NAME + PATH_INFO):
 *   /vars...      200, text/plain: every variable received, "NAME=value\n" in order,
 *                 then "BODY=" and the request body
 *   /bytes/N      200 with N bytes of 'x' and a Content-Length
 *   /stream/N     200 with N bytes of 'y' and no Content-Length
 *   anything else 200, "hello world\n" (12 bytes) with a Content-Length
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int read_full(int fd, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const char *buf, size_t n) {
  while (n) {
    ssize_t w = write(fd, buf, n);
    if (w <= 0) return -1;
    buf += w, n -= (size_t)w;
  }
  return 0;
}

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  char len_buf[16];
  size_t i = 0;
  while (i < sizeof len_buf - 1 && read(fd, len_buf + i, 1) == 1 && len_buf[i] != ':') i++;
  len_buf[i] = 0;
  size_t hl = strtoul(len_buf, NULL, 10);
  char *head = malloc(hl + 1);
  if (hl > 1 << 20 || read_full(fd, head, hl + 1) < 0) goto out;
  const char *script = "", *pinfo = "", *uri = NULL;
  size_t clen = 0;
  for (size_t p = 0; p < hl;) {
    const char *n = head + p, *v = n + strlen(n) + 1;
    if (!strcmp(n, "CONTENT_LENGTH")) clen = strtoul(v, NULL, 10);
    if (!strcmp(n, "SCRIPT_NAME")) script = v;
    if (!strcmp(n, "PATH_INFO")) pinfo = v;
    if (!strcmp(n, "REQUEST_URI")) uri = v;
    p = (size_t)(v + strlen(v) + 1 - head);
  }
  char *body = malloc(clen + 1);
  if (read_full(fd, body, clen) < 0) goto out2;
  char path[4096];
  snprintf(path, sizeof path, "%s%s", script, pinfo);
  /* nginx's stock scgi_params send no SCRIPT_NAME: fall back to the request URI's path. */
  if (!path[0] && uri) snprintf(path, sizeof path, "%.*s", (int)strcspn(uri, "?"), uri);
  /* bench.py's buffering-off route: /nobuf/X answers as /X. */
  if (!strncmp(path, "/nobuf/", 7)) memmove(path, path + 6, strlen(path + 6) + 1);
  if (!strncmp(path, "/vars", 5)) {
    size_t cap = hl * 2 + clen + 256, n = 0;
    char *out = malloc(cap);
    n += (size_t)snprintf(out, cap, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    for (size_t p = 0; p < hl;) {
      const char *nm = head + p, *v = nm + strlen(nm) + 1;
      n += (size_t)snprintf(out + n, cap - n, "%s=%s\n", nm, v);
      p = (size_t)(v + strlen(v) + 1 - head);
    }
    n += (size_t)snprintf(out + n, cap - n, "BODY=");
    memcpy(out + n, body, clen);
    n += clen;
    write_full(fd, out, n);
    free(out);
  } else if (!strncmp(path, "/bytes/", 7) || !strncmp(path, "/stream/", 8)) {
    int stream = path[1] == 's';
    size_t n = strtoul(path + (stream ? 8 : 7), NULL, 10);
    char hdr[128];
    int hn = stream ? snprintf(hdr, sizeof hdr, "Content-Type: application/octet-stream\r\n\r\n")
                    : snprintf(hdr, sizeof hdr, "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n", n);
    write_full(fd, hdr, (size_t)hn);
    char blk[65536];
    memset(blk, stream ? 'y' : 'x', sizeof blk);
    while (n) {
      size_t k = n < sizeof blk ? n : sizeof blk;
      if (write_full(fd, blk, k) < 0) break;
      n -= k;
    }
  } else {
    static const char hello[] = "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n";
    write_full(fd, hello, sizeof hello - 1);
  }
out2:
  free(body);
out:
  free(head);
  close(fd);
  return NULL;
}

static void *accept_loop(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd >= 0) serve((void *)(intptr_t)fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: scgi-echo HOST:PORT | unix:/path\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls;
  if (!strncmp(argv[1], "unix:", 5)) {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", argv[1] + 5);
    unlink(un.sun_path);
    ls = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *)&un, sizeof un) < 0) return perror("bind"), 1;
  } else {
    char host[256];
    snprintf(host, sizeof host, "%s", argv[1]);
    char *colon = strrchr(host, ':');
    if (!colon) return fprintf(stderr, "bad address\n"), 2;
    *colon = 0;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &in.sin_addr);
    ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&in, sizeof in) < 0) return perror("bind"), 1;
  }
  listen(ls, 4096);
  enum { THREADS = 64 };
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    pthread_create(&t[i], &a, accept_loop, (void *)(intptr_t)ls);
    pthread_attr_destroy(&a);
  }
  pthread_join(t[0], NULL);
  return 0;
}
