/* img.c - the router's /_ah/img/ pages: images behind serving URLs
 * (images.get_serving_url), rendered by images/serving.c.
 *
 * GET or HEAD /_ah/img/BLOBKEY[=sNN][-c] answers the image (resized to NN on
 * its longest side, square-cropped with -c, 512 by default) with a long
 * public Cache-Control and an ETag naming blob and options; a matching
 * If-None-Match gets 304. Blobs are immutable, so an ETag never goes stale.
 * The image is rendered on the router thread (cached afterwards), so a first
 * request for a large picture holds that thread for its decode. */
#include "router/router_int.h"
#include "images/serving.h"

#include <stdio.h>
#include <string.h>

int img_route(rconn *c, const http_request *req, const char *dpath, size_t dl)
{
    router *r = c->t->r;
    size_t pl = sizeof IMG_SERVE_PREFIX - 1;
    if (!r->c.images || dl < pl || memcmp(dpath, IMG_SERVE_PREFIX, pl)) return 0;
    c->discard_body = 1;
    if (strcmp(c->method, "GET") && strcmp(c->method, "HEAD")) {
        conn_send_error(c, 405, "Images are read with GET or HEAD.");
        return 1;
    }
    img_serve_req q;
    if (img_serve_parse(dpath + pl, dl - pl, &q) < 0) {
        conn_send_error(c, 400, "An image URL is /_ah/img/BLOBKEY, optionally with =sSIZE (0 to 3200) "
                        "and -c (crop, with a size).");
        return 1;
    }
    char etag[BLOB_KEY_MAX + 40];
    snprintf(etag, sizeof etag, "\"%s-s%d%s\"", q.key, q.size, q.crop ? "-c" : "");
    buf body = BUF_INIT;
    const char *mime = NULL;
    char err[512];
    int status = img_server_render(r->c.images, r->c.app_id, &q, &body, &mime, err, sizeof err);
    if (status != 200) {
        buf_free(&body);
        conn_send_error(c, status, err);
        return 1;
    }
    const http_header *inm = http_find_header(req->headers, req->nheaders, "if-none-match");
    int not_modified = inm && inm->value_len == strlen(etag) && !memcmp(inm->value, etag, inm->value_len);
    rthread *t = c->t;
    thread_date(t);
    c->status = not_modified ? 304 : 200;
    buf_reset(&c->out);
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: Cyclozzo\r\n%sContent-Type: %s\r\n"
               "Cache-Control: public, max-age=86400\r\nETag: %s\r\n",
               c->status, http_reason(c->status), t->date, mime, etag);
    if (!not_modified) buf_printf(&c->out, "Content-Length: %zu\r\n", buf_unread(&body));
    buf_puts(&c->out, !c->keep_alive ? "Connection: close\r\n\r\n" : "\r\n");
    if (!not_modified && !c->is_head) buf_append(&c->out, buf_rp(&body), buf_unread(&body));
    c->bytes_out = buf_unread(&c->out);
    c->state = CS_SEND;
    buf_free(&body);
    return 1;
}
