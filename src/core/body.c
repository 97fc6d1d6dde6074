/* body: a request body held whole by the gateway (see mg_body_t in request.h).
 *
 * In memory up to 64 KiB, then an unlinked temporary file (O_TMPFILE in $TMPDIR or /tmp):
 * req:read_body() on a large upload never holds it in memory, as nginx's
 * client_body_buffer_size. Writes to the file are short synchronous writes of one read block
 * at most, to a local temporary file. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "request.h"

#define BODY_MEMORY (64 * 1024)

void mg_body_init(mg_body_t *b) {
  mg_buf_init(&b->mem);
  b->fd = -1;
  b->len = 0;
}

int mg_tmpfile(void) {
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  return fd < 0 ? -errno : fd;
}

int mg_body_add(mg_body_t *b, const char *data, size_t len) {
  if (b->fd < 0 && b->mem.len + len <= BODY_MEMORY) {
    mg_buf_append(&b->mem, data, len);
  } else {
    if (b->fd < 0) {
      int fd = mg_tmpfile();
      if (fd < 0) return fd;
      b->fd = fd;
      if (b->mem.len && write(b->fd, b->mem.data, b->mem.len) != (ssize_t)b->mem.len) return -EIO;
      mg_buf_free(&b->mem);
    }
    if (write(b->fd, data, len) != (ssize_t)len) return -EIO;
  }
  b->len += len;
  return 0;
}

void mg_body_reset(mg_body_t *b) {
  mg_buf_free(&b->mem);
  if (b->fd >= 0) close(b->fd);
  b->fd = -1;
  b->len = 0;
}
