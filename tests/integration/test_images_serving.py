"""Serving URLs end to end: an app calls images.get_serving_url and
delete_serving_url (Google's SDK) on `cyclozzo --start application`, and the
router serves /_ah/img/BLOBKEY[=sNN][-c] from the blob store: default size,
resized, square-cropped, original, in the source's format, cached, and gone
once the URL is deleted. Blobs are put where the blob store's local driver
keeps them (CYCLOZZO_HOME/blobs/<app>/<k0k1>/<key>).

One CYCLOZZO_HOME (and so one cached virtualenv) serves the whole module."""
import io
import os
import shutil
import time
import urllib.parse

import pytest
import requests
from PIL import Image

from conftest import ROOT, assert_clean_logs, cz, free_port

APP = os.path.join(ROOT, "tests", "integration", "apps", "imgapp")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home = tmp_path_factory.mktemp("imghome")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    appdir = tmp_path_factory.mktemp("imgapp")
    shutil.copytree(APP, appdir, dirs_exist_ok=True)
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env, timeout=600)
    base = f"http://127.0.0.1:{port}"
    app_id = requests.get(base + "/appid", timeout=30).text
    yield {"base": base, "port": port, "home": str(home), "app": app_id}
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def put_blob(site, key, data):
    d = os.path.join(site["home"], "blobs", site["app"], key[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, key), "wb") as f:
        f.write(data)


def picture(w, h, fmt):
    im = Image.new("RGB", (w, h), (255, 0, 0))
    im.paste(Image.new("RGB", (w // 2, h), (0, 0, 255)), (w - w // 2, 0))
    b = io.BytesIO()
    im.save(b, fmt)
    return b.getvalue()


def serving_url(site, key, **params):
    r = requests.get(site["base"] + "/url", params=dict(key=key, **params), timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def fetch(site, url):
    """GET a serving URL from this router (whatever host name it carries)."""
    u = urllib.parse.urlsplit(url)
    return requests.get(site["base"] + u.path, timeout=30)


def test_serving_url_sizes_and_crop(site):
    put_blob(site, "jpegKey", picture(1000, 600, "JPEG"))
    url = serving_url(site, "jpegKey")
    assert url.startswith("http://") and url.endswith("/_ah/img/jpegKey")
    assert urllib.parse.urlsplit(url).port == site["port"]
    r = fetch(site, url)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert "max-age" in r.headers["Cache-Control"]
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and im.size == (512, 307)          # App Engine's default size
    assert Image.open(io.BytesIO(fetch(site, url + "=s100").content)).size == (100, 60)
    assert Image.open(io.BytesIO(fetch(site, url + "=s0").content)).size == (1000, 600)
    assert Image.open(io.BytesIO(fetch(site, url + "=s1600").content)).size == (1600, 960)
    crop = serving_url(site, "jpegKey", size=32, crop=1)
    assert crop.endswith("/_ah/img/jpegKey=s32-c")
    c = Image.open(io.BytesIO(fetch(site, crop).content)).convert("RGB")
    assert c.size == (32, 32)
    assert serving_url(site, "jpegKey", secure=1).startswith("https://")


def test_formats_cache_and_etag(site):
    put_blob(site, "pngKey", picture(300, 100, "PNG"))
    put_blob(site, "gifKey", picture(50, 40, "GIF"))
    png_url = serving_url(site, "pngKey")
    r = fetch(site, png_url + "=s30")
    assert r.headers["Content-Type"] == "image/png"
    im = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert im.size == (30, 10) and im.getpixel((0, 5)) == (255, 0, 0) and im.getpixel((29, 5)) == (0, 0, 255)
    again = fetch(site, png_url + "=s30")
    assert again.content == r.content and again.headers["ETag"] == r.headers["ETag"]
    nm = requests.get(site["base"] + urllib.parse.urlsplit(png_url).path + "=s30",
                      headers={"If-None-Match": r.headers["ETag"]}, timeout=30)
    assert nm.status_code == 304 and not nm.content
    g = fetch(site, serving_url(site, "gifKey"))
    assert g.headers["Content-Type"] == "image/png"                # GIF sources are served as PNG
    assert Image.open(io.BytesIO(g.content)).size == (50, 40)      # small images keep their size


def test_deleted_url_and_bad_requests(site):
    put_blob(site, "goneKey", picture(20, 20, "PNG"))
    url = serving_url(site, "goneKey")
    assert fetch(site, url).status_code == 200
    assert requests.get(site["base"] + "/delete", params={"key": "goneKey"}, timeout=30).text == "deleted"
    assert fetch(site, url).status_code == 404                      # the cached copy is not served
    assert requests.get(site["base"] + "/_ah/img/neverPublished", timeout=30).status_code == 404
    put_blob(site, "textKey", b"not an image at all")
    bad = serving_url(site, "textKey")
    assert fetch(site, bad).status_code == 400
    assert requests.get(site["base"] + "/_ah/img/goneKey=x12", timeout=30).status_code == 400
    assert requests.get(site["base"] + "/_ah/img/goneKey=s99999", timeout=30).status_code == 400
    assert requests.post(site["base"] + "/_ah/img/goneKey", timeout=30).status_code == 405
    r = requests.get(site["base"] + "/url", params={"key": "missingKey"}, timeout=30)
    assert r.status_code == 409 and r.text.startswith("ObjectNotFoundError")


def test_app_transforms_blob_by_key(site):
    put_blob(site, "thumbKey", picture(400, 200, "JPEG"))
    r = requests.get(site["base"] + "/thumb", params={"key": "thumbKey", "width": 40}, timeout=30)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (40, 20)


def test_uploaded_photo_served(site):
    """A photo uploaded through a Blobstore upload URL, then served."""
    upload = requests.get(site["base"] + "/upload_url", timeout=30).text
    assert "/_ah/upload/" in upload
    path = urllib.parse.urlsplit(upload).path
    r = requests.post(site["base"] + path, data={"size": "64"},
                      files={"file": ("photo.png", picture(200, 100, "PNG"), "image/png")}, timeout=30)
    assert r.status_code == 200, r.text
    assert "/_ah/img/" in r.text and r.text.endswith("=s64")
    im = Image.open(io.BytesIO(fetch(site, r.text).content))
    assert im.format == "PNG" and im.size == (64, 32)
