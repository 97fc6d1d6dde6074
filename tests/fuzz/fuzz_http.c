/* Fuzz target: bytes from a client, fed through a socket pair to a real connection (llhttp,
 * limits, normalization, routing, Lua hooks and handler, static files, error responses,
 * pipelining), with one configuration loaded once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "server.h"

static mg_server_t server;
static uv_loop_t loop;

static const char config_src[] =
    "local mg = require 'moongate'\n"
    "mg.listen('127.0.0.1:1')\n"
    "mg.set { client_max_body_size = '64k', max_headers = 20, max_header_size = 512, max_request_line = 512 }\n"
    "mg.on('rewrite', function(req) if req.uri == '/re' then req.uri = '/lua?x=1' end end)\n"
    "mg.route('/lua', function(req) return 200, req.uri .. tostring(req.query) .. tostring(req.headers['x']) end,\n"
    "  { hooks = { access = function(req) if req.headers['deny'] then req:exit(403) end end,\n"
    "              header_filter = function(req, res) res.headers['x-f'] = 'y' end } })\n"
    "mg.route('/static/', { root = '/usr/share/doc' })\n"
    "mg.route('=/err', function(req) error('boom') end)\n"
    "mg.route('/go', function(req) req:redirect('/lua') end)\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char path[] = "/tmp/mg-fuzz-http-XXXXXX.lua";
  int fd = mkstemps(path, 4);
  if (fd < 0 || write(fd, config_src, sizeof config_src - 1) < 0) abort();
  close(fd);
  char err[1024];
  mg_config_t *cfg = mg_config_load(path, err, sizeof err);
  unlink(path);
  if (!cfg) {
    fprintf(stderr, "fuzz config: %s\n", err);
    abort();
  }
  /* Every refused input logs a line; the fuzzer needs none of them. */
  mg_log_open("/dev/null", NULL, "error");
  uv_loop_init(&loop);
  server.loop = &loop;
  server.cfg = cfg;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) return 0;
  mg_conn_t *c = mg_conn_new(&server, 1);
  uv_pipe_t *p = (uv_pipe_t *)mg_conn_stream(c);
  uv_pipe_open(p, sv[0]);
  mg_server_conn_opened(&server);
  mg_conn_start(c);
  size_t off = 0;
  /* Feed in two pieces so requests also arrive split across reads. */
  size_t cut = size ? data[0] % (size + 1) : 0;
  for (int round = 0; round < 200 && server.nconns > 0; round++) {
    size_t end = round == 0 ? cut : size;
    if (off < end) {
      ssize_t w = write(sv[1], data + off, end - off);
      if (w > 0) off += (size_t)w;
    } else if (off == size) {
      shutdown(sv[1], SHUT_WR);
      off = size + 1;
    }
    char sink[65536];
    while (read(sv[1], sink, sizeof sink) > 0) {
    }
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  close(sv[1]);
  /* The connection sees the peer gone and closes; run until every handle is closed. */
  for (int i = 0; i < 100 && server.nconns > 0; i++) uv_run(&loop, UV_RUN_NOWAIT);
  if (server.nconns > 0) mg_conn_close(c);
  for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
