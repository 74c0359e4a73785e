"""URL Fetch end to end: an app calling Google's SDK (google.appengine.api.
urlfetch) on `cyclozzo --start application`, fetching from HTTP and HTTPS
servers this test runs on loopback (Python's http.server in threads; the
HTTPS one with a self-signed certificate made by openssl).

One CYCLOZZO_HOME and one app serve the whole module."""
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from conftest import ROOT, assert_clean_logs, cz, free_port

APP = os.path.join(ROOT, "tests", "integration", "apps", "mfapp")
BIG = (32 << 20) + 1000          # past App Engine's 32 MiB response limit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if u.path == "/echo":
            out = {"method": self.command, "path": self.path, "body": body.decode("latin-1"),
                   "headers": {k: v for k, v in self.headers.items()}}
            self.reply(200, json.dumps(out).encode(), [("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b")])
        elif u.path.startswith("/status/"):
            self.reply(int(u.path.split("/")[2]), b"status body")
        elif u.path == "/redirect":
            left = int(q.get("n", "1"))
            code = int(q.get("code", "302"))
            nxt = f"/redirect?n={left - 1}&code={code}" if left > 1 else "/echo?done=1"
            self.reply(code, b"", [("Location", nxt)])
        elif u.path == "/redirect-to":
            self.reply(302, b"", [("Location", q["url"])])
        elif u.path == "/slow":
            time.sleep(float(q.get("s", "2")))
            self.reply(200, b"slow done")
        elif u.path == "/big":
            n = int(q["n"])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"z" * 65536
            try:
                while n > 0:
                    k = min(n, len(chunk))
                    self.wfile.write(chunk[:k])
                    n -= k
            except OSError:
                pass              # the fetcher stops reading at its limit
        elif u.path == "/close":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.reply(404, b"no such path")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def serve(httpd):
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    return httpd


@pytest.fixture(scope="module")
def uf(tmp_path_factory):
    home = tmp_path_factory.mktemp("ufhome")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    appdir = tmp_path_factory.mktemp("ufapp")
    shutil.copytree(APP, appdir, dirs_exist_ok=True)
    (appdir / "app.yaml").write_text(f"runtime: python311\napplication: ufapp\nentrypoint: {sys.executable} -W ignore main.py\n")
    http = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    certdir = tmp_path_factory.mktemp("cert")
    key, crt = str(certdir / "key.pem"), str(certdir / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    https = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    https.socket = ctx.wrap_socket(https.socket, server_side=True)
    serve(https)
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env, timeout=300)
    state = {"base": f"http://127.0.0.1:{port}", "port": port, "http": f"http://127.0.0.1:{http.server_address[1]}",
             "https": f"https://127.0.0.1:{https.server_address[1]}", "home": str(home)}
    yield state
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    http.shutdown()
    https.shutdown()
    assert_clean_logs(str(home))


def fetch(uf, url, **kw):
    r = requests.post(uf["base"] + "/fetch", json=dict(url=url, **kw), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def content(res):
    return base64.b64decode(res["content_b64"])


def test_get_headers_and_user_agent(uf):
    r = fetch(uf, uf["http"] + "/echo?x=1", headers={"X-Custom": "v1", "User-Agent": "tester/1.0"})
    assert r["status"] == 200, r
    echo = json.loads(content(r))
    assert echo["method"] == "GET" and echo["path"] == "/echo?x=1"
    assert echo["headers"]["X-Custom"] == "v1"
    assert echo["headers"]["User-Agent"].startswith("tester/1.0 AppEngine-Google")
    assert "appid: ufapp" in echo["headers"]["User-Agent"]
    assert r["headers"]["Content-Type"] == "application/json"
    assert r["headers"]["X-Multi"] == "a, b"          # repeated headers, joined by the SDK
    assert r["final_url"] is None and r["truncated"] is False


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_methods_with_payload(uf, method):
    r = fetch(uf, uf["http"] + "/echo", method=method, payload="päyload=1",
              headers={"Content-Type": "text/plain; charset=utf-8"})
    echo = json.loads(content(r))
    assert echo["method"] == method
    assert echo["body"].encode("latin-1").decode() == "päyload=1"
    assert echo["headers"]["Content-Type"] == "text/plain; charset=utf-8"


def test_delete_and_head(uf):
    r = fetch(uf, uf["http"] + "/echo", method="DELETE")
    assert json.loads(content(r))["method"] == "DELETE"
    r = fetch(uf, uf["http"] + "/echo", method="HEAD")
    assert r["status"] == 200 and r["length"] == 0
    assert int(r["headers"]["Content-Length"]) > 0


def test_http_errors_are_responses(uf):
    r = fetch(uf, uf["http"] + "/status/404")
    assert r["status"] == 404 and content(r) == b"status body"
    r = fetch(uf, uf["http"] + "/status/503")
    assert r["status"] == 503


def test_redirects_followed_with_final_url(uf):
    r = fetch(uf, uf["http"] + "/redirect?n=3")
    assert r["status"] == 200
    assert r["final_url"] == uf["http"] + "/echo?done=1"
    assert json.loads(content(r))["method"] == "GET"
    # 302 turns POST into GET without payload; 307 keeps both
    r = fetch(uf, uf["http"] + "/redirect?n=1&code=302", method="POST", payload="p")
    echo = json.loads(content(r))
    assert echo["method"] == "GET" and echo["body"] == ""
    r = fetch(uf, uf["http"] + "/redirect?n=1&code=307", method="POST", payload="p")
    echo = json.loads(content(r))
    assert echo["method"] == "POST" and echo["body"] == "p"


def test_redirects_not_followed(uf):
    r = fetch(uf, uf["http"] + "/redirect?n=2", follow_redirects=False)
    assert r["status"] == 302
    assert r["headers"]["Location"] == "/redirect?n=1&code=302"
    assert r["final_url"] is None


def test_too_many_redirects(uf):
    assert fetch(uf, uf["http"] + "/redirect?n=5")["status"] == 200     # five are allowed
    r = fetch(uf, uf["http"] + "/redirect?n=6")
    assert r["error"] == "TooManyRedirectsError", r


def test_deadline(uf):
    t0 = time.time()
    r = fetch(uf, uf["http"] + "/slow?s=3", deadline=1)
    assert r["error"] == "DeadlineExceededError", r
    assert time.time() - t0 < 2.8
    assert fetch(uf, uf["http"] + "/slow?s=1", deadline=3)["status"] == 200


def test_default_deadline_is_five_seconds(uf):
    t0 = time.time()
    r = fetch(uf, uf["http"] + "/slow?s=7")
    took = time.time() - t0
    assert r["error"] == "DeadlineExceededError", r
    assert 4.5 < took < 6.9


def test_response_size_limit(uf):
    r = fetch(uf, uf["http"] + f"/big?n={BIG}", allow_truncated=True)
    assert r["status"] == 200 and r["truncated"] is True
    assert r["length"] == 32 << 20
    r = fetch(uf, uf["http"] + f"/big?n={BIG}")
    assert r["error"] == "ResponseTooLargeError", r
    r = fetch(uf, uf["http"] + f"/big?n={(32 << 20) - 10}")
    assert r["truncated"] is False and r["length"] == (32 << 20) - 10


def test_payload_limit(uf):
    r = fetch(uf, uf["http"] + "/echo", method="POST", payload_size=(10 << 20) + 1)
    assert r["error"] == "PayloadTooLargeError", r
    r = fetch(uf, uf["http"] + "/echo", method="POST", payload_size=1 << 20)
    assert len(json.loads(content(r))["body"]) == 1 << 20


def test_invalid_urls(uf):
    for url in ["ftp://127.0.0.1/x", "not a url", "http://", "file:///etc/passwd"]:
        r = fetch(uf, url)
        assert r["error"] == "InvalidURLError", (url, r)


def test_connection_and_dns_errors(uf):
    dead = free_port()
    r = fetch(uf, f"http://127.0.0.1:{dead}/")
    assert r["error"] == "DownloadError", r
    r = fetch(uf, "http://no-such-host.invalid/")
    assert r["error"] == "DNSLookupFailedError", r
    r = fetch(uf, uf["http"] + "/close")
    assert r["error"] in ("ConnectionClosedError", "DownloadError"), r


def test_https_certificate_validation(uf):
    for kw in ({"validate_certificate": True}, {}):        # the default validates too
        r = fetch(uf, uf["https"] + "/echo", **kw)
        assert r["error"] == "SSLCertificateError", r
    r = fetch(uf, uf["https"] + "/echo", validate_certificate=False)
    assert r["status"] == 200
    assert json.loads(content(r))["method"] == "GET"


def test_internal_ports_refused(uf):
    env = requests.get(uf["base"] + "/env", timeout=30).json()
    api, inst = int(env["api_port"]), int(env["port"])
    for url in [f"http://127.0.0.1:{api}/rpc_http", f"http://localhost:{api}/", f"http://127.0.0.1:{inst}/hello",
                uf["http"] + f"/redirect-to?url=http://127.0.0.1:{api}/rpc_http",
                uf["http"] + f"/redirect-to?url=http://localhost:{inst}/hello"]:
        r = fetch(uf, url)
        assert r["error"] == "DownloadError", (url, r)
        assert "internal port" in r["message"], (url, r)
    # the app's public port and ordinary loopback services stay reachable
    r = fetch(uf, f"http://127.0.0.1:{uf['port']}/hello")
    assert r["status"] == 200 and json.loads(content(r)) == {"hello": True}
    assert fetch(uf, uf["http"] + "/echo")["status"] == 200


def test_parallel_slow_fetches_keep_api_server_responsive(uf):
    urls = [uf["http"] + "/slow?s=2"] * 20
    r = requests.post(uf["base"] + "/parallel", json={"urls": urls, "deadline": 10}, timeout=60).json()
    assert r["statuses"] == [200] * 20, r
    # 20 fetches of 2 s each in parallel: one round, not two (16 workers)
    assert r["elapsed"] < 3.8, r
    # another API call made while all 20 wait is answered at once
    assert r["ping_ok"] and r["ping"] < 1.0, r
