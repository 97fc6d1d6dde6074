/* compress: response compression (SPEC 19), protocol-neutral: gzip, br, zstd.
 *
 * The response API (request.c) calls it at three points: the head (mg_compress_head decides
 * and rewrites the fields), every body piece after the body_filter hooks (mg_compress_body),
 * and the end (mg_compress_end flushes). Compressed bytes leave through `emit`, in pooled
 * 64 KiB blocks (or one heap buffer for a body compressed at once); the state is freed by a
 * cleanup of the request's pool, whichever way the request ends. */
#ifndef MG_COMPRESS_H
#define MG_COMPRESS_H

#include <stddef.h>

typedef struct mg_req_s mg_req_t;

/* Sends compressed bytes on: `block` (mg_block_get) or `heap` (malloc'd) owns them. */
typedef void (*mg_compress_emit_fn)(mg_req_t *req, char *block, char *heap, const char *data, size_t len);

/* The head is final (header_filter has run): when the response is to be compressed, sets
 * Content-Encoding, merges Vary, drops Content-Length, weakens a strong ETag, and (unless
 * HEAD) sets req->compress. A compressible response gets Vary even when the client did not
 * ask for an encoding. */
void mg_compress_head(mg_req_t *req);
/* A piece of the body (req->compress is set). */
void mg_compress_body(mg_req_t *req, const char *data, size_t len, mg_compress_emit_fn emit);
/* Where up to *room more body bytes may be written in place (a body compressed at once
 * collects in one buffer), or NULL (a stream, or nothing is collected): a producer that reads
 * into it and calls mg_compress_commit saves the copy mg_compress_body would make. */
char *mg_compress_space(mg_req_t *req, size_t *room);
/* n bytes were written at mg_compress_space's pointer. */
void mg_compress_commit(mg_req_t *req, size_t n);
/* The body is complete: the compressor's tail goes out. 0, or -1 when the compressor failed
 * (the caller cuts the response). */
int mg_compress_end(mg_req_t *req, mg_compress_emit_fn emit);

#endif
