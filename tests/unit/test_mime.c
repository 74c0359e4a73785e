/* Unit tests for the extension -> MIME type table (src/http/mime.c). */
#include "http/mime.h"
#include "test.h"

#include <ctype.h>

TEST(every_entry)
{
    /* Each extension of the table, looked up by binary search: an entry out
     * of order would be missed here. */
    static const struct { const char *ext, *type; } want[] = {
        { "3gp", "video/3gpp" },
        { "7z", "application/x-7z-compressed" },
        { "aac", "audio/aac" },
        { "appcache", "text/cache-manifest; charset=utf-8" },
        { "atom", "application/atom+xml" },
        { "avi", "video/x-msvideo" },
        { "avif", "image/avif" },
        { "bin", "application/octet-stream" },
        { "bmp", "image/bmp" },
        { "bz2", "application/x-bzip2" },
        { "cjs", "text/javascript; charset=utf-8" },
        { "css", "text/css; charset=utf-8" },
        { "csv", "text/csv; charset=utf-8" },
        { "doc", "application/msword" },
        { "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document" },
        { "eot", "application/vnd.ms-fontobject" },
        { "epub", "application/epub+zip" },
        { "flac", "audio/flac" },
        { "gif", "image/gif" },
        { "gz", "application/gzip" },
        { "heic", "image/heic" },
        { "htm", "text/html; charset=utf-8" },
        { "html", "text/html; charset=utf-8" },
        { "ico", "image/x-icon" },
        { "ics", "text/calendar; charset=utf-8" },
        { "jar", "application/java-archive" },
        { "jpeg", "image/jpeg" },
        { "jpg", "image/jpeg" },
        { "js", "text/javascript; charset=utf-8" },
        { "json", "application/json" },
        { "jsonld", "application/ld+json" },
        { "jxl", "image/jxl" },
        { "m4a", "audio/mp4" },
        { "m4v", "video/mp4" },
        { "manifest", "text/cache-manifest; charset=utf-8" },
        { "map", "application/json" },
        { "md", "text/markdown; charset=utf-8" },
        { "mid", "audio/midi" },
        { "midi", "audio/midi" },
        { "mjs", "text/javascript; charset=utf-8" },
        { "mov", "video/quicktime" },
        { "mp3", "audio/mpeg" },
        { "mp4", "video/mp4" },
        { "mpeg", "video/mpeg" },
        { "mpg", "video/mpeg" },
        { "oga", "audio/ogg" },
        { "ogg", "audio/ogg" },
        { "ogv", "video/ogg" },
        { "opus", "audio/opus" },
        { "otf", "font/otf" },
        { "pdf", "application/pdf" },
        { "png", "image/png" },
        { "ppt", "application/vnd.ms-powerpoint" },
        { "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation" },
        { "rar", "application/vnd.rar" },
        { "rss", "application/rss+xml" },
        { "rtf", "application/rtf" },
        { "svg", "image/svg+xml" },
        { "svgz", "image/svg+xml" },
        { "tar", "application/x-tar" },
        { "tif", "image/tiff" },
        { "tiff", "image/tiff" },
        { "toml", "application/toml" },
        { "ts", "video/mp2t" },
        { "tsv", "text/tab-separated-values; charset=utf-8" },
        { "ttf", "font/ttf" },
        { "txt", "text/plain; charset=utf-8" },
        { "vtt", "text/vtt; charset=utf-8" },
        { "wasm", "application/wasm" },
        { "wav", "audio/wav" },
        { "weba", "audio/webm" },
        { "webm", "video/webm" },
        { "webmanifest", "application/manifest+json" },
        { "webp", "image/webp" },
        { "woff", "font/woff" },
        { "woff2", "font/woff2" },
        { "xhtml", "application/xhtml+xml" },
        { "xls", "application/vnd.ms-excel" },
        { "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" },
        { "xml", "application/xml" },
        { "xsl", "application/xml" },
        { "yaml", "application/yaml" },
        { "yml", "application/yaml" },
        { "zip", "application/zip" },
        { "zst", "application/zstd" },
    };
    char path[64], upper[64];
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        snprintf(path, sizeof path, "static/dir.v2/file.%s", want[i].ext);
        CHECK_STR(mime_type_for(path), want[i].type);
        for (size_t j = 0; (upper[j] = (char)toupper((unsigned char)path[j])); j++) {}
        CHECK_STR(mime_type_for(upper), want[i].type);
    }
}

TEST(common_types)
{
    CHECK_STR(mime_type_for("index.html"), "text/html; charset=utf-8");
    CHECK_STR(mime_type_for("/a/b/style.CSS"), "text/css; charset=utf-8");
    CHECK_STR(mime_type_for("app.js"), "text/javascript; charset=utf-8");
    CHECK_STR(mime_type_for("mod.mjs"), "text/javascript; charset=utf-8");
    CHECK_STR(mime_type_for("data.json"), "application/json");
    CHECK_STR(mime_type_for("logo.svg"), "image/svg+xml");
    CHECK_STR(mime_type_for("photo.JPG"), "image/jpeg");
    CHECK_STR(mime_type_for("font.woff2"), "font/woff2");
    CHECK_STR(mime_type_for("app.wasm"), "application/wasm");
    CHECK_STR(mime_type_for("archive.tar.gz"), "application/gzip");
    CHECK_STR(mime_type_for("README.md"), "text/markdown; charset=utf-8");
    CHECK_STR(mime_type_for("app.yaml"), "application/yaml");
}

TEST(defaults)
{
    const char *dflt = "application/octet-stream";
    CHECK_STR(mime_type_for("Makefile"), dflt);
    CHECK_STR(mime_type_for("dir.d/noext"), dflt);
    CHECK_STR(mime_type_for(".htaccess"), dflt);
    CHECK_STR(mime_type_for("a/.js"), dflt);
    CHECK_STR(mime_type_for("file."), dflt);
    CHECK_STR(mime_type_for("file.unknownext"), dflt);
    CHECK_STR(mime_type_for("file.averyveryverylongextension"), dflt);
    CHECK_STR(mime_type_for(""), dflt);
    CHECK_STR(mime_type_for("/"), dflt);
    CHECK_STR(mime_type_for(NULL), dflt);
    CHECK_STR(mime_type_for("file.html/"), dflt);
}

int main(void)
{
    RUN(every_entry);
    RUN(common_types);
    RUN(defaults);
    return test_report();
}
