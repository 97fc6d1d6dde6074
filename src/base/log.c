/* log: see log.h. Writes are unbuffered single write(2) calls on O_APPEND descriptors. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int error_fd = 2;
static int access_fd = -1;
static mg_log_level_t min_level = MG_LOG_INFO;
/* The paths given to mg_log_open, for mg_log_reopen. */
static char error_path[4096], access_path[4096];

static const char *level_names[] = {"debug", "info", "notice", "warn", "error"};

int mg_log_level_parse(const char *name) {
  for (int i = 0; i < 5; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

static int owner_uid = -1, owner_gid = -1;

void mg_log_set_owner(int uid, int gid) { owner_uid = uid, owner_gid = gid; }

static int open_append(const char *path) {
  if (strcmp(path, "stdout") == 0) return dup(1);
  if (strcmp(path, "stderr") == 0) return dup(2);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  /* The master (root) creates the files for workers that run as `user`: they must be able
   * to open them again after a USR1. */
  if (owner_uid >= 0 && geteuid() == 0 && fchown(fd, (uid_t)owner_uid, (gid_t)owner_gid) < 0) {
    /* Not fatal: the workers keep the descriptor they inherited. */
  }
  return fd;
}

int mg_log_open(const char *error_log, const char *access_log, const char *level) {
  int efd = 2, afd = -1;
  if (error_log) {
    efd = open_append(error_log);
    if (efd < 0) return efd;
  }
  if (access_log && strcmp(access_log, "off") != 0) {
    afd = open_append(access_log);
    if (afd < 0) {
      if (efd != 2) close(efd);
      return afd;
    }
  }
  mg_log_close();
  error_fd = efd;
  access_fd = afd;
  snprintf(error_path, sizeof error_path, "%s", error_log ? error_log : "");
  snprintf(access_path, sizeof access_path, "%s", access_fd >= 0 ? access_log : "");
  if (level && mg_log_level_parse(level) >= 0) min_level = (mg_log_level_t)mg_log_level_parse(level);
  return 0;
}

/* Reopens one log at its path in place of fd (a file only: stdout and stderr stay). */
static int reopen_one(int *fd, const char *path) {
  if (!path[0] || strcmp(path, "stdout") == 0 || strcmp(path, "stderr") == 0) return 0;
  int nfd = open_append(path);
  if (nfd < 0) return nfd;
  /* dup2 keeps the descriptor number, so nothing holding it sees a gap. */
  if (dup2(nfd, *fd) < 0) {
    close(nfd);
    return -errno;
  }
  close(nfd);
  return 0;
}

int mg_log_reopen(void) {
  int rc = reopen_one(&error_fd, error_path);
  int rc2 = access_fd >= 0 ? reopen_one(&access_fd, access_path) : 0;
  return rc < 0 ? rc : rc2;
}

void mg_log_close(void) {
  if (error_fd != 2) close(error_fd);
  if (access_fd >= 0) close(access_fd);
  error_fd = 2;
  access_fd = -1;
}

static size_t format_time(char *out, size_t n, const char *fmt) {
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  return strftime(out, n, fmt, &tm);
}

void mg_log_error(mg_log_level_t level, const char *reqid, const char *fmt, ...) {
  if (level < min_level) return;
  char line[4096];
  size_t n = format_time(line, sizeof line, "%Y/%m/%d %H:%M:%S");
  int k = snprintf(line + n, sizeof line - n, " [%s] %d: ", level_names[level], (int)getpid());
  n += (size_t)k;
  if (reqid) {
    k = snprintf(line + n, sizeof line - n, "*%s ", reqid);
    n += (size_t)k;
  }
  va_list ap;
  va_start(ap, fmt);
  k = vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  n = (k < 0 || (size_t)k >= sizeof line - n - 1) ? sizeof line - 2 : n + (size_t)k;
  line[n++] = '\n';
  ssize_t w = write(error_fd, line, n);
  (void)w;
}

int mg_log_access_enabled(void) { return access_fd >= 0; }

/* Escapes a field for a quoted access-log slot, as Apache does: quotes, backslashes and
 * control bytes become \xHH so a client cannot forge log lines. */
static size_t put_escaped(char *out, size_t cap, const char *s) {
  size_t n = 0;
  if (!s || !*s) s = "-";
  for (; *s && n + 4 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f) n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
    else out[n++] = (char)c;
  }
  return n;
}

static int access_json;

void mg_log_access_format(int json) { access_json = json; }

/* A JSON string: quotes, backslashes and control bytes escaped; bytes from 0x80 up as \u00XX,
 * so a line is always valid JSON whatever a client put in its request line or headers. */
static size_t put_json(char *out, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  if (!s) {
    if (cap >= 4) memcpy(out, "null", 4), n = 4;
    return n;
  }
  out[n++] = '"';
  for (; *s && n + 8 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
    else if (c < 0x20 || c >= 0x7f) {
      memcpy(out + n, "\\u00", 4);
      n += 4;
      out[n++] = hex[c >> 4], out[n++] = hex[c & 15];
    } else out[n++] = (char)c;
  }
  out[n++] = '"';
  return n;
}

static void access_json_line(const mg_access_entry_t *e) {
  char line[8192], t[40];
  size_t n = 0;
  format_time(t, sizeof t, "%Y-%m-%dT%H:%M:%S%z");
  n += (size_t)snprintf(line + n, sizeof line - n, "{\"time\":\"%s\",\"remote_addr\":", t);
  n += put_json(line + n, 128, e->remote_addr);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"method\":");
  n += put_json(line + n, 256, e->request_line_method);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"uri\":");
  n += put_json(line + n, 2048, e->request_line_uri);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"protocol\":");
  n += put_json(line + n, 64, e->http_version);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"status\":%d,\"bytes_sent\":%llu,\"referer\":", e->status,
                        (unsigned long long)e->bytes_sent);
  n += put_json(line + n, 1024, e->referer);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"user_agent\":");
  n += put_json(line + n, 1024, e->user_agent);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"request_time_us\":%llu,\"request_id\":",
                        (unsigned long long)e->usec);
  n += put_json(line + n, 64, e->request_id);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"route\":");
  n += put_json(line + n, 512, e->route);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"upstream\":");
  n += put_json(line + n, 128, e->upstream);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"trace_id\":");
  n += put_json(line + n, 64, e->trace_id);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"span_id\":");
  n += put_json(line + n, 64, e->span_id);
  if (e->upstream_status)
    n += (size_t)snprintf(line + n, sizeof line - n, ",\"upstream_status\":%d,\"upstream_time_us\":%llu}\n",
                          e->upstream_status, (unsigned long long)e->upstream_usec);
  else
    n += (size_t)snprintf(line + n, sizeof line - n, ",\"upstream_status\":null,\"upstream_time_us\":null}\n");
  if (n > sizeof line) n = sizeof line;
  ssize_t w = write(access_fd, line, n);
  (void)w;
}

void mg_log_access(const mg_access_entry_t *e) {
  if (access_fd < 0) return;
  if (access_json) {
    access_json_line(e);
    return;
  }
  char line[8192];
  size_t n = 0;
  n += (size_t)snprintf(line, sizeof line, "%s - - [", e->remote_addr);
  n += format_time(line + n, sizeof line - n, "%d/%b/%Y:%H:%M:%S %z");
  n += (size_t)snprintf(line + n, sizeof line - n, "] \"");
  n += put_escaped(line + n, 2048, e->request_line_method);
  line[n++] = ' ';
  n += put_escaped(line + n, 2048, e->request_line_uri);
  line[n++] = ' ';
  n += put_escaped(line + n, 64, e->http_version);
  n += (size_t)snprintf(line + n, sizeof line - n, "\" %d %llu \"", e->status, (unsigned long long)e->bytes_sent);
  n += put_escaped(line + n, 1024, e->referer);
  n += (size_t)snprintf(line + n, sizeof line - n, "\" \"");
  n += put_escaped(line + n, 1024, e->user_agent);
  n += (size_t)snprintf(line + n, sizeof line - n, "\" %llu %s\n", (unsigned long long)e->usec,
                        e->upstream ? e->upstream : "-");
  if (n > sizeof line) n = sizeof line;
  ssize_t w = write(access_fd, line, n);
  (void)w;
}
