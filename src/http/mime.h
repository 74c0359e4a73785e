/* mime.h - Content-Type for a static file, chosen from its extension.
 *
 * Text types (text/html, text/css, text/javascript, text/plain, text/csv,
 * text/markdown, ...) carry "; charset=utf-8": App Engine applications are
 * written in UTF-8, and without a charset browsers fall back to a legacy
 * encoding for text/plain and friends. Types whose format declares its own
 * encoding (application/json, application/xml, image/svg+xml) carry none.
 * app.yaml's `mime_type:` overrides this, in the router. */
#ifndef CZ_MIME_H
#define CZ_MIME_H

/* MIME type for the extension of the last path component (case-insensitive;
 * "a/b.tar.gz" -> application/gzip); "application/octet-stream" when there
 * is no extension or it is unknown. Never NULL; the string is static. */
const char *mime_type_for(const char *path);

#endif
