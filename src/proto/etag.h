/* etag: entity-tag comparison for conditional requests (RFC 9110 8.8.3, 13.1.2), pure.
 *
 * If-None-Match uses the weak comparison: two tags match when their opaque parts are equal,
 * whether or not either carries the W/ prefix. That matters for moongate: compression makes
 * a strong ETag weak (W/"x"), and the client then sends W/"x" back for the file whose tag is
 * "x". The field is a list ("a", W/"b", "c") or "*", which matches any current
 * representation. A malformed member ends the scan: what was read before it still counts,
 * nothing after it does (a field we cannot read never causes a 304 by accident). */
#ifndef MG_ETAG_H
#define MG_ETAG_H

/* 1 when the If-None-Match value `field` matches `etag` (a tag as sent in the ETag field,
 * strong or weak) by the weak comparison; 0 otherwise (field NULL: absent, 0). */
int mg_etag_match_weak(const char *field, const char *etag);

#endif
