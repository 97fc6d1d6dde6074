/* compress: see compress.h.
 *
 * gzip: a body of known length that fits in one buffer (MG_COMPRESS_ONE, 256 KiB) is
 * collected and compressed once by libdeflate, which is several times faster than zlib at the
 * same level; any other body streams through zlib. br streams through the brotli encoder,
 * zstd through ZSTD_compressStream2. A streaming compressor holds its state and one output
 * block; the window sizes are capped (brotli 2^19, zstd 2^19) so that a stream's memory does
 * not grow with its length. */
#include "compress.h"

#include <brotli/encode.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
#include <zstd.h>

#include "accept.h"
#include "log.h"
#include "request.h"

#define MG_COMPRESS_ONE (256 * 1024)

typedef struct {
  int enc;
  int level;
  int failed;
  int done;       /* the compressor's memory is released */
  char *in;       /* one-buffer gzip: the body collected, in_len of in_cap */
  size_t in_len, in_cap;
  z_stream z;
  int z_on;
  BrotliEncoderState *br;
  ZSTD_CCtx *zs;
  char *out; /* the output block being filled, out_len bytes */
  size_t out_len;
} mg_cz_t;

static void cz_release(mg_cz_t *c) {
  if (c->done) return;
  c->done = 1;
  if (c->z_on) deflateEnd(&c->z);
  if (c->br) BrotliEncoderDestroyInstance(c->br);
  if (c->zs) ZSTD_freeCCtx(c->zs);
  free(c->in);
  mg_block_put(c->out);
  c->in = NULL, c->out = NULL, c->br = NULL, c->zs = NULL, c->z_on = 0;
}

static void cz_cleanup(void *arg) {
  cz_release(arg);
  free(arg);
}

/* ---- the decision -------------------------------------------------------------------------- */

static int type_listed(const char *types, const char *ct) {
  if (!types) return 1;
  if (!ct) return 0;
  char want[128];
  size_t n = 0;
  want[n++] = ',';
  for (const char *p = ct; *p && *p != ';' && *p != ' ' && *p != '\t' && n < sizeof want - 2; p++)
    want[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
  want[n++] = ',';
  want[n] = 0;
  return strstr(types, want) != NULL;
}

static void merge_vary(mg_req_t *req) {
  const char *vary = mg_fields_join(&req->pool, &req->resp_headers, "Vary", ", ");
  if (!vary || !*vary) {
    mg_fields_set(&req->pool, &req->resp_headers, "Vary", "Accept-Encoding");
    return;
  }
  if (strcasestr(vary, "accept-encoding") || strchr(vary, '*')) return;
  size_t n = strlen(vary);
  char *v = mg_pool_alloc(&req->pool, n + sizeof ", Accept-Encoding");
  memcpy(v, vary, n);
  memcpy(v + n, ", Accept-Encoding", sizeof ", Accept-Encoding");
  mg_fields_set(&req->pool, &req->resp_headers, "Vary", v);
}

static int start(mg_cz_t *c, int64_t length) {
  if (c->enc == MG_ENC_GZIP && length > 0 && length <= MG_COMPRESS_ONE) {
    c->in_cap = (size_t)length;
    c->in = mg_malloc(c->in_cap);
    return 0;
  }
  if (c->enc == MG_ENC_GZIP) {
    /* windowBits 15 + 16: a gzip wrapper. */
    if (deflateInit2(&c->z, c->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    c->z_on = 1;
  } else if (c->enc == MG_ENC_BR) {
    c->br = BrotliEncoderCreateInstance(NULL, NULL, NULL);
    if (!c->br) return -1;
    BrotliEncoderSetParameter(c->br, BROTLI_PARAM_QUALITY, (uint32_t)c->level);
    BrotliEncoderSetParameter(c->br, BROTLI_PARAM_LGWIN, 19);
    if (length > 0) BrotliEncoderSetParameter(c->br, BROTLI_PARAM_SIZE_HINT, (uint32_t)(length > (1 << 30) ? 1 << 30 : length));
  } else {
    c->zs = ZSTD_createCCtx();
    if (!c->zs) return -1;
    ZSTD_CCtx_setParameter(c->zs, ZSTD_c_compressionLevel, c->level);
    ZSTD_CCtx_setParameter(c->zs, ZSTD_c_windowLog, 19);
    if (length >= 0) ZSTD_CCtx_setPledgedSrcSize(c->zs, (unsigned long long)length);
  }
  return 0;
}

void mg_compress_head(mg_req_t *req) {
  const mg_compress_cfg_t *cfg = req->route ? &req->route->compress : &req->cfg->set.compress;
  /* A head sent again (a body_filter failed before the first byte: the 500 page replaces it)
   * starts afresh; the earlier state is freed with the pool. */
  req->compress = NULL;
  if (!cfg->on || req->is_subrequest || req->filter_failed) return;
  int st = req->status;
  if (st < 200 || st == 204 || st == 206 || st == 304) return;
  /* As nginx's gzip_http_version 1.1: an HTTP/1.0 client gets the body as is. */
  if (req->http_major == 1 && req->http_minor == 0) return;
  mg_fields_t *f = &req->resp_headers;
  if (mg_fields_get(f, "Content-Encoding") || mg_fields_get(f, "Content-Range")) return;
  const char *cc = mg_fields_join(&req->pool, f, "Cache-Control", ", ");
  if (cc && strcasestr(cc, "no-transform")) return;
  if (!type_listed(cfg->types, mg_fields_get(f, "Content-Type"))) return;
  const char *cl = mg_fields_get(f, "Content-Length");
  int64_t length = cl ? strtoll(cl, NULL, 10) : -1;
  if (length == 0 || (length > 0 && (uint64_t)length < cfg->min_length)) return;
  merge_vary(req);
  int enc = mg_accept_encoding(mg_fields_get(&req->headers, "Accept-Encoding"), MG_ENC_ALL);
  if (!enc) return;
  if (!req->is_head) {
    mg_cz_t *c = mg_calloc(1, sizeof *c);
    c->enc = enc;
    c->level = enc == MG_ENC_GZIP ? cfg->level_gzip : enc == MG_ENC_BR ? cfg->level_br : cfg->level_zstd;
    mg_pool_cleanup(&req->pool, cz_cleanup, c);
    if (start(c, length) < 0) {
      mg_log_error(MG_LOG_ERROR, req->id, "%s compressor could not start: the response goes uncompressed",
                   mg_encoding_name(enc));
      return;
    }
    req->compress = c;
  }
  mg_fields_set(&req->pool, f, "Content-Encoding", mg_encoding_name(enc));
  mg_fields_set(&req->pool, f, "Content-Length", NULL);
  const char *etag = mg_fields_get(f, "ETag");
  if (etag && etag[0] == '"') {
    size_t n = strlen(etag);
    char *w = mg_pool_alloc(&req->pool, n + 3);
    memcpy(w, "W/", 2);
    memcpy(w + 2, etag, n + 1);
    mg_fields_set(&req->pool, f, "ETag", w);
  }
}

/* ---- the streams ----------------------------------------------------------------------------- */

static void out_full(mg_req_t *req, mg_cz_t *c, mg_compress_emit_fn emit) {
  emit(req, c->out, NULL, c->out, c->out_len);
  c->out = NULL, c->out_len = 0;
}

/* Runs the stream's compressor over len bytes (finish: to its end), emitting full blocks. */
static int run(mg_req_t *req, mg_cz_t *c, const char *data, size_t len, int finish, mg_compress_emit_fn emit) {
  for (;;) {
    if (!c->out) c->out = mg_block_get(), c->out_len = 0;
    size_t room = MG_BLOCK_SIZE - c->out_len;
    uint8_t *op = (uint8_t *)c->out + c->out_len;
    int more;
    size_t used_in, made;
    if (c->z_on) {
      c->z.next_in = (Bytef *)data, c->z.avail_in = (uInt)len;
      c->z.next_out = op, c->z.avail_out = (uInt)room;
      int rc = deflate(&c->z, finish ? Z_FINISH : Z_NO_FLUSH);
      if (rc == Z_STREAM_ERROR) return -1;
      used_in = len - c->z.avail_in, made = room - c->z.avail_out;
      more = finish ? rc != Z_STREAM_END : c->z.avail_in > 0 || c->z.avail_out == 0;
    } else if (c->br) {
      size_t ain = len, aout = room;
      const uint8_t *ip = (const uint8_t *)data;
      if (!BrotliEncoderCompressStream(c->br, finish ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_PROCESS, &ain, &ip,
                                       &aout, &op, NULL))
        return -1;
      used_in = len - ain, made = room - aout;
      more = finish ? !BrotliEncoderIsFinished(c->br) : ain > 0 || BrotliEncoderHasMoreOutput(c->br);
    } else {
      ZSTD_inBuffer in = {data, len, 0};
      ZSTD_outBuffer out = {op, room, 0};
      size_t rc = ZSTD_compressStream2(c->zs, &out, &in, finish ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(rc)) return -1;
      used_in = in.pos, made = out.pos;
      more = finish ? rc != 0 : in.pos < in.size || out.pos == out.size;
    }
    data += used_in, len -= used_in;
    c->out_len += made;
    if (c->out_len == MG_BLOCK_SIZE) out_full(req, c, emit);
    if (!more) return 0;
  }
}

void mg_compress_body(mg_req_t *req, const char *data, size_t len, mg_compress_emit_fn emit) {
  mg_cz_t *c = req->compress;
  if (c->failed || c->done || len == 0) return;
  if (c->in) {
    /* One buffer: more than the Content-Length promised is dropped, as without compression. */
    size_t n = len < c->in_cap - c->in_len ? len : c->in_cap - c->in_len;
    memcpy(c->in + c->in_len, data, n);
    c->in_len += n;
    return;
  }
  if (run(req, c, data, len, 0, emit) < 0) c->failed = 1;
}

char *mg_compress_space(mg_req_t *req, size_t *room) {
  mg_cz_t *c = req->compress;
  if (!c || c->failed || c->done || !c->in || c->in_len == c->in_cap) return NULL;
  *room = c->in_cap - c->in_len;
  return c->in + c->in_len;
}

void mg_compress_commit(mg_req_t *req, size_t n) {
  mg_cz_t *c = req->compress;
  c->in_len += n <= c->in_cap - c->in_len ? n : c->in_cap - c->in_len;
}

static struct libdeflate_compressor *one_compressor(int level) {
  /* One per level and worker, kept for its life: allocating one costs more than using it. */
  static struct libdeflate_compressor *cache[13];
  if (level < 1 || level > 12) level = 1;
  if (!cache[level]) cache[level] = libdeflate_alloc_compressor(level);
  return cache[level];
}

int mg_compress_end(mg_req_t *req, mg_compress_emit_fn emit) {
  mg_cz_t *c = req->compress;
  int rc = 0;
  if (c->failed || c->done) {
    rc = -1;
  } else if (c->in) {
    struct libdeflate_compressor *d = one_compressor(c->level);
    size_t bound = d ? libdeflate_gzip_compress_bound(d, c->in_len) : 0;
    char *out = d ? mg_malloc(bound) : NULL;
    size_t n = d ? libdeflate_gzip_compress(d, c->in, c->in_len, out, bound) : 0;
    if (n == 0) free(out), rc = -1;
    else emit(req, NULL, out, out, n);
  } else if (run(req, c, "", 0, 1, emit) < 0) {
    rc = -1;
  } else if (c->out && c->out_len) {
    out_full(req, c, emit);
  }
  if (rc < 0) mg_log_error(MG_LOG_ERROR, req->id, "%s compressor failed", mg_encoding_name(c->enc));
  cz_release(c);
  return rc;
}
