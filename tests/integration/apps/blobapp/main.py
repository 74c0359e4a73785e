"""Blobstore test app: upload URLs, an upload success handler, BlobInfo
queries, fetch_data, send_blob and delete, all through Google's SDK
(google.appengine.ext.blobstore / google.appengine.api.blobstore)."""
import cgi
import io
import json
import urllib.parse

from google.appengine.api import wrap_wsgi_app
from google.appengine.ext import blobstore


def info_dict(bi):
    return {"key": str(bi.key()), "filename": bi.filename, "size": bi.size,
            "content_type": bi.content_type, "md5_hash": bi.md5_hash,
            "creation": bi.creation.isoformat() if bi.creation else None}


class Upload(blobstore.BlobstoreUploadHandler):
    pass


def on_upload(environ):
    """The success path: the SDK's get_uploads, plus the plain fields."""
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n)
    env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
    uploads = Upload().get_uploads(env)
    form = cgi.FieldStorage(fp=io.BytesIO(body), environ=dict(environ, **{"wsgi.input": io.BytesIO(body)}))
    fields = {}
    parsed = []
    for item in form.list:
        if "blob-key" in item.type_options:
            bi = blobstore.parse_blob_info(item)
            parsed.append({"field": item.name, "key": str(bi.key()), "filename": bi.filename,
                           "size": bi.size, "content_type": bi.content_type,
                           "md5": bi.md5_hash.decode() if isinstance(bi.md5_hash, bytes) else bi.md5_hash})
        else:
            fields.setdefault(item.name, []).append(item.value if isinstance(item.value, str) else item.value.decode())
    return {"uploads": [str(u.key()) for u in uploads], "parsed": parsed, "fields": fields,
            "query": environ.get("QUERY_STRING", ""), "content_length": n}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    headers = [("Content-Type", "application/json")]
    status = "200 OK"
    out = None
    try:
        if path == "/url":
            kw = {}
            if q.get("max_blob"):
                kw["max_bytes_per_blob"] = int(q["max_blob"])
            if q.get("max_total"):
                kw["max_bytes_total"] = int(q["max_total"])
            if q.get("bucket"):
                kw["gs_bucket_name"] = q["bucket"]
            out = {"url": blobstore.create_upload_url(q.get("success", "/done?x=1"), **kw)}
        elif path == "/done":
            out = on_upload(environ)
        elif path == "/info":
            bi = blobstore.BlobInfo.get(q["key"])
            out = info_dict(bi) if bi else None
        elif path == "/all":
            out = sorted(str(b.key()) for b in blobstore.BlobInfo.all())
        elif path == "/by_name":
            out = [info_dict(b) for b in blobstore.BlobInfo.gql("WHERE filename = :1", q["filename"])]
        elif path == "/newest":
            out = [b.filename for b in blobstore.BlobInfo.all().order("-creation").fetch(2)]
        elif path == "/fetch":
            data = blobstore.fetch_data(q["key"], int(q["start"]), int(q["end"]))
            headers = [("Content-Type", "application/octet-stream")]
            out = data
        elif path == "/reader":
            r = blobstore.BlobReader(q["key"], buffer_size=int(q.get("buf", "131072")))
            r.seek(int(q.get("seek", "0")))
            data = r.read(int(q["n"]))
            headers = [("Content-Type", "application/octet-stream")]
            out = data
        elif path == "/serve":
            kw = {}
            if q.get("ctype"):
                kw["content_type"] = q["ctype"]
            if q.get("start"):
                kw["start"] = int(q["start"])
                kw["end"] = int(q["end"])
            h = blobstore.BlobstoreDownloadHandler().send_blob(environ, q["key"], **kw)
            headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in h.items()]
            headers.append(("X-App", "kept"))
            out = b"this body is replaced by the blob"
        elif path == "/delete":
            blobstore.delete(q["key"])
            out = "deleted"
        elif path == "/gskey":
            out = blobstore.create_gs_key("/gs/bucket/object.txt")
        else:
            status, out = "404 Not Found", {"error": path}
    except blobstore.Error as e:
        status, out = "200 OK", {"error": type(e).__name__, "detail": str(e)}
    if not isinstance(out, bytes):
        out = json.dumps(out).encode()
    start_response(status, headers + [("Content-Length", str(len(out)))])
    return [out]


app = wrap_wsgi_app(app)
