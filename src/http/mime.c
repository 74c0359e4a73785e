/* mime.c - extension -> MIME type table for static files.
 *
 * The extension after the last '.' of the last path component is lowered
 * into a small buffer and looked up by binary search in a table kept sorted
 * by extension (tests/unit/test_mime.c looks up every entry, so an entry
 * out of order fails there). No allocation. */
#include "http/mime.h"

#include <stdlib.h>
#include <string.h>

#define UTF8 "; charset=utf-8"

typedef struct { const char *ext, *type; } mime_entry;

static const mime_entry types[] = {
    { "3gp",   "video/3gpp" },
    { "7z",    "application/x-7z-compressed" },
    { "aac",   "audio/aac" },
    { "appcache", "text/cache-manifest" UTF8 },
    { "atom",  "application/atom+xml" },
    { "avi",   "video/x-msvideo" },
    { "avif",  "image/avif" },
    { "bin",   "application/octet-stream" },
    { "bmp",   "image/bmp" },
    { "bz2",   "application/x-bzip2" },
    { "cjs",   "text/javascript" UTF8 },
    { "css",   "text/css" UTF8 },
    { "csv",   "text/csv" UTF8 },
    { "doc",   "application/msword" },
    { "docx",  "application/vnd.openxmlformats-officedocument.wordprocessingml.document" },
    { "eot",   "application/vnd.ms-fontobject" },
    { "epub",  "application/epub+zip" },
    { "flac",  "audio/flac" },
    { "gif",   "image/gif" },
    { "gz",    "application/gzip" },
    { "heic",  "image/heic" },
    { "htm",   "text/html" UTF8 },
    { "html",  "text/html" UTF8 },
    { "ico",   "image/x-icon" },
    { "ics",   "text/calendar" UTF8 },
    { "jar",   "application/java-archive" },
    { "jpeg",  "image/jpeg" },
    { "jpg",   "image/jpeg" },
    { "js",    "text/javascript" UTF8 },
    { "json",  "application/json" },
    { "jsonld", "application/ld+json" },
    { "jxl",   "image/jxl" },
    { "m4a",   "audio/mp4" },
    { "m4v",   "video/mp4" },
    { "manifest", "text/cache-manifest" UTF8 },
    { "map",   "application/json" },
    { "md",    "text/markdown" UTF8 },
    { "mid",   "audio/midi" },
    { "midi",  "audio/midi" },
    { "mjs",   "text/javascript" UTF8 },
    { "mov",   "video/quicktime" },
    { "mp3",   "audio/mpeg" },
    { "mp4",   "video/mp4" },
    { "mpeg",  "video/mpeg" },
    { "mpg",   "video/mpeg" },
    { "oga",   "audio/ogg" },
    { "ogg",   "audio/ogg" },
    { "ogv",   "video/ogg" },
    { "opus",  "audio/opus" },
    { "otf",   "font/otf" },
    { "pdf",   "application/pdf" },
    { "png",   "image/png" },
    { "ppt",   "application/vnd.ms-powerpoint" },
    { "pptx",  "application/vnd.openxmlformats-officedocument.presentationml.presentation" },
    { "rar",   "application/vnd.rar" },
    { "rss",   "application/rss+xml" },
    { "rtf",   "application/rtf" },
    { "svg",   "image/svg+xml" },
    { "svgz",  "image/svg+xml" },
    { "tar",   "application/x-tar" },
    { "tif",   "image/tiff" },
    { "tiff",  "image/tiff" },
    { "toml",  "application/toml" },
    { "ts",    "video/mp2t" },
    { "tsv",   "text/tab-separated-values" UTF8 },
    { "ttf",   "font/ttf" },
    { "txt",   "text/plain" UTF8 },
    { "vtt",   "text/vtt" UTF8 },
    { "wasm",  "application/wasm" },
    { "wav",   "audio/wav" },
    { "weba",  "audio/webm" },
    { "webm",  "video/webm" },
    { "webmanifest", "application/manifest+json" },
    { "webp",  "image/webp" },
    { "woff",  "font/woff" },
    { "woff2", "font/woff2" },
    { "xhtml", "application/xhtml+xml" },
    { "xls",   "application/vnd.ms-excel" },
    { "xlsx",  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" },
    { "xml",   "application/xml" },
    { "xsl",   "application/xml" },
    { "yaml",  "application/yaml" },
    { "yml",   "application/yaml" },
    { "zip",   "application/zip" },
    { "zst",   "application/zstd" },
};

#define DEFAULT_TYPE "application/octet-stream"

static int cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const mime_entry *)elem)->ext);
}

const char *mime_type_for(const char *path)
{
    if (!path) return DEFAULT_TYPE;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return DEFAULT_TYPE;   /* none, or a dotfile like ".htaccess" */
    char ext[16];
    size_t n = strlen(dot + 1);
    if (n == 0 || n >= sizeof ext) return DEFAULT_TYPE;
    for (size_t i = 0; i <= n; i++) {
        char c = dot[1 + i];
        ext[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    const void *hit = bsearch(ext, types, sizeof types / sizeof *types, sizeof *types, cmp);
    return hit ? ((const mime_entry *)hit)->type : DEFAULT_TYPE;
}
