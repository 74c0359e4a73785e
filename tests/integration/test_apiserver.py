"""The API server (bin/cz-apiserver) driven by Google's own Python SDK.

Each test starts cz-apiserver with a fresh CYCLOZZO_HOME, mints tickets with
`cz-apiserver --mint-ticket`, and makes calls through appengine-python-standard
(tests/integration/sdk_client.py runs them inside real WSGI requests wrapped by
the SDK's wrap_wsgi_app, with the ticket in X-AppEngine-Api-Ticket), or over
raw sockets where the SDK cannot express the case (no ticket, garbage bodies,
thousands of simultaneous connections).
"""
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import BIN, ROOT, SANITIZED

from google.appengine.api.capabilities import capability_service_pb2
from google.appengine.ext.remote_api import remote_api_bytes_pb2 as remote_api_pb2

APP = "dev~demo"
CZ_APISERVER = os.path.join(BIN, "cz-apiserver")
SDK_CLIENT = os.path.join(ROOT, "tests", "integration", "sdk_client.py")
RPC = remote_api_pb2.RpcError


class ApiServer:
    def __init__(self, home, *args):
        self.home = home
        self.proc = subprocess.Popen(
            [CZ_APISERVER, "--home", home, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=open(os.path.join(home, "apiserver.log"), "wb"), text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("port="), f"cz-apiserver printed {line!r}; log:\n{self.log()}"
        self.port = int(line.strip().split("=", 1)[1])

    def log(self):
        with open(os.path.join(self.home, "apiserver.log")) as f:
            return f.read()

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def server(cz_home):
    s = ApiServer(cz_home, "--app", APP, "--max-request", str(1 << 20), "--log-level", "debug")
    yield s
    assert s.stop() == 0, "cz-apiserver did not exit cleanly on SIGTERM"


def mint(home, app=APP, *args):
    p = subprocess.run([CZ_APISERVER, "--home", home, "--mint-ticket", app, *args],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def sdk_calls(port, calls, app=APP):
    env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(port), GAE_APPLICATION=app)
    p = subprocess.run([sys.executable, "-W", "ignore", SDK_CLIENT], input=json.dumps(calls),
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def rpc_body(service, method, request=b"", ticket=None):
    r = remote_api_pb2.Request(service_name=service, method=method, request=request)
    if ticket is not None:
        r.request_id = ticket
    return r.SerializeToString()


def is_enabled_request(package="datastore_v3", caps=("*", "write")):
    req = capability_service_pb2.IsEnabledRequest(package=package)
    req.capability.extend(caps)
    return req.SerializeToString()


def http_post(port, body, path="/rpc_http", method="POST", extra=b""):
    """One raw HTTP exchange on a new connection; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: api\r\nContent-Type: application/octet-stream\r\n"
                  b"%sContent-Length: %d\r\n\r\n" % (method.encode(), path.encode(), extra, len(body)) + body)
        return read_response(s)


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        rest += chunk
    return status, headers, rest[:n]


def rpc_error_of(body):
    resp = remote_api_pb2.Response.FromString(body)
    assert resp.HasField("rpc_error"), resp
    return resp.rpc_error.code


def test_capabilities_enabled_through_sdk(server):
    t = mint(server.home, APP, "--user", "ada@example.com", "--request-id", "r-17")
    out = sdk_calls(server.port, [
        {"kind": "capability", "package": "datastore_v3", "capabilities": ["write"], "ticket": t},
        {"kind": "capability", "package": "memcache", "ticket": t},
        {"kind": "is_enabled_raw", "package": "images", "capabilities": ["*", "resize"], "ticket": t},
    ])
    assert out[0] == {"ok": True}
    assert out[1] == {"ok": True}
    enabled = capability_service_pb2.IsEnabledResponse.ENABLED
    assert out[2] == {"ok": {"summary": enabled, "configs": [["images", "*", 1], ["images", "resize", 1]]}}
    # One debug line per call: app, service.method, status, latency, request id.
    lines = [l for l in server.log().splitlines() if 'call="capability_service.IsEnabled"' in l]
    assert len(lines) == 3, server.log()
    assert all('app="dev~demo"' in l and "status=ok" in l and 'request_id="r-17"' in l
               and "latency_us=" in l for l in lines), lines


def test_unknown_service_and_method(server):
    t = mint(server.home)
    out = sdk_calls(server.port, [
        {"kind": "call", "service": "no_such_service", "method": "Frob", "ticket": t},
        {"kind": "call", "service": "capability_service", "method": "Frob", "ticket": t},
    ])
    assert [o.get("error") for o in out] == ["CallNotFoundError", "CallNotFoundError"], out
    assert "no_such_service" in out[0]["message"]
    assert "warn" in server.log() and "CALL_NOT_FOUND" in server.log()


def test_security_violations_through_sdk(server, tmp_path):
    good = mint(server.home)
    other_app = mint(server.home, "dev~intruder")
    expired = mint(server.home, APP, "--ttl", "1")
    other_home = tmp_path / "elsewhere"
    other_home.mkdir()
    forged = mint(str(other_home))            # same app, another installation's key
    tampered = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    time.sleep(1.2)
    calls = [{"kind": "capability", "package": "datastore_v3", "capabilities": ["write"], "ticket": t}
             for t in (forged, tampered, expired, other_app, "not-a-ticket", None, good)]
    out = sdk_calls(server.port, calls)
    # The SDK has no class of its own for SECURITY_VIOLATION: it raises its
    # generic RPCFailedError carrying the server's explanation.
    for o, why in zip(out[:5], ["not issued by this Cyclozzo", "not issued by this Cyclozzo",
                                "expired", "another application", "malformed"]):
        assert o.get("error") == "RPCFailedError", o
        assert why in o["message"], o
    # Without a ticket the SDK refuses to call at all.
    assert out[5]["error"] == "RPCFailedError" and "without active security ticket" in out[5]["message"]
    assert out[6] == {"ok": True}
    assert server.log().count("status=SECURITY_VIOLATION") == 5


def test_missing_ticket_raw(server):
    for ticket in (None, ""):
        status, _, body = http_post(server.port, rpc_body("capability_service", "IsEnabled",
                                                         is_enabled_request(), ticket))
        assert status == 200
        assert rpc_error_of(body) == RPC.SECURITY_VIOLATION


def test_request_too_large(server):
    t = mint(server.home)
    out = sdk_calls(server.port, [
        {"kind": "call", "service": "capability_service", "method": "IsEnabled", "pad": 2 << 20, "ticket": t},
        {"kind": "capability", "package": "datastore_v3", "capabilities": ["write"], "ticket": t},
    ])
    assert out[0].get("error") == "RequestTooLargeError", out[0]
    assert out[1] == {"ok": True}
    # The connection that carried the oversized body stays usable.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        big = rpc_body("capability_service", "IsEnabled", b"x" * (3 << 20), t)
        ok = rpc_body("capability_service", "IsEnabled", is_enabled_request(), t)
        for body, want in ((big, RPC.REQUEST_TOO_LARGE), (ok, None)):
            s.sendall(b"POST /rpc_http HTTP/1.1\r\nHost: api\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            status, headers, resp = read_response(s)
            assert status == 200 and headers.get("connection") != "close"
            if want is None:
                assert remote_api_pb2.Response.FromString(resp).HasField("response")
            else:
                assert rpc_error_of(resp) == want
    assert server.proc.poll() is None


def test_default_limit_is_32_mib(cz_home):
    s = ApiServer(cz_home)
    try:
        t = mint(cz_home)
        status, _, body = http_post(s.port, rpc_body("capability_service", "IsEnabled", b"y" * (33 << 20), t))
        assert status == 200 and rpc_error_of(body) == RPC.REQUEST_TOO_LARGE
        req = capability_service_pb2.IsEnabledRequest(package="p" * (30 << 20))
        status, _, body = http_post(s.port, rpc_body("capability_service", "IsEnabled",
                                                     req.SerializeToString(), t))
        assert status == 200
        assert remote_api_pb2.Response.FromString(body).HasField("response")
    finally:
        assert s.stop() == 0


def test_garbage_and_http_errors(server):
    status, _, body = http_post(server.port, b"\xff\xfe this is not a protocol buffer")
    assert status == 200 and rpc_error_of(body) == RPC.PARSE_ERROR
    status, _, body = http_post(server.port, b"")
    assert status == 200 and rpc_error_of(body) == RPC.PARSE_ERROR
    assert http_post(server.port, b"", path="/")[0] == 404
    assert http_post(server.port, b"", path="/rpc_http/x")[0] == 404
    status, headers, _ = http_post(server.port, b"", method="GET")
    assert status == 405 and headers["allow"] == "POST"
    # Malformed HTTP: 400, then the server closes the connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /rpc_http HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        status, headers, _ = read_response(s)
        assert status == 400 and headers["connection"] == "close"
        assert s.recv(10) == b""
    assert server.proc.poll() is None


def test_mint_ticket_cli_errors(cz_home):
    p = subprocess.run([CZ_APISERVER, "--home", cz_home, "--mint-ticket", APP, "--ttl", "0"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--ttl" in p.stderr
    key = os.path.join(cz_home, "secrets", "ticket.key")
    mint(cz_home)
    assert os.stat(key).st_mode & 0o777 == 0o600
    os.chmod(key, 0o644)
    p = subprocess.run([CZ_APISERVER, "--home", cz_home, "--mint-ticket", APP], capture_output=True, text=True)
    assert p.returncode != 0 and "chmod 600" in p.stderr


async def _hold_and_call(port, n, bodies):
    """Open n connections, hold them all open at once, make a call on each,
    then a second call on each (keep-alive reuse). Returns the error codes seen."""
    conns = []
    for i in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", port))

    async def call(reader, writer, body):
        writer.write(b"POST /rpc_http HTTP/1.1\r\nHost: api\r\nX-Google-RPC-Service-Deadline: 60\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        resp = remote_api_pb2.Response.FromString(await reader.readexactly(n))
        return resp.rpc_error.code if resp.HasField("rpc_error") else "ok"

    results = []
    for round_ in range(2):
        results += await asyncio.gather(*(call(r, w, bodies[i % len(bodies)]) for i, (r, w) in enumerate(conns)))
    for _, w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    return results


def test_thousands_of_keepalive_connections(cz_home):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip(f"the open-file hard limit ({hard}) is too low for 2000 connections")
    if soft < 5000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10000), hard))
    n = 2000
    s = ApiServer(cz_home, "--app", APP, "--threads", "8")
    try:
        t = mint(cz_home)
        bodies = [rpc_body("capability_service", "IsEnabled", is_enabled_request(), t),
                  rpc_body("capability_service", "IsEnabled", is_enabled_request("memcache", ["*"]), t)]
        threads = s.status("Threads")
        rss = []
        for round_ in range(4):
            results = asyncio.run(_hold_and_call(s.port, n, bodies))
            assert results == ["ok"] * (2 * n)
            rss.append(s.status("VmRSS"))
        # No thread per connection, and memory does not grow round over round.
        assert s.status("Threads") == threads
        print(f"RSS kB per round with {n} connections: {rss}")
        growth_kb = rss[-1] - rss[0]
        if not SANITIZED:   # ASan holds freed memory in quarantine; LSan checks leaks instead
            assert growth_kb < 4096, f"RSS grew {growth_kb} kB over rounds: {rss}"
            assert rss[-1] < 64 * 1024, f"RSS {rss[-1]} kB with {n} connections"
    finally:
        assert s.stop() == 0


# ---- Google's Go SDK (google.golang.org/appengine/v2) ----

GO_APP_DIR = os.path.join(ROOT, "tests", "integration", "go")


@pytest.fixture(scope="module")
def go_app_binary():
    """Builds tests/integration/go (the Go SDK comes from the Go module proxy)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        pytest.skip("no Go toolchain (scripts/install-deps.sh installs golang-go)")
    out = os.path.join(ROOT, "build", "go-apitest")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    p = subprocess.run([go, "build", "-o", out, "."], cwd=GO_APP_DIR, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def go_get(port, path, ticket=None):
    headers = b"X-AppEngine-Api-Ticket: %s\r\n" % ticket.encode() if ticket is not None else b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: app\r\n%sConnection: close\r\n\r\n" % (path.encode(), headers))
        status, _, body = read_response(s)
    assert status == 200, body
    return body.decode()


def test_go_sdk_calls(server, go_app_binary, tmp_path):
    from conftest import free_port, wait_port
    port = free_port()
    env = dict(os.environ, PORT=str(port), API_HOST="127.0.0.1", API_PORT=str(server.port),
               GAE_ENV="standard", GAE_APPLICATION=APP, GOOGLE_CLOUD_PROJECT="demo",
               GAE_SERVICE="default", GAE_VERSION="v1", GAE_INSTANCE="inst-1",
               GAE_DEPLOYMENT_ID="dep-1", GAE_RUNTIME="go121", GAE_MEMORY_MB="256")
    app = subprocess.Popen([go_app_binary], env=env, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "go-app.log", "wb"))
    try:
        wait_port(port)
        t = mint(server.home, APP, "--request-id", "go-1")
        other = mint(server.home, "dev~intruder")
        assert go_get(port, "/capability", t) == "enabled=true\n"
        # Failed capability RPCs read as "not enabled" in the Go SDK.
        assert go_get(port, "/capability", other) == "enabled=false\n"
        assert go_get(port, "/capability") == "enabled=false\n"
        out = go_get(port, "/call?service=no_such_service&method=Frob", t)
        assert out.startswith("error: Call error 1: ") and "no_such_service" in out
        out = go_get(port, "/call?service=capability_service&method=IsEnabled", other)
        assert out.startswith("error: Call error 3: ") and "another application" in out
        out = go_get(port, "/call?service=capability_service&method=IsEnabled", "junk")
        assert out.startswith("error: Call error 3: ") and "malformed" in out
    finally:
        app.terminate()
        app.wait(timeout=10)
    log = server.log()
    assert 'app="dev~demo" call="capability_service.IsEnabled" status=ok' in log
    assert 'request_id="go-1"' in log


# ---- The whole path: router mints, instance's SDK calls, API server verifies ----

FULL_STACK_APP = r'''
import os
from wsgiref.simple_server import make_server, WSGIRequestHandler
from google.appengine.api import capabilities, wrap_wsgi_app

def app(environ, start_response):
    enabled = capabilities.CapabilitySet("datastore_v3", capabilities=["write"]).is_enabled()
    body = ("enabled=%s ticket=%s" % (enabled, bool(environ.get("HTTP_X_APPENGINE_API_TICKET")))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

class Quiet(WSGIRequestHandler):
    def log_message(self, *a):
        pass

make_server("127.0.0.1", int(os.environ["PORT"]), wrap_wsgi_app(app), handler_class=Quiet).serve_forever()
'''


def test_router_ticket_reaches_api_server(tmp_path, cz_env):
    from conftest import cz, free_port
    appdir = tmp_path / "capapp"
    appdir.mkdir()
    (appdir / "main.py").write_text(FULL_STACK_APP)
    (appdir / "app.yaml").write_text(f"runtime: python311\nentrypoint: {sys.executable} -W ignore main.py\n")
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=cz_env)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            # A client-supplied ticket is never trusted: the router replaces it.
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-AppEngine-Api-Ticket: forged\r\nConnection: close\r\n\r\n")
            status, _, body = read_response(s)
        assert status == 200, body
        assert body == b"enabled=True ticket=True"
    finally:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
