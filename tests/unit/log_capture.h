/* log_capture.h: the error log of a unit test goes to a temporary file, so that a case can read
 * back the lines it made the code write (log_take: what came since the last call). */
#ifndef MG_LOG_CAPTURE_H
#define MG_LOG_CAPTURE_H
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

static char log_path[] = "/tmp/mg-unit-log.XXXXXX";
static long log_read;

/* Opens the log at info level; 0, or -1 when the file cannot be made. */
static int log_capture_start(void) {
  int fd = mkstemp(log_path);
  if (fd < 0) return -1;
  close(fd);
  return mg_log_open(log_path, NULL, "info") == 0 ? 0 : -1;
}

static const char *log_take(void) {
  static char buf[4096];
  FILE *f = fopen(log_path, "r");
  buf[0] = 0;
  if (!f) return buf;
  fseek(f, log_read, SEEK_SET);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  log_read += (long)n;
  fclose(f);
  return buf;
}

static void log_capture_end(void) { unlink(log_path); }
#endif
