/* Fuzz target: the init.lua loader. The input is split at NUL bytes into string arguments of
 * the mg.* calls (quoted with %q, so the fuzzer explores the API's validation and the C
 * conversion rather than the Lua parser); loading must either succeed or fail with a message
 * naming the file and line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"

static void quoted(mg_buf_t *b, const char *s, size_t n) {
  mg_buf_append(b, "\"", 1);
  for (size_t i = 0; i < n; i++) mg_buf_printf(b, "\\%03u", (unsigned char)s[i]);
  mg_buf_append(b, "\"", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *args[8] = {0};
  size_t lens[8] = {0};
  int n = 0;
  size_t start = 0;
  for (size_t i = 0; i <= size && n < 8; i++)
    if (i == size || data[i] == 0) {
      args[n] = (const char *)data + start, lens[n] = i - start, n++;
      start = i + 1;
    }
  for (; n < 8; n++) args[n] = "", lens[n] = 0;
  mg_buf_t b;
  mg_buf_init(&b);
  mg_buf_puts(&b, "local mg = require 'moongate'\nmg.listen(");
  quoted(&b, args[0], lens[0]);
  mg_buf_puts(&b, ")\nmg.set { client_max_body_size = ");
  quoted(&b, args[1], lens[1]);
  mg_buf_puts(&b, ", timeout = ");
  quoted(&b, args[2], lens[2]);
  mg_buf_puts(&b, " }\nmg.balancer(\"b\", { members = { { ");
  quoted(&b, args[3], lens[3]);
  mg_buf_puts(&b, ", status = ");
  quoted(&b, args[4], lens[4]);
  mg_buf_puts(&b, " } } })\nmg.route(");
  quoted(&b, args[5], lens[5]);
  mg_buf_puts(&b, ", ");
  quoted(&b, args[6], lens[6]);
  mg_buf_puts(&b, ", { internal_redirect = ");
  quoted(&b, args[7], lens[7]);
  mg_buf_puts(&b, " })\n");
  char path[] = "/tmp/mg-fuzz-config-XXXXXX.lua";
  int fd = mkstemps(path, 4);
  if (fd < 0) abort();
  if (write(fd, b.data, b.len) != (ssize_t)b.len) abort();
  close(fd);
  char err[2048];
  mg_config_t *cfg = mg_config_load(path, err, sizeof err);
  unlink(path);
  if (cfg) mg_config_free(cfg);
  else if (!strstr(err, ".lua:")) {
    fprintf(stderr, "error without file:line: %s\n", err);
    abort();
  }
  mg_buf_free(&b);
  return 0;
}
