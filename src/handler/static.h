/* static: static files ({ root = DIR } routes) and the zero-copy file sender they share with
 * X-Sendfile.
 *
 * Files are opened with openat2(RESOLVE_BENEATH) relative to the root's directory descriptor,
 * so neither "..", nor an absolute symlink, nor a symlink that climbs out can leave the root:
 * the kernel refuses them. The body is sent with sendfile(2) from the file to the socket when
 * the socket is writable, a bounded amount per loop turn, so a large file never blocks the
 * event loop and other requests go on. */
#ifndef MG_STATIC_H
#define MG_STATIC_H

#include <sys/stat.h>

#include "request.h"

/* Opens `rel` below `root_fd`. Returns the fd, or -errno (-EXDEV / -ELOOP: would escape). */
int mg_static_open_beneath(int root_fd, const char *rel);

/* Sends the open regular file fd as the response body with req->status and the headers
 * already in req->resp_headers, adding Content-Length, Last-Modified, ETag, Accept-Ranges and
 * Content-Type when `content_type` is set (and not already there), and answering Range with
 * 206/416 and, when `conditional`, If-None-Match / If-Modified-Since with 304. Takes ownership
 * of fd. */
void mg_file_send(mg_req_t *req, int fd, const struct stat *st, int conditional, const char *path_for_type);

const char *mg_mime_type(const char *path);

/* The { root = DIR } route handler's start. */
void mg_static_serve(mg_req_t *req);

#endif
