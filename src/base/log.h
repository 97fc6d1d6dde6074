/* log: the error log and the access log.
 *
 * The error log is one line per event: time, level, worker pid, the request id where there is
 * one, then the message. It goes to stderr unless `error_log` names a file. The access log is
 * Apache's combined format followed by the request time in microseconds and the upstream
 * address, or (access_log_format = "json") one JSON object per line with the same fields plus
 * the request id, the route, and the upstream's status and time. Both are opened by mg_log_open() and written with one write(2) per line, so lines
 * from several workers never interleave. */
#ifndef MG_LOG_H
#define MG_LOG_H

#include <stdint.h>
#include <stddef.h>

typedef enum { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_NOTICE, MG_LOG_WARN, MG_LOG_ERROR } mg_log_level_t;

/* Opens the logs; NULL or "off" disables the access log, NULL error_log means stderr.
 * Returns 0, or -errno when a file cannot be opened (the old logs stay in force). */
int mg_log_open(const char *error_log, const char *access_log, const char *level);
void mg_log_close(void);
/* Files the logs create from now on belong to uid:gid (the workers' user), when root. */
void mg_log_set_owner(int uid, int gid);
/* Opens the log files again at their paths (after logrotate moved them), keeping their
 * descriptor numbers. Returns 0, or -errno (the old files stay in use). */
int mg_log_reopen(void);
int mg_log_level_parse(const char *name);

/* `reqid` may be NULL for events outside a request. */
void mg_log_error(mg_log_level_t level, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define mg_log(level, ...) mg_log_error(level, NULL, __VA_ARGS__)

typedef struct {
  const char *remote_addr;
  const char *request_line_method, *request_line_uri, *http_version;
  int status;
  uint64_t bytes_sent;
  const char *referer, *user_agent;
  uint64_t usec;
  const char *upstream;
  /* The JSON format's extra fields. */
  const char *request_id, *route;
  int upstream_status;     /* 0: no backend answered */
  uint64_t upstream_usec;  /* from the first connect to the end of the backend's response */
  const char *trace_id, *span_id; /* SPEC 20: W3C trace context; NULL: tracing off */
} mg_access_entry_t;

/* 0: Apache's combined format (plus microseconds and upstream); 1: one JSON object per line. */
void mg_log_access_format(int json);

int mg_log_access_enabled(void);
void mg_log_access(const mg_access_entry_t *e);

#endif
