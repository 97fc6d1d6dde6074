/* static: see static.h. */
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "accept.h"
#include "errpage.h"
#include "etag.h"
#include "handler.h"
#include "log.h"
#include "path.h"
#include "loop.h"
#include "phase.h"
#include "route.h"

#define SEND_PER_TURN (4 * 1024 * 1024)

int mg_static_open_beneath(int root_fd, const char *rel) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  while (*rel == '/') rel++;
  if (!*rel) rel = ".";
  int fd = (int)syscall(SYS_openat2, root_fd, rel, &how, sizeof how);
  return fd < 0 ? -errno : fd;
}

/* ---- MIME types from /etc/mime.types, loaded once per worker ---------------------------------- */

typedef struct {
  char *ext, *type;
  int line; /* the order in the file: the first type listed for an extension wins */
} mime_t;
static mime_t *mimes;
static int nmimes = -1;

static int mime_order(const void *a, const void *b) {
  const mime_t *x = a, *y = b;
  int c = strcasecmp(x->ext, y->ext);
  return c ? c : x->line - y->line;
}

static int mime_find(const void *key, const void *m) { return strcasecmp(key, ((const mime_t *)m)->ext); }

/* Sorted by extension (one entry each) for a binary search: the file lists some 1,500. */
static void mime_load(void) {
  nmimes = 0;
  FILE *f = fopen("/etc/mime.types", "r");
  if (!f) return;
  char line[1024];
  int cap = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char *save, *type = strtok_r(line, " \t\r\n", &save);
    if (!type) continue;
    for (char *ext; (ext = strtok_r(NULL, " \t\r\n", &save));) {
      if (nmimes == cap) cap = cap ? cap * 2 : 512, mimes = mg_realloc(mimes, sizeof(mime_t) * (size_t)cap);
      mimes[nmimes].ext = mg_strdup(ext);
      mimes[nmimes].type = mg_strdup(type);
      mimes[nmimes].line = nmimes;
      nmimes++;
    }
  }
  fclose(f);
  if (nmimes == 0) return;
  qsort(mimes, (size_t)nmimes, sizeof *mimes, mime_order);
  int k = 1;
  for (int i = 1; i < nmimes; i++) {
    if (strcasecmp(mimes[i].ext, mimes[k - 1].ext) == 0) {
      free(mimes[i].ext), free(mimes[i].type);
      continue;
    }
    mimes[k++] = mimes[i];
  }
  nmimes = k;
}

const char *mg_mime_type(const char *path) {
  if (nmimes < 0) mime_load();
  const char *slash = strrchr(path, '/');
  const char *dot = strrchr(slash ? slash : path, '.');
  const mime_t *m = dot && nmimes > 0 ? bsearch(dot + 1, mimes, (size_t)nmimes, sizeof *mimes, mime_find) : NULL;
  return m ? m->type : "application/octet-stream";
}

/* ---- the file sender ------------------------------------------------------------------------ */

typedef struct {
  uv_poll_t poll;
  mg_req_t *req;
  int fd, sock;
  off_t off, end;
  int polling, closed;
} file_send_t;

static void fs_on_closed(uv_handle_t *h) {
  file_send_t *fs = h->data;
  close(fs->sock);
  free(fs);
}

static void fs_close(file_send_t *fs) {
  if (fs->closed) return;
  fs->closed = 1;
  if (fs->req) {
    fs->req->handler_cancel = NULL;
    fs->req->handler_data = NULL;
  }
  fs->req = NULL;
  close(fs->fd);
  if (fs->polling) uv_close((uv_handle_t *)&fs->poll, fs_on_closed);
  else {
    if (fs->sock >= 0) close(fs->sock);
    free(fs);
  }
}

static void fs_cancel(mg_req_t *req) { fs_close(req->handler_data); }

/* The file read a block at a time into the response (no sendfile), pausing while more than
 * MG_WRITE_HIGH bytes wait for the client: for captures and body_filter hooks. */
static void fs_read_pump(mg_req_t *req) {
  file_send_t *fs = req->handler_data;
  while (fs && fs->off < fs->end) {
    if (mg_req_write_queue(req) > MG_WRITE_HIGH) {
      mg_req_on_drain(req, fs_read_pump);
      return;
    }
    size_t left = (size_t)(fs->end - fs->off), room;
    /* A body compressed at once is read straight into the compressor's buffer: no block, no
     * copy. */
    char *direct = mg_req_body_space(req, &room);
    char *blk = direct ? NULL : mg_block_get();
    size_t want = direct ? (left < room ? left : room) : (left < MG_BLOCK_SIZE ? left : MG_BLOCK_SIZE);
    ssize_t n = pread(fs->fd, direct ? direct : blk, want, fs->off);
    if (n <= 0) {
      mg_block_put(blk);
      fs_close(fs);
      mg_req_abort(req, "file truncated while being sent");
      return;
    }
    fs->off += n;
    if (direct) {
      mg_req_commit_body(req, (size_t)n);
      continue;
    }
    mg_req_send_body(req, blk, blk, (size_t)n);
    if (req->handler_data != fs || mg_req_peer_gone(req) || req->resp_ended) return; /* cancelled meanwhile */
  }
  if (!fs) return;
  fs_close(fs);
  mg_req_send_end(req);
}

static void on_writable(uv_poll_t *p, int status, int events) {
  (void)events;
  file_send_t *fs = p->data;
  mg_req_t *req = fs->req;
  if (!req) return;
  if (status < 0) {
    fs_close(fs);
    mg_req_abort(req, "client socket error during sendfile");
    return;
  }
  size_t budget = SEND_PER_TURN;
  while (fs->off < fs->end && budget > 0) {
    size_t want = (size_t)(fs->end - fs->off);
    if (want > budget) want = budget;
    off_t before = fs->off;
    ssize_t n = sendfile(fs->sock, fs->fd, &fs->off, want);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      char why[128];
      snprintf(why, sizeof why, "sendfile: %s", strerror(errno));
      fs_close(fs);
      mg_req_abort(req, why);
      return;
    }
    if (n == 0) {
      /* The file shrank under us: the promised length cannot be kept. */
      fs_close(fs);
      mg_req_abort(req, "file truncated while being sent");
      return;
    }
    req->bytes_sent += (uint64_t)(fs->off - before);
    budget -= (size_t)n;
  }
  if (fs->off >= fs->end) {
    fs_close(fs);
    mg_req_send_end(req);
  }
}

/* Starts sendfile once the head and everything before it has left libuv's queue, so the
 * file's bytes follow them in order on the socket. */
static void fs_start(mg_req_t *req) {
  file_send_t *fs = req->handler_data;
  if (!fs) return;
  mg_req_flush(req);
  if (mg_req_write_queue(req) > 0) {
    mg_req_on_drain(req, fs_start);
    return;
  }
  int sock = mg_req_socket_fd(req);
  if (sock < 0 || (fs->sock = dup(sock)) < 0) {
    fs_close(fs);
    mg_req_abort(req, "cannot duplicate the client socket for sendfile");
    return;
  }
  uv_poll_init(req->server->loop, &fs->poll, fs->sock);
  fs->poll.data = fs;
  fs->polling = 1;
  uv_poll_start(&fs->poll, UV_WRITABLE, on_writable);
}

/* Parses a single "bytes=a-b" range against size. Returns 1 with [*from, *to] set, 0 to
 * send the whole file (no range, several ranges, or a form we do not serve), -1 for 416. */
static int parse_range(const char *h, off_t size, off_t *from, off_t *to) {
  if (!h || strncasecmp(h, "bytes=", 6) != 0) return 0;
  h += 6;
  while (*h == ' ') h++;
  if (strchr(h, ',')) return 0;
  char *end;
  if (*h == '-') {
    long long n = strtoll(h + 1, &end, 10);
    if (end == h + 1 || *end) return 0;
    if (n <= 0 || size == 0) return -1;
    *from = n >= size ? 0 : size - n;
    *to = size - 1;
    return 1;
  }
  long long a = strtoll(h, &end, 10);
  if (end == h || *end != '-' || a < 0) return 0;
  const char *b = end + 1;
  long long z = size - 1;
  if (*b) {
    z = strtoll(b, &end, 10);
    if (end == b || *end || z < a) return 0;
    if (z >= size) z = size - 1;
  }
  if (a >= size) return -1;
  *from = a, *to = z;
  return 1;
}

/* SPEC 19: a static route's Expires and Cache-Control (nginx's `expires`, and `cache_control`
 * in place of the Cache-Control that expires would set). Only on a static route's answers
 * (an X-Sendfile response of an SCGI route has none of these options). */
static void cache_headers(mg_req_t *req) {
  const mg_route_t *r = req->route;
  /* An error page goes out with the error's status: it is never cached as the URI's answer
   * (nginx's expires skips a 404 too). */
  if (!r || r->kind != MG_TARGET_STATIC || req->errpage_status) return;
  mg_pool_t *pool = &req->pool;
  const char *cc = NULL;
  char date[64], age[40];
  switch (r->expires_mode) {
    case MG_EXPIRES_AFTER:
      mg_fields_set(pool, &req->resp_headers, "Expires", mg_http_date(date, sizeof date, (int64_t)time(NULL) + r->expires));
      if (r->expires < 0) cc = "no-cache";
      else snprintf(age, sizeof age, "max-age=%lld", (long long)r->expires), cc = age;
      break;
    case MG_EXPIRES_EPOCH:
      mg_fields_set(pool, &req->resp_headers, "Expires", "Thu, 01 Jan 1970 00:00:01 GMT");
      cc = "no-cache";
      break;
    case MG_EXPIRES_MAX:
      mg_fields_set(pool, &req->resp_headers, "Expires", "Thu, 31 Dec 2037 23:55:55 GMT");
      cc = "max-age=315360000";
      break;
    case MG_EXPIRES_OFF:
      break;
  }
  if (r->cache_control) cc = r->cache_control;
  if (cc) mg_fields_set(pool, &req->resp_headers, "Cache-Control", cc);
}

static time_t parse_http_date(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (!s || !strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm)) return (time_t)-1;
  return timegm(&tm);
}

void mg_file_send(mg_req_t *req, int fd, const struct stat *st, int conditional, const char *path_for_type) {
  mg_pool_t *pool = &req->pool;
  char buf[64], etag[64];
  snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st->st_mtime, (unsigned long long)st->st_size);
  mg_fields_set(pool, &req->resp_headers, "Last-Modified", mg_http_date(buf, sizeof buf, st->st_mtime));
  mg_fields_set(pool, &req->resp_headers, "ETag", etag);
  if (conditional) {
    /* RFC 9110 13.2.2: If-None-Match (weak comparison, lists, "*") decides when present, and
     * If-Modified-Since only without it. The 304 carries what a 200 would for caches
     * (ETag, Last-Modified, Vary, Cache-Control, Expires), no Content-Type or body. */
    const char *inm = mg_fields_get(&req->headers, "If-None-Match");
    time_t ims = inm ? (time_t)-1 : parse_http_date(mg_fields_get(&req->headers, "If-Modified-Since"));
    if (inm ? mg_etag_match_weak(inm, etag) : ims != (time_t)-1 && st->st_mtime <= ims) {
      close(fd);
      req->status = 304;
      mg_req_send_head(req);
      mg_req_send_end(req);
      return;
    }
  }
  mg_fields_set(pool, &req->resp_headers, "Accept-Ranges", "bytes");
  if (path_for_type && !mg_fields_get(&req->resp_headers, "Content-Type"))
    mg_fields_set(pool, &req->resp_headers, "Content-Type", mg_mime_type(path_for_type));
  off_t from = 0, to = st->st_size - 1;
  const char *range = req->status == 200 ? mg_fields_get(&req->headers, "Range") : NULL;
  const char *if_range = mg_fields_get(&req->headers, "If-Range");
  if (range && if_range && strcmp(if_range, etag) != 0 && parse_http_date(if_range) != st->st_mtime) range = NULL;
  int rr = parse_range(range, st->st_size, &from, &to);
  if (rr < 0) {
    close(fd);
    snprintf(buf, sizeof buf, "bytes */%lld", (long long)st->st_size);
    req->resp_headers.n = 0;
    cache_headers(req); /* as nginx, whose expires sees the 200 before the range filter */
    mg_fields_set(pool, &req->resp_headers, "Content-Range", buf);
    static const char body[] = "416 Range Not Satisfiable\n";
    mg_req_respond(req, 416, "text/plain", body, sizeof body - 1);
    return;
  }
  if (rr > 0) {
    req->status = 206;
    snprintf(buf, sizeof buf, "bytes %lld-%lld/%lld", (long long)from, (long long)to, (long long)st->st_size);
    mg_fields_set(pool, &req->resp_headers, "Content-Range", buf);
  }
  off_t len = st->st_size ? to - from + 1 : 0;
  snprintf(buf, sizeof buf, "%lld", (long long)len);
  mg_fields_set(pool, &req->resp_headers, "Content-Length", buf);
  mg_req_send_head(req);
  if (req->is_head || len == 0 || !req->transport) {
    close(fd);
    mg_req_send_end(req);
    return;
  }
  file_send_t *fs = mg_calloc(1, sizeof *fs);
  fs->req = req, fs->fd = fd, fs->sock = -1, fs->off = from, fs->end = from + len;
  req->handler_data = fs;
  req->handler_cancel = fs_cancel;
  if (mg_req_socket_fd(req) < 0) {
    /* The bytes must go through the response API (a capture, body_filter hooks, TLS). */
    fs_read_pump(req);
    return;
  }
  fs_start(req);
}


/* SPEC 19: `precompressed = true`. Among file.br, file.zst and file.gz (regular files not
 * older than the file), the one the client accepts best (accept.h's negotiation) replaces the
 * file: *fd and *st are the sibling's, Content-Encoding and Vary are set; the Content-Type
 * stays the original's (mg_file_send names it by rel), the ETag is the sibling's. */
static void precompressed_sibling(mg_req_t *req, const char *rel, int *fd, struct stat *st) {
  static const struct { int enc; const char *ext; } sib[] = {{MG_ENC_BR, ".br"}, {MG_ENC_ZSTD, ".zst"}, {MG_ENC_GZIP, ".gz"}};
  int fds[3] = {-1, -1, -1}, offered = 0;
  struct stat sst[3];
  size_t rl = strlen(rel);
  char *name = mg_pool_alloc(&req->pool, rl + 5);
  for (int i = 0; i < 3; i++) {
    memcpy(name, rel, rl);
    strcpy(name + rl, sib[i].ext);
    int f = mg_static_open_beneath(req->route->root_fd, name);
    if (f < 0) continue;
    if (fstat(f, &sst[i]) < 0 || !S_ISREG(sst[i].st_mode) || sst[i].st_mtime < st->st_mtime) {
      close(f);
      continue;
    }
    fds[i] = f, offered |= sib[i].enc;
  }
  int enc = offered ? mg_accept_encoding(mg_fields_get(&req->headers, "Accept-Encoding"), offered) : MG_ENC_NONE;
  for (int i = 0; i < 3; i++) {
    if (fds[i] < 0) continue;
    if (sib[i].enc != enc) {
      close(fds[i]);
      continue;
    }
    close(*fd);
    *fd = fds[i], *st = sst[i];
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Encoding", mg_encoding_name(enc));
  }
  if (offered) mg_fields_set(&req->pool, &req->resp_headers, "Vary", "Accept-Encoding");
}

/* ---- { root = DIR } routes ---------------------------------------------------------------- */

/* A directory asked for without its trailing slash: 301 to the slash form, the query kept
 * (nginx). The Location is relative to the host, as nginx's with absolute_redirect off, so it
 * stays right behind another proxy. req->path keeps its escapes (path.h), so it goes as is. */
static void redirect_to_slash(mg_req_t *req) {
  size_t ql = req->query ? strlen(req->query) + 1 : 0;
  char *loc = mg_pool_alloc(&req->pool, req->path_len + ql + 2);
  memcpy(loc, req->path, req->path_len);
  loc[req->path_len] = '/';
  if (ql) loc[req->path_len + 1] = '?', memcpy(loc + req->path_len + 2, req->query, ql - 1);
  loc[req->path_len + 1 + ql] = 0;
  req->resp_headers.n = 0;
  mg_fields_set(&req->pool, &req->resp_headers, "Location", loc);
  cache_headers(req);
  static const char body[] = "301 Moved Permanently\n";
  mg_req_respond(req, 301, "text/plain", body, sizeof body - 1);
}

/* The first of the route's index files that is a regular file in the directory `dir` (a path
 * below the root, "" for the root): its descriptor, with *st and *rel (the file's path below
 * the root, from the pool) set; -1 when there is none. */
static int open_index(mg_req_t *req, const char *dir, struct stat *st, const char **rel) {
  const mg_route_t *r = req->route;
  size_t dl = strlen(dir);
  for (int i = 0; i < r->nindex; i++) {
    size_t nl = strlen(r->index[i]);
    char *p = mg_pool_alloc(&req->pool, dl + nl + 2);
    memcpy(p, dir, dl);
    size_t at = dl;
    if (dl && dir[dl - 1] != '/') p[at++] = '/';
    memcpy(p + at, r->index[i], nl + 1);
    int fd = mg_static_open_beneath(r->root_fd, p);
    if (fd < 0) continue;
    if (fstat(fd, st) == 0 && S_ISREG(st->st_mode)) {
      *rel = p;
      return fd;
    }
    close(fd);
  }
  return -1;
}

/* 405 with the Allow field (mg_req_error would drop it with the handler's other fields). */
static void not_allowed(mg_req_t *req) {
  static const char body[] = "405 Method Not Allowed\n";
  if (mg_errpage_try(req, 405)) return; /* SPEC 19: the route's page for 405 */
  req->resp_headers.n = 0;
  mg_fields_set(&req->pool, &req->resp_headers, "Allow", "GET, HEAD");
  if (!req->msg_done) req->keepalive = 0;
  mg_req_respond(req, 405, "text/plain", body, sizeof body - 1);
}

void mg_static_serve(mg_req_t *req) {
  const mg_route_t *r = req->route;
  /* With a fallback, any method looks for the file first: what is not a file here goes on
   * to the app, a POST included (nginx's try_files); a file only answers GET and HEAD. */
  int readable = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
  if (!readable && !r->fallback) {
    not_allowed(req);
    return;
  }
  size_t skip = r->exact ? req->path_len : r->match_len;
  if (!r->exact && r->match[r->match_len - 1] != '/') skip = r->match_len; /* "/img" + "/a.png" */
  if (skip > req->path_len) skip = req->path_len;
  /* A URI handed over from another route's prefix is looked up whole below this root. */
  if (!r->re && !mg_route_matches(r, req->path, req->path_len)) skip = 0;
  const char *rest = req->path + skip;
  size_t rl = req->path_len - skip;
  char *rel = mg_pool_alloc(&req->pool, rl + 2);
  mg_path_decode(rest, rl, rel);
  const char *name = rel;
  int fd = mg_static_open_beneath(r->root_fd, rel);
  if (fd < 0) {
    if ((fd == -ENOENT || fd == -ENOTDIR) && r->fallback) mg_phase_handover(req, r->fallback);
    else if (fd == -ENOENT || fd == -ENOTDIR) mg_req_error(req, 404, NULL);
    else if (fd == -EXDEV || fd == -ELOOP) mg_req_error(req, 403, "static path %s escapes root %s", rel, r->root);
    else mg_req_error(req, 403, "static file %s/%s: %s", r->root, rel, strerror(-fd));
    return;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) st.st_mode = 0;
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    if (!r->exact && req->path[req->path_len - 1] != '/') {
      if (readable) redirect_to_slash(req);
      else mg_phase_handover(req, r->fallback);
      return;
    }
    fd = open_index(req, rel, &st, &name);
    if (fd < 0) {
      if (r->fallback) mg_phase_handover(req, r->fallback);
      else mg_req_error(req, 403, "directory %s has no index file (%s%s), and directories are not listed", req->path,
                        r->nindex ? r->index[0] : "index = {}", r->nindex > 1 ? ", ..." : "");
      return;
    }
  } else if (!S_ISREG(st.st_mode)) {
    close(fd);
    if (r->fallback) mg_phase_handover(req, r->fallback);
    else mg_req_error(req, 404, "not a regular file: %s", req->path);
    return;
  }
  if (!readable) {
    close(fd);
    not_allowed(req);
    return;
  }
  req->status = 200;
  cache_headers(req); /* SPEC 19 */
  if (r->precompressed) precompressed_sibling(req, name, &fd, &st); /* SPEC 19 */
  mg_file_send(req, fd, &st, 1, name);
}

const mg_handler_t mg_handler_static = {"static", mg_static_serve};
