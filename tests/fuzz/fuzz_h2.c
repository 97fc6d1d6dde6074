/* Fuzz target: HTTP/2 frames from a client, fed through a socket pair to a real connection
 * started as a worker starts one on a plain listener with `http2 = true` (the preface chooses
 * HTTP/2): nghttp2's framing, HPACK and flow control under moongate's callbacks, the field
 * checks (h2_fields.c), the streams as requests (routing, Lua hooks and handlers, waits,
 * subrequests, static files in DATA frames, errors), resets, GOAWAY, the flood limits and
 * backpressure, with one configuration loaded once.
 *
 * It checks the policy invariant as fuzz_http does (docs/reliability.md, "The policy
 * invariant"): requests under /scgi go to an SCGI backend served by this harness in the same
 * loop, the last access hook writes in MG_EXPECT the HTTP_* variables its view of req.headers
 * and req.env implies, and the backend aborts when what it received differs (and when an
 * HTTP/2 request arrives without SERVER_PROTOCOL=HTTP/2.0). Its answer follows the path, so
 * that the response side of a stream is fuzzed too: a short body, 300 KB (flow control and
 * producers waiting for room), a body cut short (RST_STREAM), one ended by the close, or none
 * (a stream held open until the client resets it or goes).
 *
 * The input is not raw bytes but records the harness frames (the 9-byte frame headers and
 * HPACK are test input generation here), so that valid requests are frequent:
 *
 *   byte 0  where the first write ends (a fraction of the whole)
 *   byte 1  options (OPT_*)
 *   then records, each  kind flags stream [kind-specific bytes]:
 *     kind % 16: 0 DATA (len, bytes)         1 HEADERS: a request (pseudo-headers + fields)
 *                2 PRIORITY  3 RST_STREAM  4 SETTINGS  5 PUSH_PROMISE  6 PING  7 GOAWAY
 *                8 WINDOW_UPDATE (len, bytes: the usual length unless len >= 0xc0)
 *                9 CONTINUATION of fields    10 HEADERS of fields only (trailers, malformed)
 *                11 DATA of (len + 1) * 64 filler bytes
 *                12 any frame type, raw payload (malformed HPACK)
 *                13 flags 0: raw bytes, unframed (len, bytes); else the record before, again
 *                   flags * 4 times (floods)
 *                14 a write ends here        15 the client stops / resumes reading
 *   stream: bit 7 clear: an odd id 2n + 1; set: the id n (0, even), 0xff: 2^31 - 1.
 *   Fields are a count then two bytes each: a name and a value from the dictionaries below,
 *   or, past them, a literal of that many input bytes.
 *
 * Every connection begins with the preface and (unless OPT_NO_SETTINGS) a SETTINGS frame and
 * the acknowledgement of the server's, written by the harness. */
#include <nghttp2/nghttp2.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "conn.h"
#include "fuzz_harness.h"
#include "http1.h"
#include "http2.h"

static const char config_src[] =
    "local mg = require 'moongate'\n"
    "mg.listen('127.0.0.1:1', { http2 = true })\n"
    "mg.set { client_max_body_size = '64k', max_headers = 20, max_header_size = 512, max_request_line = 512,\n"
    "         http2_max_concurrent_streams = 8, http2_max_header_list_size = 2048,\n"
    "         http2_initial_window_size = 16384, keepalive_requests = 24 }\n"
    "mg.on('rewrite', function(req) if req.uri == '/re' then req.uri = '/lua?x=1' end end)\n"
    "mg.route('/lua', function(req) return 200, req.uri .. tostring(req.query) .. tostring(req.headers['x']) end,\n"
    "  { hooks = { access = function(req) if req.headers['deny'] then req:exit(403) end end,\n"
    "              header_filter = function(req, res) res.headers['x-f'] = 'y' end } })\n"
    "mg.route('/static/', { root = '/usr/share/doc' })\n"
    "mg.route('=/err', function(req) error('boom') end)\n"
    "mg.route('/go', function(req) req:redirect('/lua') end)\n"
    /* More than a stream window, flushed (waiting for room), then more after a wait; a
     * body_filter that fails before the first byte (retract: a clean 500), at the end (the
     * stream is cut), or changes the pieces. */
    "mg.route('=/stream', function(req) ngx.say(string.rep('s', 70000)) ngx.flush(true) mg.sleep(0) ngx.say('end') end,\n"
    "  { hooks = { body_filter = function(req, res, chunk, eof)\n"
    "    local v = req.headers['bf']\n"
    "    if v == '1' or (v == 'eof' and eof) then error('bf') elseif v then return chunk:upper() end\n"
    "  end } })\n"
    "mg.route('/wait', function(req)\n"
    "  mg.sleep(0)\n"
    "  local r = req:subrequest('/lua', { body = 'b' })\n"
    "  req:read_body()\n"
    "  local t = mg.spawn(function() mg.sleep(0) return 1 end)\n"
    "  mg.wait(t)\n"
    "  return 200, tostring(r and r.status) .. tostring(req:body())\n"
    "end)\n"
    MG_FUZZ_POLICY_LUA;

/* ---- the harness's SCGI backend (fuzz_harness.h) -------------------------------------------- */

/* Beyond the policy invariant: an HTTP/2 request says so. What it answers follows the path:
 * /scgi/hold never (it reads on, until moongate closes), /scgi/big 300 KB (flow control,
 * producers waiting for room), /scgi/cut less than its Content-Length (the stream is cut),
 * /scgi/nolen a body ended by the close. */
static void backend_answer(backend_conn_t *bc, uv_stream_t *s, const mg_vars_t *vars) {
  const mg_var_t *proto = mg_vars_get(vars, "SERVER_PROTOCOL");
  if (!proto || proto->value_len != 8 || memcmp(proto->value, "HTTP/2.0", 8) != 0) {
    fprintf(stderr, "an HTTP/2 request reached the backend without SERVER_PROTOCOL=HTTP/2.0\n");
    abort();
  }
  const mg_var_t *uri = mg_vars_get(vars, "REQUEST_URI");
  char path[32] = "";
  if (uri) snprintf(path, sizeof path, "%.*s", (int)uri->value_len, uri->value);
  bc->answered = 1; /* what follows (the body) is read and dropped */
  if (strncmp(path, "/scgi/hold", 10) == 0) return;
  static char answer[] = "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  static char big_head[] = "Status: 200 OK\r\nContent-Length: 300000\r\n\r\n";
  static char cut[] = "Status: 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
  static char nolen[] = "Status: 201 Created\r\nX-B: 1\r\n\r\nuntil the end";
  static char big_body[300000];
  if (!big_body[0]) memset(big_body, 'b', sizeof big_body);
  uv_buf_t b[2] = {uv_buf_init(answer, sizeof answer - 1)};
  unsigned nb = 1;
  if (strncmp(path, "/scgi/big", 9) == 0) {
    b[0] = uv_buf_init(big_head, sizeof big_head - 1);
    b[1] = uv_buf_init(big_body, sizeof big_body);
    nb = 2;
  } else if (strncmp(path, "/scgi/cut", 9) == 0) b[0] = uv_buf_init(cut, sizeof cut - 1);
  else if (strncmp(path, "/scgi/nolen", 11) == 0) b[0] = uv_buf_init(nolen, sizeof nolen - 1);
  uv_read_stop(s);
  if (uv_write(&bc->w, s, b, nb, on_backend_written) < 0) uv_close((uv_handle_t *)s, on_backend_closed);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  mg_config_t *cfg = harness_start("h2", config_src, sizeof config_src - 1);
  if (cfg->nlistens < 1 || !cfg->listens[0].http2) abort();
  return 0;
}

/* ---- the client's bytes ------------------------------------------------------------------------ */

enum {
  OPT_BIG_WINDOWS = 1,  /* the client's SETTINGS opens a 1 MiB stream window, and the connection's */
  OPT_SMALL_SNDBUF = 2, /* the server's socket takes little: its writes queue (backpressure) */
  OPT_HALF_CLOSE = 4,   /* the client ends with a FIN before it closes */
  OPT_SPLIT_PREFACE = 8, /* the first write ends inside the preface */
  OPT_NO_SETTINGS = 16, /* the fuzz bytes must bring the client's SETTINGS */
  OPT_NO_READ = 32,     /* the client does not read at first */
  OPT_ZERO_WINDOW = 64, /* the client's SETTINGS gives streams a window of 0 */
  OPT_CLOSE_UNREAD = 128, /* at the end, close without reading what is left */
};

typedef struct {
  const uint8_t *p;
  size_t n;
} input_t;

static uint8_t u8(input_t *in) {
  if (!in->n) return 0;
  in->n--;
  return *in->p++;
}

static size_t take(input_t *in, size_t want, const uint8_t **out) {
  if (want > in->n) want = in->n;
  *out = in->p;
  in->p += want, in->n -= want;
  return want;
}

typedef struct {
  uint8_t *data;
  size_t len, cap;
} out_t;

static out_t out, block;

static void out_room(out_t *o, size_t n) {
  if (o->len + n <= o->cap) return;
  while (o->cap < o->len + n) o->cap = o->cap ? 2 * o->cap : 8192;
  o->data = realloc(o->data, o->cap);
  if (!o->data) abort();
}

static void put(out_t *o, const void *p, size_t n) {
  out_room(o, n);
  if (n) memcpy(o->data + o->len, p, n);
  o->len += n;
}

static void put_fill(out_t *o, uint8_t byte, size_t n) {
  out_room(o, n);
  memset(o->data + o->len, byte, n);
  o->len += n;
}

static void put_hd(out_t *o, size_t len, uint8_t type, uint8_t flags, uint32_t sid) {
  uint8_t hd[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
                   (uint8_t)(sid >> 24 & 0x7f), (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
  put(o, hd, 9);
}

static void put_frame(out_t *o, uint8_t type, uint8_t flags, uint32_t sid, const void *p, size_t n) {
  put_hd(o, n, type, flags, sid);
  put(o, p, n);
}

static const char *const names[] = {
    ":method", ":scheme", ":authority", ":path", ":status", ":protocol", "host", "te", "connection",
    "keep-alive", "transfer-encoding", "upgrade", "cookie", "content-length", "content-type", "expect", "a", "b",
    "c", "w", "deny", "x", "x-user", "authorization", "proxy", "x_under", "Upper", "user-agent", "accept",
    "trailer", "x-forwarded-for", "http-x", "proxy-connection", "x.dot", "cookie2", "accept-encoding", "bf",
};
#define NNAMES (sizeof names / sizeof *names)

static char big_value[600];

static const char *const values[] = {
    "", "GET", "POST", "HEAD", "CONNECT", "/scgi", "/lua", "/wait", "/static/dpkg/copyright", "http", "https",
    "h", "H", "example.com:8080", "trailers", "gzip", "0", "1", "5", "100-continue", "a=1", "b=2; c=3", "alice",
    "Basic eA==", "text/plain", "close", "x", " x", "x ", "a\x01" "b", "\xc3\xa9", "a, b", big_value, "*", "eof",
};
#define NVALUES (sizeof values / sizeof *values)

static const char *const methods[] = {"GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "DELETE", "get"};

static const char *const paths[] = {
    "/scgi", "/scgi/x?q=1", "/scgi?a=%20&b", "/scgi/%2e%2e/lua", "//scgi", "/lua", "/lua?x=1", "/re",
    "/wait", "/stream?q", "/static/dpkg/copyright", "/static/dpkg/changelog.gz", "/static/", "/static/../../etc/passwd",
    "/static/%00", "/err", "/go", "/nothing", "*", "", "lua", "/lua#frag", "/lua/\xff", "/a b", "/scgi/",
    "/scgi/big", "/scgi/cut", "/stream", "/scgi/hold", "/lua?x=%41", "/static/dpkg/AUTHORS", "/scgi/nolen",
};

#define MAX_NV 48

typedef struct {
  nghttp2_nv nv[MAX_NV];
  size_t n;
} nvs_t;

static void nv_add(nvs_t *l, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl) {
  if (l->n >= MAX_NV) return;
  nghttp2_nv *v = &l->nv[l->n++];
  v->name = (uint8_t *)name, v->namelen = nl, v->value = (uint8_t *)value, v->valuelen = vl;
  v->flags = NGHTTP2_NV_FLAG_NONE;
}

static void nv_add_str(nvs_t *l, const char *name, const char *value) {
  nv_add(l, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value));
}

/* A count, then (name, value) pairs from the dictionaries or literal. */
static void read_fields(input_t *in, nvs_t *l, unsigned max) {
  unsigned n = u8(in) % max;
  for (unsigned i = 0; i < n && in->n; i++) {
    const uint8_t *name, *value;
    size_t nl, vl;
    uint8_t a = u8(in), b = u8(in);
    if (a < NNAMES) name = (const uint8_t *)names[a], nl = strlen(names[a]);
    else nl = take(in, (a - NNAMES) % 24, &name);
    if (b < NVALUES) value = (const uint8_t *)values[b], vl = strlen(values[b]);
    else vl = take(in, (b - NVALUES) % 40, &value);
    nv_add(l, name, nl, value, vl);
  }
}

static nghttp2_hd_deflater *deflater;

/* The header block of `l`, then the frame: with its padding and priority when the flags say. */
static void put_header_frame(input_t *in, uint8_t type, uint8_t flags, uint32_t sid, const nvs_t *l) {
  block.len = 0;
  if (type == NGHTTP2_HEADERS && (flags & NGHTTP2_FLAG_PRIORITY)) {
    const uint8_t *p;
    uint8_t pri[5] = {0, 0, 0, 0, 15};
    size_t k = take(in, 5, &p);
    memcpy(pri, p, k);
    put(&block, pri, 5);
  }
  size_t bound = nghttp2_hd_deflate_bound(deflater, l->nv, l->n);
  out_room(&block, bound);
  ssize_t n = nghttp2_hd_deflate_hd(deflater, block.data + block.len, bound, l->nv, l->n);
  if (n < 0) abort();
  block.len += (size_t)n;
  int padded = type == NGHTTP2_HEADERS && (flags & NGHTTP2_FLAG_PADDED);
  size_t pad = padded ? u8(in) % 32 : 0;
  put_hd(&out, (size_t)padded + block.len + pad, type, flags, sid);
  if (padded) {
    uint8_t pl = (uint8_t)pad;
    put(&out, &pl, 1);
  }
  put(&out, block.data, block.len);
  put_fill(&out, 0, pad);
}

/* A request's HEADERS: pseudo-headers (some left out, or after a field, when the input says),
 * then fields. END_HEADERS unless flag 0x40 (meaningless to HEADERS) asks for a CONTINUATION. */
static void put_request(input_t *in, uint8_t flags, uint32_t sid) {
  uint8_t m = u8(in), o = u8(in);
  nvs_t l = {.n = 0};
  if (o & 0x40) nv_add_str(&l, "x", "early");
  nv_add_str(&l, ":method", methods[m % 8]);
  if (!(o & 1)) nv_add_str(&l, ":scheme", o & 0x10 ? "https" : "http");
  if (!(o & 2)) nv_add_str(&l, ":authority", o & 0x20 ? "example.com:8080" : "h");
  if (!(o & 4)) nv_add_str(&l, ":path", paths[(m / 8) % 32]);
  if (o & 8) nv_add_str(&l, "host", o & 0x80 ? "H" : "h");
  read_fields(in, &l, 24);
  uint8_t f = (uint8_t)((flags & ~0xc0) | (flags & 0x40 ? 0 : NGHTTP2_FLAG_END_HEADERS));
  put_header_frame(in, NGHTTP2_HEADERS, f, sid, &l);
}

/* DATA, padded when the flags say. */
static void put_data(input_t *in, uint8_t flags, uint32_t sid, const uint8_t *p, size_t n, int fill) {
  size_t pad = (flags & NGHTTP2_FLAG_PADDED) ? u8(in) % 32 : 0;
  int padded = (flags & NGHTTP2_FLAG_PADDED) != 0;
  put_hd(&out, n + (size_t)padded + pad, NGHTTP2_DATA, flags, sid);
  if (padded) {
    uint8_t pl = (uint8_t)pad;
    put(&out, &pl, 1);
  }
  if (fill) put_fill(&out, 'x', n);
  else put(&out, p, n);
  put_fill(&out, 0, pad);
}

/* The usual payload length of a control frame, or a raw one when lb >= 0xc0. */
static size_t control_len(uint8_t type, uint8_t lb) {
  if (lb >= 0xc0) return lb - 0xc0;
  switch (type) {
    case NGHTTP2_PRIORITY: return 5;
    case NGHTTP2_RST_STREAM: return 4;
    case NGHTTP2_SETTINGS: return 6 * (size_t)(lb % 4);
    case NGHTTP2_PUSH_PROMISE: return 4 + lb % 16;
    case NGHTTP2_PING: return 8;
    case NGHTTP2_GOAWAY: return 8 + lb % 8;
    case NGHTTP2_WINDOW_UPDATE: return 4;
    default: return lb;
  }
}

static uint32_t stream_id(uint8_t b) {
  if (b == 0xff) return 0x7fffffff;
  if (b & 0x80) return b & 0x7f;
  return 2u * b + 1;
}

enum { EV_BREAK, EV_TOGGLE_READ };
#define MAX_EVENTS 64
static struct {
  size_t off;
  int type;
} events[MAX_EVENTS + 1]; /* + 1: the fuzzed split always has room */
static int nevents;

static void event(size_t off, int type) {
  if (nevents < MAX_EVENTS) events[nevents].off = off, events[nevents].type = type, nevents++;
}

/* The client's bytes stop growing past this (floods, filler). */
#define OUT_MAX (4u << 20)

static void build(const uint8_t *data, size_t size, uint8_t opt) {
  out.len = 0;
  nevents = 0;
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  put(&out, preface, sizeof preface - 1);
  if (opt & OPT_SPLIT_PREFACE) event(size ? 1 + data[0] % 23 : 10, EV_BREAK);
  if (!(opt & OPT_NO_SETTINGS)) {
    uint8_t s[18];
    size_t n = 0;
    uint32_t window = opt & OPT_ZERO_WINDOW ? 0 : opt & OPT_BIG_WINDOWS ? 1u << 20 : 65535;
    uint8_t e1[6] = {0, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint8_t)(window >> 24), (uint8_t)(window >> 16),
                     (uint8_t)(window >> 8), (uint8_t)window};
    memcpy(s + n, e1, 6), n += 6;
    uint8_t e2[6] = {0, NGHTTP2_SETTINGS_ENABLE_PUSH, 0, 0, 0, 0};
    memcpy(s + n, e2, 6), n += 6;
    put_frame(&out, NGHTTP2_SETTINGS, 0, 0, s, n);
    /* The server's SETTINGS is in flight from the start: acknowledged at once, so that its
     * limits (streams, window, header list) apply. */
    put_hd(&out, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
    if (opt & OPT_BIG_WINDOWS) {
      uint8_t inc[4] = {0, 0xff, 0, 0};
      put_frame(&out, NGHTTP2_WINDOW_UPDATE, 0, 0, inc, 4);
    }
  }
  input_t in = {data + 2, size > 2 ? size - 2 : 0};
  size_t last_off = 0, last_len = 0; /* the last record's bytes */
  while (in.n && out.len <= OUT_MAX) {
    size_t start = out.len;
    uint8_t kind = u8(&in) % 16, flags = u8(&in);
    uint32_t sid = stream_id(u8(&in));
    const uint8_t *p;
    size_t n;
    switch (kind) {
      case 0:
        n = take(&in, u8(&in), &p);
        put_data(&in, flags, sid, p, n, 0);
        break;
      case 1:
        put_request(&in, flags, sid);
        break;
      case 2: case 3: case 4: case 5: case 6: case 7: case 8: {
        uint8_t lb = u8(&in);
        size_t want = control_len(kind, lb);
        n = take(&in, want, &p);
        put_hd(&out, want, kind, flags, sid);
        put(&out, p, n);
        put_fill(&out, 0, want - n); /* the length is kept: the frame stays whole */
        break;
      }
      case 9:
      case 10: {
        nvs_t l = {.n = 0};
        read_fields(&in, &l, 32);
        put_header_frame(&in, kind == 9 ? NGHTTP2_CONTINUATION : NGHTTP2_HEADERS, flags, sid, &l);
        break;
      }
      case 11:
        put_data(&in, flags, sid, NULL, ((size_t)u8(&in) + 1) * 64, 1);
        break;
      case 12: {
        uint8_t type = u8(&in);
        n = take(&in, u8(&in), &p);
        put_frame(&out, type, flags, sid, p, n);
        break;
      }
      case 13:
        (void)sid;
        if (flags) {
          /* The frame before, again (flags * 4) times: floods. */
          for (unsigned i = 0; i < flags * 4u && last_len && out.len + last_len <= OUT_MAX; i++) {
            out_room(&out, last_len);
            memmove(out.data + out.len, out.data + last_off, last_len);
            out.len += last_len;
          }
          break;
        }
        n = take(&in, u8(&in), &p);
        put(&out, p, n);
        break;
      case 14:
        event(out.len, EV_BREAK);
        break;
      case 15:
        event(out.len, EV_TOGGLE_READ);
        break;
    }
    if (kind != 13 && out.len > start) last_off = start, last_len = out.len - start;
  }
  /* The fuzzed split of the whole, placed among the other events. */
  if (size) {
    size_t cut = (size_t)data[0] * out.len / 255;
    int i = nevents++;
    for (; i > 0 && events[i - 1].off > cut; i--) events[i] = events[i - 1];
    events[i].off = cut, events[i].type = EV_BREAK;
  }
}

/* MG_FUZZ_H2_DUMP=prefix (when running single inputs): the client's bytes go to prefix.in, the
 * server's to prefix.out, for a frame decoder to check what a seed does. */
static FILE *dump_out;

/* What the server wrote is read and dropped. Returns how many bytes. */
static size_t client_read(int fd) {
  char sink[65536];
  ssize_t n;
  size_t total = 0;
  while ((n = read(fd, sink, sizeof sink)) > 0) {
    if (dump_out) fwrite(sink, 1, (size_t)n, dump_out);
    total += (size_t)n;
  }
  return total;
}

/* One loop turn, the client reading first if it does. Returns whether anything moved: bytes
 * for the client (read, or waiting unread), or the harness's backend. */
static int turn(int fd, int reading) {
  static int last_unread;
  unsigned before = backend_events;
  int moved = 0;
  if (reading) moved = client_read(fd) > 0;
  int unread = 0;
  ioctl(fd, FIONREAD, &unread);
  moved |= unread != last_unread;
  last_unread = unread;
  uv_run(&loop, UV_RUN_NOWAIT);
  return moved || backend_events != before;
}

/* Turns until `quiet` turns in a row moved nothing, or `max` turns, or the connection closed. */
static void settle(int fd, int reading, int quiet, int max) {
  for (int i = 0, still = 0; i < max && still < quiet && server.nconns > 0; i++)
    still = turn(fd, reading) ? 0 : still + 1;
}

static void dump_open(void) {
  const char *prefix = getenv("MG_FUZZ_H2_DUMP");
  if (!prefix) return;
  char path[512];
  snprintf(path, sizeof path, "%s.in", prefix);
  FILE *f = fopen(path, "wb");
  if (f) fwrite(out.data, 1, out.len, f), fclose(f);
  snprintf(path, sizeof path, "%s.out", prefix);
  dump_out = fopen(path, "wb");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!deflater && nghttp2_hd_deflate_new(&deflater, 4096) != 0) abort();
  if (!big_value[0]) memset(big_value, 'v', sizeof big_value - 1);
  uint8_t opt = size > 1 ? data[1] : 0;
  build(data, size, opt);
  /* A fresh encoder context for the next input: the server's decoder starts empty too. */
  nghttp2_hd_deflate_del(deflater);
  deflater = NULL;

  dump_open();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) return 0;
  if (opt & OPT_SMALL_SNDBUF) {
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  }
  mg_conn_t *c = mg_conn_new(&server, 1);
  uv_pipe_t *p = (uv_pipe_t *)mg_conn_stream(c);
  uv_pipe_open(p, sv[0]);
  mg_server_conn_opened(&server);
  /* As listen.c starts a connection of a plain listener with http2 = true. */
  mg_conn_start(c, &mg_h1_proto, &mg_h2_proto);

  int reading = !(opt & OPT_NO_READ);
  size_t off = 0;
  int ev = 0;
  for (int round = 0; round < 300 && off < out.len && server.nconns > 0; round++) {
    while (ev < nevents && events[ev].off <= off) {
      if (events[ev].type == EV_TOGGLE_READ) reading = !reading;
      ev++;
    }
    size_t end = ev < nevents ? events[ev].off : out.len;
    if (end > off) {
      ssize_t w = write(sv[1], out.data + off, end - off);
      if (w > 0) off += (size_t)w;
    }
    for (int k = 0; k < 2; k++) turn(sv[1], reading);
  }
  /* Everything is sent: backends answer, Lua waits end; a client that stopped reading
   * reads again after a while, unless it is to close with the bytes unread. */
  settle(sv[1], reading, 6, 40);
  if (!reading && !(opt & OPT_CLOSE_UNREAD)) settle(sv[1], reading = 1, 6, 40);
  if (opt & OPT_HALF_CLOSE) {
    shutdown(sv[1], SHUT_WR);
    settle(sv[1], reading, 3, 10);
  }
  close(sv[1]);
  for (int i = 0; i < 100 && server.nconns > 0; i++) uv_run(&loop, UV_RUN_NOWAIT);
  if (server.nconns > 0) mg_conn_close(c);
  for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
  if (dump_out) fclose(dump_out), dump_out = NULL;
  return 0;
}
