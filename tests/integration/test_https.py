"""HTTPS and custom domains end to end: `cyclozzo --start application` with
--https-port, --cert/--key and --domain, driven by curl, `openssl s_client`
and Python's ssl module over real sockets.

The app is a plain WSGI app on Cyclozzo's Python runtime, so what it reports
(wsgi.url_scheme, HTTPS, DEFAULT_VERSION_HOSTNAME, SERVER_NAME) is what the
runtime derived from the router's headers.
"""
import hashlib
import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import assert_clean_logs, cz, free_port

DOMAIN = "cz-example.test"

MAIN_PY = r'''
import hashlib, json, os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/big"):
        n = int(environ["QUERY_STRING"].split("=")[1])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])
        block = bytes(range(256)) * 256
        return [block[:min(len(block), n - i)] for i in range(0, n, len(block))]
    if path.startswith("/upload"):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        out = json.dumps({"len": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
    else:
        out = json.dumps({
            "path": path,
            "url_scheme": environ["wsgi.url_scheme"],
            "HTTPS": os.environ.get("HTTPS"),
            "x_https": environ.get("HTTP_X_APPENGINE_HTTPS"),
            "server_name": environ.get("SERVER_NAME"),
            "server_port": environ.get("SERVER_PORT"),
            "default_hostname": os.environ.get("DEFAULT_VERSION_HOSTNAME"),
        }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
'''

APP_YAML = """\
runtime: python311
application: shop
version: v7
handlers:
- url: /static
  static_dir: assets
- url: /always301.*
  script: auto
  secure: always
  redirect_http_response_code: 301
- url: /always307.*
  script: auto
  secure: always
  redirect_http_response_code: 307
- url: /always.*
  script: auto
  secure: always
- url: /never.*
  script: auto
  secure: never
  redirect_http_response_code: 303
- url: /.*
  script: auto
  secure: optional
"""

BIG_STATIC = 24 * 1024 * 1024 + 12345


def make_app(root):
    appdir = root / "shop"
    (appdir / "assets").mkdir(parents=True)
    (appdir / "app.yaml").write_text(APP_YAML)
    (appdir / "main.py").write_text(MAIN_PY)
    (appdir / "assets" / "hello.txt").write_text("hello over tls\n")
    with open(appdir / "assets" / "big.bin", "wb") as f:
        f.write(os.urandom(BIG_STATIC))
    return appdir


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The app on HTTP and HTTPS with --domain and a generated certificate."""
    root = tmp_path_factory.mktemp("httpsapp")
    home = tmp_path_factory.mktemp("czhome")
    appdir = make_app(root)
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    port, sport = free_port(), free_port()
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--https-port", str(sport),
           "--domain", DOMAIN, env=env, timeout=300)
    info = dict(port=port, sport=sport, env=env, home=str(home), appdir=appdir, start_out=p.stdout)
    yield info
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def curl(*args, timeout=60):
    p = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)
    return p


def https_get(site, path, host=None, extra=()):
    """(status, headers text, body bytes) of one HTTPS GET through curl."""
    host = host or "localhost"
    cert = os.path.join(site["home"], "tls", "selfsigned.crt")
    p = curl("--cacert", cert, "--resolve", f"{host}:{site['sport']}:127.0.0.1", "-D", "-",
             f"https://{host}:{site['sport']}{path}", *extra)
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):        # an interim 100 Continue
        head, _, body = body.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


def s_client(port, *args, data=b""):
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args], input=data,
                       capture_output=True, timeout=30)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def still_serving(site):
    status, _, body = https_get(site, "/static/hello.txt")
    assert status == 200 and body == b"hello over tls\n"


def read_response(sock):
    """One HTTP/1.1 response with Content-Length from sock: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    assert len(body) == length, "extra bytes after the response"
    return int(head.split()[1]), body


# ---- certificates and protocol versions ----

def test_selfsigned_generated_with_notice_and_reused(site, tmp_path):
    crt = os.path.join(site["home"], "tls", "selfsigned.crt")
    assert "self-signed certificate " + crt in site["start_out"]
    assert "generated now" in site["start_out"]
    log = open(os.path.join(site["home"], "logs", f"shop-{site['port']}.log")).read()
    assert "self-signed" in log and crt in log and "state=generated" in log
    # It names localhost, the loopback addresses and the domain (wildcard too).
    text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-text"], capture_output=True, text=True).stdout
    for name in ("DNS:localhost", f"DNS:{DOMAIN}", f"DNS:*.{DOMAIN}", "IP Address:127.0.0.1"):
        assert name in text
    # A second daemon with the same CYCLOZZO_HOME reuses it, byte for byte.
    before = open(crt, "rb").read()
    port, sport = free_port(), free_port()
    p = cz("--start", "application", "--dir", str(site["appdir"]), "--port", str(port), "--https-port", str(sport),
           "--domain", DOMAIN, env=site["env"], timeout=300)
    try:
        assert "reused" in p.stdout and crt in p.stdout
        assert open(crt, "rb").read() == before
        out = s_client(sport, "-servername", "localhost", "-CAfile", crt, data=b"")
        assert "Verify return code: 0 (ok)" in out
    finally:
        cz("--stop", "application", "--port", str(port), env=site["env"], check=False)


def test_tls12_and_tls13_handshake_modern_ciphers(site):
    out12 = s_client(site["sport"], "-tls1_2")
    assert "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in out12
    out13 = s_client(site["sport"], "-tls1_3")
    assert "New, TLSv1.3, Cipher is TLS_AES_" in out13 or "New, TLSv1.3, Cipher is TLS_CHACHA20" in out13
    # Resumption (session tickets) on reconnect.
    assert "Reused, TLSv1.2" in s_client(site["sport"], "-tls1_2", "-reconnect")
    for flags in (["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]):
        status, _, body = https_get(site, "/static/hello.txt", extra=flags)
        assert status == 200 and body == b"hello over tls\n"


@pytest.mark.parametrize("old", ["-tls1_1", "-tls1"])
def test_old_tls_refused(site, old):
    out = s_client(site["sport"], old, "-cipher", "ALL:@SECLEVEL=0")
    assert "Cipher is (NONE)" in out or "alert protocol version" in out or "no protocols available" in out
    assert "Protocol  : TLSv1.1" not in out or "Cipher is (NONE)" in out
    still_serving(site)


def test_weak_tls12_cipher_refused(site):
    out = s_client(site["sport"], "-tls1_2", "-cipher", "AES128-SHA")
    assert "Cipher is (NONE)" in out or "handshake failure" in out
    still_serving(site)


def make_cert(d, cn, names):
    key, crt = str(d / f"{cn}.key"), str(d / f"{cn}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=" + ",".join("DNS:" + n for n in names)],
                   check=True, capture_output=True)
    return crt, key


def test_sni_picks_the_certificate(tmp_path, cz_env):
    appdir = make_app(tmp_path)
    a_crt, a_key = make_cert(tmp_path, "alpha.test", ["alpha.test", "www.alpha.test"])
    b_crt, b_key = make_cert(tmp_path, "beta.test", ["*.beta.test"])
    c_crt, c_key = make_cert(tmp_path, "gamma.test", ["gamma.test"])
    port, sport = free_port(), free_port()
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--https-port", str(sport),
           "--cert", a_crt, "--key", a_key, "--cert", b_crt, "--key", b_key, "--cert", c_crt, "--key", c_key,
           env=cz_env, timeout=300)
    try:
        assert "self-signed" not in p.stdout
        cases = [("alpha.test", "alpha.test"), ("www.alpha.test", "alpha.test"), ("shop.beta.test", "beta.test"),
                 ("gamma.test", "gamma.test"), ("unknown.example", "alpha.test"), ("beta.test", "alpha.test"),
                 ("a.b.beta.test", "alpha.test")]
        for sni, cn in cases:
            out = s_client(sport, "-servername", sni)
            assert f"subject=CN = {cn}" in out, (sni, out)
        out = s_client(sport, "-noservername")
        assert "subject=CN = alpha.test" in out
        # curl checks the certificate against the name it asked for.
        for host, crt in (("www.alpha.test", a_crt), ("x.beta.test", b_crt), ("gamma.test", c_crt)):
            r = curl("--cacert", crt, "--resolve", f"{host}:{sport}:127.0.0.1", f"https://{host}:{sport}/static/hello.txt")
            assert r.returncode == 0 and r.stdout == b"hello over tls\n", (host, r.stderr)
    finally:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)


def test_certificate_problems_are_one_sentence(tmp_path, cz_env):
    appdir = make_app(tmp_path)
    a_crt, a_key = make_cert(tmp_path, "alpha.test", ["alpha.test"])
    b_crt, b_key = make_cert(tmp_path, "beta.test", ["beta.test"])
    port, sport = free_port(), free_port()
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--https-port", str(sport),
           "--cert", a_crt, env=cz_env, check=False)
    assert p.returncode == 2 and "--key" in p.stderr
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--https-port", str(sport),
           "--cert", a_crt, "--key", b_key, env=cz_env, check=False, timeout=300)
    assert p.returncode != 0 and b_key in p.stderr and "does not belong" in p.stderr
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--https-port", str(sport),
           "--cert", str(tmp_path / "junk.pem"), "--key", a_key, env=cz_env, check=False, timeout=300)
    assert p.returncode != 0 and "junk.pem is not a PEM certificate" in p.stderr


# ---- what the app sees; secure redirects ----

def test_app_sees_https_and_url_scheme(site):
    status, _, body = https_get(site, "/info")
    assert status == 200
    seen = json.loads(body)
    assert seen["url_scheme"] == "https" and seen["HTTPS"] == "on" and seen["x_https"] == "on"
    assert seen["server_port"] == str(site["sport"])
    # Over HTTP, and a client that forges the header does not change it.
    r = curl("-H", "X-AppEngine-Https: on", "-H", "X-Forwarded-Proto: https", f"http://127.0.0.1:{site['port']}/info")
    seen = json.loads(r.stdout)
    assert seen["url_scheme"] == "http" and seen["HTTPS"] == "off" and seen["x_https"] == "off"


@pytest.mark.parametrize("path,code", [("/always301/a?x=1", 301), ("/always307/b", 307), ("/always/c", 302)])
def test_secure_always_redirects_http_to_https(site, path, code):
    r = curl("-D", "-", "-o", "/dev/null", "-H", f"Host: shop.{DOMAIN}:{site['port']}", f"http://127.0.0.1:{site['port']}{path}")
    head = r.stdout.decode()
    assert head.startswith(f"HTTP/1.1 {code} ")
    assert f"Location: https://shop.{DOMAIN}:{site['sport']}{path}\r\n" in head
    # Over HTTPS it is served.
    status, _, body = https_get(site, path, host=f"shop.{DOMAIN}")
    assert status == 200 and json.loads(body)["url_scheme"] == "https"


def test_secure_never_redirects_https_to_http(site):
    status, head, _ = https_get(site, "/never/x?y=2", host=f"v7-dot-shop.{DOMAIN}")
    assert status == 303
    assert f"Location: http://v7-dot-shop.{DOMAIN}:{site['port']}/never/x?y=2\r\n" in head
    r = curl(f"http://127.0.0.1:{site['port']}/never/x")
    assert json.loads(r.stdout)["url_scheme"] == "http"


def test_optional_serves_both(site):
    r = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{site['port']}/anything")
    assert r.stdout == b"200"
    status, _, _ = https_get(site, "/anything")
    assert status == 200


# ---- keep-alive, large bodies ----

def test_many_requests_on_one_keepalive_tls_connection(site):
    raw = socket.create_connection(("127.0.0.1", site["sport"]), timeout=20)
    s = tls_context().wrap_socket(raw, server_hostname="localhost")
    for i in range(30):
        path = "/static/hello.txt" if i % 2 else f"/info?i={i}"
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        status, body = read_response(s)
        assert status == 200
        assert body == b"hello over tls\n" if i % 2 else json.loads(body)["url_scheme"] == "https"
    # Pipelined: three requests in one write, three answers in order.
    s.sendall(b"".join(f"GET /info?p={i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for i in range(3)))
    for i in range(3):
        status, body = read_response(s)
        assert status == 200 and json.loads(body)["path"] == "/info"
    s.close()


def test_large_static_file_over_tls(site):
    status, _, body = https_get(site, "/static/big.bin")
    assert status == 200 and len(body) == BIG_STATIC
    want = hashlib.sha256(open(site["appdir"] / "assets" / "big.bin", "rb").read()).hexdigest()
    assert hashlib.sha256(body).hexdigest() == want
    # A range from the middle.
    status, head, body = https_get(site, "/static/big.bin", extra=["-H", "Range: bytes=10000000-10000099"])
    assert status == 206 and len(body) == 100


def test_large_proxied_bodies_over_tls(site, tmp_path):
    n = 16 * 1024 * 1024 + 7
    status, _, body = https_get(site, f"/big?n={n}")
    block = bytes(range(256)) * 256
    assert status == 200 and len(body) == n and body[:65536] == block and body[-7:] == block[:7]
    up = tmp_path / "up.bin"
    data = os.urandom(12 * 1024 * 1024)
    up.write_bytes(data)
    status, _, body = https_get(site, "/upload", extra=["--data-binary", f"@{up}", "-H", "Content-Type: application/octet-stream"])
    assert status == 200
    assert json.loads(body) == {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ---- hostile or broken clients ----

def client_hello():
    """The first bytes a real TLS client sends (captured from a memory BIO)."""
    ctx = tls_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_truncated_handshake_silent_client_and_garbage_leave_it_serving(site):
    sport = site["sport"]
    hello = client_hello()
    assert hello[0] == 0x16
    # Half a ClientHello, then close.
    s = socket.create_connection(("127.0.0.1", sport), timeout=5)
    s.sendall(hello[: len(hello) // 2])
    s.close()
    # Half a ClientHello, then wait: the server keeps waiting (no crash), others are served.
    held = socket.create_connection(("127.0.0.1", sport), timeout=5)
    held.sendall(hello[:20])
    # A client that connects and sends nothing.
    silent = [socket.create_connection(("127.0.0.1", sport), timeout=5) for _ in range(5)]
    still_serving(site)
    # Random garbage, plain HTTP, and a ClientHello followed by garbage.
    for junk in (os.urandom(70000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", hello + os.urandom(5000),
                 b"\x16\x03\x01\xff\xff" + os.urandom(300), b"\x16\x03\x03\x00\x05\x01\x00\x00\x01\x00"):
        s = socket.create_connection(("127.0.0.1", sport), timeout=5)
        try:
            s.sendall(junk)
            s.settimeout(5)
            got = s.recv(4096)          # an alert or nothing, then close
            assert b"HTTP/1.1 200" not in got
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        s.close()
        still_serving(site)
    # TLS spoken to the plain HTTP port gets a 400, not a hang.
    s = socket.create_connection(("127.0.0.1", site["port"]), timeout=5)
    s.sendall(hello)
    assert s.recv(4096).startswith(b"HTTP/1.1 400")
    s.close()
    for c in silent:
        c.close()
    held.close()
    still_serving(site)


def test_stalled_handshake_is_closed_after_20_seconds(site):
    hello = client_hello()
    s = socket.create_connection(("127.0.0.1", site["sport"]), timeout=40)
    s.sendall(hello[:20])
    t0 = time.time()
    try:
        got = s.recv(4096)
    except ConnectionResetError:
        got = b""
    waited = time.time() - t0
    s.close()
    assert got == b"" and 18 <= waited <= 30, (got, waited)
    still_serving(site)


def test_500_concurrent_tls_connections_held(site):
    ctx = tls_context()
    n = 500
    socks = []
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", site["sport"]), timeout=20)
        socks.append(ctx.wrap_socket(raw, server_hostname="localhost"))
    for round_ in range(2):            # every connection answers twice: all held open, kept alive
        for s in socks:
            s.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ok = 0
        for s in socks:
            status, body = read_response(s)
            ok += status == 200 and body == b"hello over tls\n"
        assert ok == n, (round_, ok)
    for s in socks:
        s.close()
    still_serving(site)


# ---- custom domains ----

@pytest.mark.parametrize("host", [DOMAIN, f"shop.{DOMAIN}", f"v7-dot-shop.{DOMAIN}", f"SHOP.{DOMAIN.upper()}.",
                                  "127.0.0.1", "localhost"])
def test_domain_hosts_served(site, host):
    r = curl("-H", f"Host: {host}:{site['port']}", f"http://127.0.0.1:{site['port']}/info")
    seen = json.loads(r.stdout)
    assert seen["default_hostname"] == f"shop.{DOMAIN}:{site['port']}"
    assert seen["server_name"].lower().rstrip(".") == host.lower().rstrip(".")
    if host in (DOMAIN, f"shop.{DOMAIN}", f"v7-dot-shop.{DOMAIN}"):   # names the certificate covers
        status, _, body = https_get(site, "/info", host=host)
        assert status == 200 and json.loads(body)["server_name"] == host


@pytest.mark.parametrize("host", [f"blog.{DOMAIN}", f"v8-dot-shop.{DOMAIN}", f"v7-dot-blog.{DOMAIN}",
                                  f"a.shop.{DOMAIN}", f"x-dot-v7-dot-shop.{DOMAIN}"])
def test_domain_other_app_or_version_is_404(site, host):
    r = curl("-D", "-", "-H", f"Host: {host}", f"http://127.0.0.1:{site['port']}/info")
    text = r.stdout.decode()
    assert text.startswith("HTTP/1.1 404")
    assert f"The host {host} is not served here" in text and "shop" in text
    status, _, body = https_get(site, "/static/hello.txt", host=host, extra=["-k"])
    assert status == 404 and f"The host {host} is not served here".encode() in body
    still_serving(site)


def test_relative_certificate_paths(tmp_path, cz_env):
    """The daemon runs from /: --cert/--key relative to the caller's directory still work."""
    appdir = make_app(tmp_path)
    make_cert(tmp_path, "rel.test", ["rel.test"])
    port, sport = free_port(), free_port()
    cz("--start", "application", "--dir", "shop", "--port", str(port), "--https-port", str(sport),
       "--cert", "rel.test.crt", "--key", "rel.test.key", env=cz_env, timeout=300, cwd=str(tmp_path))
    try:
        assert appdir.exists()
        out = s_client(sport, "-servername", "rel.test")
        assert "subject=CN = rel.test" in out
    finally:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
