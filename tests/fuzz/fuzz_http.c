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
#include <sys/socket.h>

#include "conn.h"
#include "fuzz_harness.h"
#include "http1.h"

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
    MG_FUZZ_POLICY_LUA;

/* ---- the harness's SCGI backend (fuzz_harness.h): a short answer to every request --------- */

static void backend_answer(backend_conn_t *bc, uv_stream_t *s, const mg_vars_t *vars) {
  (void)vars;
  bc->answered = 1;
  static char answer[] = "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  uv_buf_t b = uv_buf_init(answer, sizeof answer - 1);
  uv_read_stop(s);
  if (uv_write(&bc->w, s, &b, 1, on_backend_written) < 0) uv_close((uv_handle_t *)s, on_backend_closed);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  harness_start("http", config_src, sizeof config_src - 1);
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
