/* realip: the client's address from a header set by a trusted proxy, as nginx's
 * ngx_http_realip_module finds it (SPEC 19).
 *
 * A request starts with req->remote (and req->peer) the peer's address: the socket's, or the
 * source of the connection's PROXY protocol header. When that peer is in real_ip_from, the
 * header named by real_ip_header says who the client is: X-Real-IP (and any other name) one
 * address, X-Forwarded-For and Forwarded (RFC 7239) a list of hops, read from the right. Without
 * real_ip_recursive the rightmost hop is the client; with it, hops in real_ip_from are skipped
 * too and the first one that is not is the client (all trusted: the leftmost). A hop that is not
 * an address ends the walk at the last good one. The result replaces req->remote and
 * req->remote_port (a hop without a port leaves no port: req->remote_no_port), never req->peer. */
#ifndef MG_REALIP_H
#define MG_REALIP_H

typedef struct mg_req_s mg_req_t;

/* Applies req->realip (the listener's, or the settings' when NULL) once the head is read.
 * Does nothing when real_ip_from is empty, the peer is not in it, or the header is absent. */
void mg_realip_apply(mg_req_t *req);

#endif
