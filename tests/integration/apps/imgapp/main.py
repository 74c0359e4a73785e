"""Images test app: serving URLs and blob-key transforms through Google's
SDK (google.appengine.api.images), driven by the test over HTTP."""
import cgi
import os
import urllib.parse

from google.appengine.ext import blobstore
from google.appengine.api import images
from google.appengine.api import wrap_wsgi_app


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    status, ctype, out = "200 OK", "text/plain", b""
    try:
        if path == "/appid":
            out = os.environ["GAE_APPLICATION"].encode()
        elif path == "/url":
            size = int(q["size"]) if "size" in q else None
            out = images.get_serving_url(q["key"], size=size, crop=q.get("crop") == "1",
                                         secure_url=q.get("secure") == "1").encode()
        elif path == "/delete":
            images.delete_serving_url(q["key"])
            out = b"deleted"
        elif path == "/upload_url":
            out = blobstore.create_upload_url("/uploaded").encode()
        elif path == "/uploaded":       # the router's post after an upload
            form = cgi.FieldStorage(fp=environ["wsgi.input"], environ=environ)
            info = blobstore.parse_blob_info(form["file"])
            out = images.get_serving_url(info.key(), size=int(form.getfirst("size"))).encode()
        elif path == "/thumb":
            img = images.Image(blob_key=q["key"])
            img.resize(int(q["width"]))
            out = img.execute_transforms(output_encoding=images.PNG)
            ctype = "image/png"
    except images.Error as e:
        status, out = "409 Conflict", ("%s: %s" % (type(e).__name__, e)).encode()
    start_response(status, [("Content-Type", ctype)])
    return [out]


app = wrap_wsgi_app(app)
