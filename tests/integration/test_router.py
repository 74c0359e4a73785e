"""The router and CLI end to end: `cyclozzo --start application` on real
apps, driven over real sockets.

The script side here is an `entrypoint:` app (a small threaded Python HTTP
server that echoes what it received as JSON), so these tests exercise the
router, the instance manager and the CLI independently of the Python runtime.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import SANITIZED, assert_clean_logs, cz, free_port, wait_port

ECHO_SERVER = r'''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/crash"):
            os._exit(3)
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.split("=")[1]))
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"alpha", b"beta", b"gamma"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/big"):
            size = int(self.path.split("=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            left = size
            while left:
                k = min(left, len(chunk))
                self.wfile.write(chunk[:k])
                left -= k
            return
        out = json.dumps({"method": self.command, "path": self.path,
                          "headers": dict(self.headers.items()),
                          "body_len": len(body), "body_head": body[:64].decode("latin-1"),
                          "pid": os.getpid(), "boot": BOOT, "env": {k: v for k, v in os.environ.items()
                                                      if k.startswith(("GAE_", "API_", "GOOGLE_", "MY_"))}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

BOOT = os.urandom(8).hex()   # names this process: pids repeat in the sandbox's PID namespace
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''

APP_YAML = """\
runtime: python311
entrypoint: /usr/bin/python3 echo.py
env_variables:
  MY_SETTING: "forty two"
default_expiration: "1h"
skip_files:
- ^(.*/)?secret\\.txt$
handlers:
- url: /static
  static_dir: assets
  expiration: "2d 3h"
  http_headers:
    X-Static-Test: "static yes"
- url: /img/(.*\\.png)
  static_files: images/\\1
  upload: images/.*\\.png
- url: /robots\\.txt
  static_files: robots.txt
  upload: robots\\.txt
  mime_type: text/x-robots
- url: /files/(.*)
  static_files: \\1
  upload: images/.*\\.png
- url: /secret
  static_files: secret.txt
  upload: secret\\.txt
- url: /private/.*
  script: auto
  login: required
- url: /api/.*
  script: auto
  login: admin
  auth_fail_action: unauthorized
- url: /.*
  script: auto
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A running app with static and script handlers; yields (base_url, dir, env)."""
    root = tmp_path_factory.mktemp("routerapp")
    home = tmp_path_factory.mktemp("czhome")
    appdir = root / "echoapp"
    (appdir / "assets" / "sub").mkdir(parents=True)
    (appdir / "images").mkdir()
    (appdir / "app.yaml").write_text(APP_YAML)
    (appdir / "echo.py").write_text(ECHO_SERVER)
    (appdir / "assets" / "style.css").write_text("body { color: red; }\n")
    (appdir / "assets" / "sub" / "page.html").write_text("<p>hello</p>\n")
    (appdir / "assets" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (appdir / "images" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (appdir / "robots.txt").write_text("User-agent: *\n")
    (appdir / "secret.txt").write_text("do not serve\n")
    (root / "outside.txt").write_text("outside the app\n")
    os.symlink(str(root / "outside.txt"), str(appdir / "assets" / "escape.txt"))
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env)
    yield f"http://127.0.0.1:{port}", appdir, env, port
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def raw(port, data, timeout=5.0, read_all=True):
    """Send raw bytes, return everything read until the server closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_all:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def test_start_reports_and_status_lists(app):
    base, appdir, env, port = app
    st = cz("--status", env=env)
    line = [l for l in st.stdout.splitlines() if str(port) in l]
    assert line, st.stdout
    assert "echoapp" in line[0] and str(appdir) in line[0]
    assert line[0].split()[3] == "1"   # one instance


def test_script_gets_app_engine_environment(app):
    base, appdir, env, port = app
    r = requests.get(base + "/hello?x=1")
    assert r.status_code == 200
    j = r.json()
    assert j["path"] == "/hello?x=1"
    assert j["env"]["GAE_APPLICATION"] == "dev~echoapp"
    assert j["env"]["GOOGLE_CLOUD_PROJECT"] == "echoapp"
    assert j["env"]["GAE_SERVICE"] == "default"
    assert j["env"]["GAE_ENV"] == "standard"
    assert j["env"]["MY_SETTING"] == "forty two"
    assert j["env"]["API_PORT"].isdigit()
    h = {k.lower(): v for k, v in j["headers"].items()}
    assert len(h["x-appengine-request-log-id"]) >= 16
    assert h["x-appengine-default-version-hostname"] == f"127.0.0.1:{port}"
    assert h["x-appengine-https"] == "off"
    assert h["x-appengine-country"] == "ZZ"


def test_client_appengine_headers_are_stripped(app):
    base, appdir, env, port = app
    r = requests.get(base + "/who", headers={"X-AppEngine-User-Email": "evil@example.com",
                                             "X-AppEngine-User-Is-Admin": "1",
                                             "X-Appengine-Current-Namespace": "other",
                                             "X-AppEngine-QueueName": "default",
                                             "X-Cyclozzo-Script": "os.system",
                                             "X-Custom": "kept"})
    h = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert "x-appengine-user-email" not in h
    assert "x-appengine-user-is-admin" not in h
    assert "x-appengine-current-namespace" not in h
    assert "x-appengine-queuename" not in h
    assert h.get("x-cyclozzo-script") == "auto"
    assert h["x-custom"] == "kept"


def test_static_dir_mime_cache_and_headers(app):
    base, appdir, env, port = app
    r = requests.get(base + "/static/style.css")
    assert r.status_code == 200
    assert r.text == "body { color: red; }\n"
    assert r.headers["Content-Type"].startswith("text/css")
    assert r.headers["Cache-Control"] == "public, max-age=183600"   # 2d 3h
    assert r.headers["X-Static-Test"] == "static yes"
    assert "ETag" in r.headers and "Last-Modified" in r.headers
    r = requests.get(base + "/static/sub/page.html")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")


def test_static_files_groups_mime_override_default_expiration(app):
    base, appdir, env, port = app
    r = requests.get(base + "/img/logo.png")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    assert r.headers["Cache-Control"] == "public, max-age=3600"     # default_expiration 1h
    r = requests.get(base + "/robots.txt")
    assert r.headers["Content-Type"] == "text/x-robots"


def test_conditional_and_ranges(app):
    base, appdir, env, port = app
    r = requests.get(base + "/static/data.bin")
    etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
    assert len(r.content) == 10240
    assert requests.get(base + "/static/data.bin", headers={"If-None-Match": etag}).status_code == 304
    assert requests.get(base + "/static/data.bin", headers={"If-Modified-Since": lm}).status_code == 304
    r = requests.get(base + "/static/data.bin", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == bytes(range(10, 20))
    assert r.headers["Content-Range"] == "bytes 10-19/10240"
    r = requests.get(base + "/static/data.bin", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == bytes(range(251, 256))
    r = requests.get(base + "/static/data.bin", headers={"Range": "bytes=20000-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10240"
    r = requests.head(base + "/static/data.bin")
    assert r.status_code == 200 and r.headers["Content-Length"] == "10240" and r.content == b""


@pytest.mark.parametrize("path", ["/static/../app.yaml", "/static/%2e%2e/app.yaml",
                                  "/static/..%2fapp.yaml", "/static/escape.txt",
                                  "/static/%2e%2e/%2e%2e/outside.txt", "/static/sub/../../echo.py",
                                  "/static//etc/passwd", "/static/nothere.css", "/static/sub"])
def test_static_never_escapes(app, path):
    base, appdir, env, port = app
    resp = raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = int(resp.split(b" ", 2)[1])
    assert status in (400, 404), resp[:200]
    assert b"outside the app" not in resp and b"runtime:" not in resp and b"root:" not in resp


def test_static_files_serve_only_uploaded_files(app):
    base, appdir, env, port = app
    assert requests.get(base + "/files/images/logo.png").status_code == 200
    assert requests.get(base + "/files/app.yaml").status_code == 404
    assert requests.get(base + "/files/echo.py").status_code == 404


def test_skip_files_not_served(app):
    base, appdir, env, port = app
    assert requests.get(base + "/secret").status_code == 404


def test_login_required_redirects_and_admin_unauthorized(app):
    base, appdir, env, port = app
    r = requests.get(base + "/private/page?a=b", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/_ah/login?continue=http%3A%2F%2F127.0.0.1%3A")
    assert r.headers["Location"].endswith("%2Fprivate%2Fpage%3Fa%3Db")
    r = requests.get(base + "/api/x", allow_redirects=False)
    assert r.status_code == 401


def test_keepalive_and_pipelining(app):
    base, appdir, env, port = app
    reqs = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
    reqs += b"GET /static/style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(port, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    for i in range(5):
        assert f'"/p{i}"'.encode() in out
    assert out.index(b'"/p0"') < out.index(b'"/p4"') < out.index(b"color: red")


def test_chunked_request_and_response_bodies(app):
    base, appdir, env, port = app
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    out = raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
    j = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert j["body_len"] == 11 and j["body_head"] == "hello world"
    assert j["headers"]["Content-Length"] == "11"
    r = requests.get(base + "/chunked")
    assert r.status_code == 200 and r.content == b"alphabetagamma"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    # An HTTP/1.0 client gets the body raw, then the connection closes.
    out = raw(port, b"GET /chunked HTTP/1.0\r\n\r\n")
    assert out.endswith(b"alphabetagamma")


def test_large_proxied_response(app):
    base, appdir, env, port = app
    r = requests.get(base + "/big=5000000")
    assert r.status_code == 200 and len(r.content) == 5000000


@pytest.mark.parametrize("req,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40000000\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
])
def test_malformed_requests_refused_and_server_unharmed(app, req, status):
    base, appdir, env, port = app
    out = raw(port, req)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:100]
    assert b"Connection: close" in out.split(b"\r\n\r\n")[0]
    assert requests.get(base + "/static/style.css").status_code == 200


def test_chunked_body_over_limit(app):
    base, appdir, env, port = app
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"100000\r\n" + b"z" * 0x100000 + b"\r\n"
    got = b""
    try:
        for _ in range(40):
            s.sendall(chunk)
    except OSError:
        pass
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError:
        pass
    s.close()
    assert got.startswith(b"HTTP/1.1 413 "), got[:80]
    assert requests.get(base + "/ok").status_code == 200


def daemon_rss_kb(env, port):
    st = cz("--status", env=env).stdout
    pid = [l.split()[2] for l in st.splitlines() if l.split()[1:2] == [str(port)]][0]
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def hold_and_serve(port, n):
    """Open n connections at once, send a request on each, read every answer."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for s in socks:
        s.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n\r\n")
    ok = 0
    for s in socks:
        data = b""
        while b"color: red" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        ok += data.startswith(b"HTTP/1.1 200")
    return socks, ok


def test_many_concurrent_connections_with_flat_memory(app):
    base, appdir, env, port = app
    n = 3000
    rss = []
    for _ in range(3):
        socks, ok = hold_and_serve(port, n)
        assert ok == n
        rss.append(daemon_rss_kb(env, port))      # all n connections still open
        for s in socks:
            s.close()
        time.sleep(0.3)
    # Holding 3000 keep-alive connections costs little, and the same load
    # again does not grow the process: memory is flat.
    print("daemon RSS (KiB) with 3000 open connections, 3 rounds:", rss)
    if not SANITIZED:   # ASan holds freed memory in quarantine; LSan checks leaks instead
        assert rss[0] < 60 * 1024, rss
        assert rss[2] - rss[0] < 4 * 1024, rss


def test_instance_crash_gives_quick_5xx_then_recovers(app):
    base, appdir, env, port = app
    boot_before = requests.get(base + "/pid").json()["boot"]
    t0 = time.time()
    r = requests.get(base + "/crash", timeout=10)
    assert r.status_code == 502
    assert time.time() - t0 < 5
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            r = requests.get(base + "/pid", timeout=5)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["boot"] != boot_before


def test_access_log_line_per_request(app):
    base, appdir, env, port = app
    requests.get(base + "/logged-path?q=1")
    time.sleep(0.5)
    logs = os.path.join(env["CYCLOZZO_HOME"], "logs", f"echoapp-{port}.log")
    text = open(logs).read()
    line = [l for l in text.splitlines() if "comp=access" in l and "/logged-path?q=1" in l]
    assert line, text[-2000:]
    assert "app=echoapp" in line[0] and "status=200" in line[0] and "method=GET" in line[0]
    assert "latency_ms=" in line[0] and " instance=" in line[0] and "request_id=" in line[0]


def test_broken_app_yaml_refused_with_line(tmp_path, cz_env):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "app.yaml").write_text("runtime: python311\nhandlers:\n- url: /x\n  script: auto\n  login: sometimes\n")
    p = cz("--start", "application", "--dir", str(d), "--port", str(free_port()), env=cz_env, check=False)
    assert p.returncode != 0
    assert "app.yaml:5" in p.stderr and "login" in p.stderr
    assert cz("--status", env=cz_env).stdout.count("\n") <= 2


def test_app_that_fails_to_start_is_reported(tmp_path, cz_env):
    d = tmp_path / "failing"
    d.mkdir()
    (d / "app.yaml").write_text("runtime: python311\nentrypoint: /usr/bin/python3 -c 'import sys; print(\"boom from app\"); sys.exit(4)'\n")
    port = free_port()
    p = cz("--start", "application", "--dir", str(d), "--port", str(port), env=cz_env, check=False, timeout=60)
    assert p.returncode != 0
    assert "boom from app" in p.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_port_in_use_is_refused(app, tmp_path):
    base, appdir, env, port = app
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env, check=False)
    assert p.returncode != 0 and "already serving" in p.stderr


def test_stop_by_dir_stops_every_process(tmp_path, cz_env):
    d = tmp_path / "stopme"
    d.mkdir()
    (d / "app.yaml").write_text("runtime: python311\nentrypoint: /usr/bin/python3 echo.py\n")
    (d / "echo.py").write_text(ECHO_SERVER)
    port = free_port()
    cz("--start", "application", "--dir", str(d), "--port", str(port), env=cz_env)
    assert requests.get(f"http://127.0.0.1:{port}/").status_code == 200
    st = cz("--status", env=cz_env).stdout
    daemon = int([l.split()[2] for l in st.splitlines() if l.split()[1:2] == [str(port)]][0])
    procs = descendants(daemon)
    assert procs, "the instance runs under the daemon"
    cz("--stop", "application", "--dir", str(d), env=cz_env)
    time.sleep(0.3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    for pid in [daemon, *procs]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def descendants(pid):
    """Host pids of every process under pid."""
    parent = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    parent[int(p)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, todo = [], [pid]
    while todo:
        cur = todo.pop()
        kids = [c for c, pp in parent.items() if pp == cur]
        found += kids
        todo += kids
    return found


def test_slow_client_head_times_out_while_others_are_served(app):
    """A client that trickles its head (slowloris) gets 408 after 20 s and is
    disconnected; meanwhile everyone else is served."""
    base, appdir, env, port = app
    slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(50)]
    for s in slow:
        s.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    while time.time() - t0 < 12:
        for s in slow[:10]:
            s.sendall(b"X-Drip: 1\r\n")
        assert requests.get(base + "/static/style.css", timeout=5).status_code == 200
        time.sleep(2)
    got = slow[0].recv(4096)
    while True:
        more = slow[0].recv(4096)
        if not more:
            break
        got += more
    assert got.startswith(b"HTTP/1.1 408 "), got[:80]
    assert 19 <= time.time() - t0 <= 26
    for s in slow:
        s.close()


def test_changed_static_file_is_served_fresh_within_a_second(app):
    base, appdir, env, port = app
    f = appdir / "assets" / "changing.txt"
    f.write_text("version one\n")
    assert requests.get(base + "/static/changing.txt").text == "version one\n"
    f.write_text("version two, longer\n")
    time.sleep(1.2)
    r = requests.get(base + "/static/changing.txt")
    assert r.text == "version two, longer\n" and r.headers["Content-Length"] == "20"
    f.unlink()
    time.sleep(1.2)
    assert requests.get(base + "/static/changing.txt").status_code == 404


def test_large_static_file_and_range(app):
    base, appdir, env, port = app
    data = os.urandom(3 * 1024 * 1024 + 17)
    (appdir / "assets" / "big.bin").write_bytes(data)
    r = requests.get(base + "/static/big.bin")
    assert r.status_code == 200 and r.content == data
    r = requests.get(base + "/static/big.bin", headers={"Range": "bytes=1000000-1000099"})
    assert r.status_code == 206 and r.content == data[1000000:1000100]
