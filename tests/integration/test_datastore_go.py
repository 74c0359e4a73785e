"""The datastore through Google's Go SDK (google.golang.org/appengine/v2/datastore).

tests/integration/go_datastore is an App Engine app built against the Go SDK
(fetched from the Go module proxy). The test starts cz-apiserver and the app
with the environment an instance gets, and calls the app's handlers with a
minted ticket, as the router would: every property type round-trips,
incomplete keys, ancestors, namespaces, deletes, multi-get holes, AllocateIDs,
transactions under contention from parallel requests (the SDK retries on
CONCURRENT_TRANSACTION), and a query.
"""
import os
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import ROOT, free_port, wait_port
from test_datastore_ndb import APP, ApiServer, mint

GO_DIR = os.path.join(ROOT, "tests", "integration", "go_datastore")


@pytest.fixture(scope="module")
def go_binary():
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        pytest.skip("no Go toolchain (scripts/install-deps.sh installs golang-go)")
    out = os.path.join(ROOT, "build", "go-dstest")
    p = subprocess.run([go, "build", "-o", out, "."], cwd=GO_DIR, env=dict(os.environ, GOFLAGS="-mod=mod"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def get(port, path, ticket):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: app\r\nX-AppEngine-Api-Ticket: %s\r\nConnection: close\r\n\r\n"
                  % (path.encode(), ticket.encode()))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return body.decode()


@pytest.fixture
def go_app(cz_home, go_binary, tmp_path):
    server = ApiServer(cz_home)
    port = free_port()
    env = dict(os.environ, PORT=str(port), API_HOST="127.0.0.1", API_PORT=str(server.port),
               GAE_ENV="standard", GAE_APPLICATION=APP, GOOGLE_CLOUD_PROJECT="dstest",
               GAE_SERVICE="default", GAE_VERSION="v1", GAE_INSTANCE="inst-1",
               GAE_DEPLOYMENT_ID="dep-1", GAE_RUNTIME="go121", GAE_MEMORY_MB="256")
    app = subprocess.Popen([go_binary], env=env, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "go-app.log", "wb"))
    try:
        wait_port(port)
        yield port, mint(cz_home), server
    finally:
        app.terminate()
        app.wait(timeout=10)
        assert server.stop() == 0


def test_go_property_types_keys_and_query(go_app):
    port, ticket, server = go_app
    assert get(port, "/types", ticket) == "ok types\n", server.log()[-2000:]
    assert get(port, "/keys", ticket) == "ok keys\n", server.log()[-2000:]
    # Items of /keys: five with scores 0..4 under one parent, the first deleted.
    assert get(port, "/query", ticket) == "ok [4 3 2]\n"


def test_go_transactions_under_contention(go_app):
    port, ticket, server = go_app
    n_threads, per_thread = 6, 8
    results = []

    def worker():
        for _ in range(per_thread):
            results.append(get(port, "/counter", ticket))

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.startswith("ok tries=") for r in results), results
    tries = sum(int(r.split("=")[1]) for r in results)
    assert len(results) == n_threads * per_thread
    assert tries > len(results), "no transaction ever conflicted"
    assert get(port, "/read", ticket) == "ok %d\n" % (n_threads * per_thread)
