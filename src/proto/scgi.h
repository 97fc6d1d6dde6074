/* scgi: the SCGI codec, pure, no I/O.
 *
 * Encoder: a request head is a list of variables; mg_scgi_encode() measures the whole netstring
 * first and then writes it in one pass ("LEN:" name NUL value NUL ... ","), as nginx does.
 * Decoder: the backend answers CGI style, header lines then a blank line. mg_cgi_parse() is fed
 * the bytes received so far and says whether the header block is complete, malformed, or needs
 * more; once complete, the parsed head refers into the caller's buffer. */
#ifndef MG_SCGI_H
#define MG_SCGI_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "fields.h"

typedef struct {
  const char *name, *value;
  uint32_t name_len, value_len;
} mg_var_t;

typedef struct {
  mg_var_t *v;
  int n, cap;
  int borrowed; /* v is the caller's storage (mg_vars_init_in): copied out when it fills */
} mg_vars_t;

void mg_vars_init(mg_vars_t *vs);
/* Starts with the caller's array of cap entries (on its stack): no allocation unless more
 * variables come. mg_vars_free is still to be called. */
void mg_vars_init_in(mg_vars_t *vs, mg_var_t *storage, int cap);
void mg_vars_free(mg_vars_t *vs);
void mg_vars_add(mg_vars_t *vs, const char *name, size_t nl, const char *value, size_t vl);
/* Replaces the value of `name` in place (keeping its position) or appends it; a NULL value
 * removes it. Names are compared exactly: SCGI variable names are case-sensitive. */
void mg_vars_set(mg_vars_t *vs, const char *name, size_t nl, const char *value, size_t vl);
const mg_var_t *mg_vars_get(const mg_vars_t *vs, const char *name);

/* Appends the netstring for `vs` to out. Returns the number of bytes written. Names or values
 * holding NUL must have been refused before (the netstring could not carry them). */
size_t mg_scgi_encode(const mg_vars_t *vs, mg_buf_t *out);
/* The same in two steps, for a caller with its own storage: the netstring's length (and, in
 * *body, the length of its variables, which the second step takes so as not to count again),
 * then the netstring written at out (which has room for that many bytes). */
size_t mg_scgi_encoded_len(const mg_vars_t *vs, size_t *body);
void mg_scgi_encode_to(const mg_vars_t *vs, size_t body, char *out);

/* Decodes a netstring head: for tests and the fuzzers. Returns bytes consumed, 0 when more
 * is needed, -1 when malformed. Variables point into `in`. */
long mg_scgi_decode(const char *in, size_t len, mg_vars_t *out);

#define MG_CGI_MAX_HEADERS 100

typedef struct {
  const char *name, *value;
  uint32_t name_len, value_len;
} mg_header_t;

typedef struct {
  int status;                 /* 200 when the backend sent no Status */
  const char *reason;         /* NULL: use the standard reason phrase */
  uint32_t reason_len;
  int64_t content_length;     /* -1 when absent */
  mg_header_t headers[MG_CGI_MAX_HEADERS];
  int nheaders;               /* end-to-end fields only: Status, hop-by-hop fields dropped */
  size_t head_len;            /* bytes of the header block, blank line included */
  const char *error;          /* why the block was refused */
} mg_cgi_head_t;

enum { MG_CGI_MORE = 0, MG_CGI_DONE = 1, MG_CGI_ERROR = -1 };

/* Parses buf[0..len). Returns MG_CGI_DONE with `h` filled, MG_CGI_MORE when the blank line has
 * not arrived yet (the caller refuses the response once len exceeds its limit), or
 * MG_CGI_ERROR with h->error set. */
int mg_cgi_parse(const char *buf, size_t len, mg_cgi_head_t *h);


#endif
