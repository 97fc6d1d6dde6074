/* Fuzz target: bytes from a client, fed through a socket pair to a real connection (llhttp,
 * limits, normalization, routing, Lua hooks and handler, static files, error responses,
 * pipelining, trailers), with one configuration loaded once.
 *
 * It also checks the policy invariant (docs/reliability.md, "The policy invariant"): requests
 * under /scgi go to an SCGI backend served by this harness in the same loop, and the last access
 * hook writes in MG_EXPECT the HTTP_* variables its view of req.headers and req.env implies
 * (docs/reference.md, "What the backend receives"). The backend aborts
 * when what it received differs: no client bytes after the head may change what a hook
 * decided. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "hooks.h"
#include "scgi.h"
#include "loop.h"

static mg_server_t server;
static uv_loop_t loop;
static uv_pipe_t backend;
static char backend_path[108];

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
    "mg.route('/go', function(req) req:redirect('/lua') end)\n"
    "mg.route('/wait', function(req)\n"
    "  mg.sleep(0)\n"
    "  local r = req:subrequest('/lua', { body = 'b' })\n"
    "  req:read_body()\n"
    "  local t = mg.spawn(function() mg.sleep(0) return 1 end)\n"
    "  mg.wait(t)\n"
    "  return 200, tostring(r and r.status) .. tostring(req:body())\n"
    "end)\n"
    "mg.on('access', function(req)\n"
    "  if req.headers['w'] then mg.sleep(0) end\n" /* waits: the body is held, aborts land mid-wait */
    "  if req.headers['a'] then req.headers['x-user'] = 'alice' end\n"
    "  req.headers['authorization'] = nil\n"
    "  if req.headers['b'] then req.env.HTTP_B = false end\n"
    "  if req.headers['c'] then req.env.HTTP_C = 'env' end\n"
    "end)\n"
    "mg.route('/scgi', 'unix:' .. BACKEND .. '|scgi://', { hooks = { access = function(req)\n"
    "  local want = {}\n"
    "  for name, v in pairs(req:headers()) do\n"
    "    if name:match('^[%w-]+$') and name ~= 'content-length' and name ~= 'content-type' and name ~= 'proxy' then\n"
    "      if type(v) == 'table' then v = table.concat(v, name == 'cookie' and '; ' or ', ') end\n"
    "      want['HTTP_' .. name:upper():gsub('-', '_')] = v\n"
    "    end\n"
    "  end\n"
    "  for name, v in pairs(req.env) do want[name] = v or nil end\n"
    "  local lines = {}\n"
    "  for name, v in pairs(want) do lines[#lines + 1] = name .. '=' .. v end\n"
    "  table.sort(lines)\n"
    "  req.env.MG_EXPECT = table.concat(lines, '\\n')\n"
    "end } })\n";

/* ---- the harness's SCGI backend -------------------------------------------------------------- */

typedef struct {
  uv_pipe_t h;
  uv_write_t w;
  mg_buf_t in;
  int answered;
} backend_conn_t;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The HTTP_* variables received, "NAME=value" sorted and joined by newlines, against MG_EXPECT. */
static void check_invariant(const mg_vars_t *vars) {
  const mg_var_t *expect = mg_vars_get(vars, "MG_EXPECT");
  if (!expect) return; /* a request the access hook never saw (an internal redirect target) */
  char **lines = calloc((size_t)vars->n + 1, sizeof *lines);
  int n = 0;
  for (int i = 0; i < vars->n; i++) {
    const mg_var_t *v = &vars->v[i];
    if (v->name_len < 5 || memcmp(v->name, "HTTP_", 5) != 0) continue;
    lines[n] = malloc(v->name_len + v->value_len + 2);
    memcpy(lines[n], v->name, v->name_len);
    lines[n][v->name_len] = '=';
    memcpy(lines[n] + v->name_len + 1, v->value, v->value_len);
    lines[n][v->name_len + v->value_len + 1] = 0;
    n++;
  }
  qsort(lines, (size_t)n, sizeof *lines, cmp_str);
  mg_buf_t got;
  mg_buf_init(&got);
  for (int i = 0; i < n; i++) {
    if (i) mg_buf_append(&got, "\n", 1);
    mg_buf_puts(&got, lines[i]);
    free(lines[i]);
  }
  free(lines);
  if (got.len != expect->value_len || memcmp(got.data ? got.data : "", expect->value, got.len) != 0) {
    fprintf(stderr, "policy invariant broken: the backend received\n%.*s\nthe last access hook left\n%.*s\n",
            (int)got.len, got.data ? got.data : "", (int)expect->value_len, expect->value);
    abort();
  }
  mg_buf_free(&got);
}

static void on_backend_closed(uv_handle_t *h) {
  backend_conn_t *bc = h->data;
  mg_buf_free(&bc->in);
  free(bc);
}

static void on_backend_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, on_backend_closed);
}

static void on_backend_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  static char block[65536];
  *buf = uv_buf_init(block, sizeof block);
}

static void on_backend_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  backend_conn_t *bc = s->data;
  if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_backend_closed);
    return;
  }
  if (bc->answered) return;
  mg_buf_append(&bc->in, buf->base, (size_t)nread);
  mg_vars_t vars;
  mg_vars_init(&vars);
  long used = mg_scgi_decode(bc->in.data, bc->in.len, &vars);
  if (used == 0) {
    mg_vars_free(&vars);
    return;
  }
  if (used < 0) abort(); /* moongate sent a malformed netstring */
  check_invariant(&vars);
  mg_vars_free(&vars);
  bc->answered = 1;
  static char answer[] = "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  uv_buf_t b = uv_buf_init(answer, sizeof answer - 1);
  uv_read_stop(s);
  if (uv_write(&bc->w, s, &b, 1, on_backend_written) < 0) uv_close((uv_handle_t *)s, on_backend_closed);
}

static void on_backend_connection(uv_stream_t *listener, int status) {
  if (status < 0) return;
  backend_conn_t *bc = calloc(1, sizeof *bc);
  mg_buf_init(&bc->in);
  uv_pipe_init(&loop, &bc->h, 0);
  bc->h.data = bc;
  if (uv_accept(listener, (uv_stream_t *)&bc->h) < 0) {
    uv_close((uv_handle_t *)&bc->h, on_backend_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&bc->h, on_backend_alloc, on_backend_read);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  /* As a worker does (mg_server_run): a peer that closed is an EPIPE, not a signal. The
   * harness's backend can answer a connection the gateway has already given up. */
  signal(SIGPIPE, SIG_IGN);
  snprintf(backend_path, sizeof backend_path, "/tmp/mg-fuzz-http-%d.sock", (int)getpid());
  char path[] = "/tmp/mg-fuzz-http-XXXXXX.lua";
  int fd = mkstemps(path, 4);
  char prelude[160];
  int pl = snprintf(prelude, sizeof prelude, "local BACKEND = '%s'\n", backend_path);
  if (fd < 0 || write(fd, prelude, (size_t)pl) < 0 || write(fd, config_src, sizeof config_src - 1) < 0) abort();
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
  unlink(backend_path);
  if (uv_pipe_init(&loop, &backend, 0) < 0 || uv_pipe_bind(&backend, backend_path) < 0 ||
      uv_listen((uv_stream_t *)&backend, 64, on_backend_connection) < 0)
    abort();
  uv_unref((uv_handle_t *)&backend);
  server.loop = &loop;
  /* The Lua threads' wake queue and timers run on this loop. */
  if (mg_hooks->worker_start(cfg, &loop) < 0) abort();
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
  mg_conn_start(c, &mg_h1_proto, NULL);
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
