"""The datastore through Google's own SDK: ndb and db (appengine-python-standard)
against bin/cz-apiserver.

Each test starts cz-apiserver on a fresh CYCLOZZO_HOME, mints a ticket with
`cz-apiserver --mint-ticket`, and runs a scenario of tests/integration/ds_client.py
in a subprocess whose SDK is pointed at the server (API_HOST/API_PORT), inside a
WSGI request wrapped by the SDK with the ticket in X-AppEngine-Api-Ticket.
Scenarios assert on what they read; the tests assert on what they report.
The crash test kills the API server with SIGKILL in the middle of a stream of
acknowledged writes and checks, after a restart, that every acknowledged entity
is there with its index rows.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, DATASTORE_ENGINE, ROOT

APP = "dev~dstest"
CZ_APISERVER = os.path.join(BIN, "cz-apiserver")
CLIENT = os.path.join(ROOT, "tests", "integration", "ds_client.py")


class ApiServer:
    def __init__(self, home):
        self.home = home
        self.logf = open(os.path.join(home, "apiserver.log"), "ab")
        self.proc = subprocess.Popen([CZ_APISERVER, "--home", home, "--port", "0", "--app", APP],
                                     stdout=subprocess.PIPE, stderr=self.logf, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("port="), f"cz-apiserver printed {line!r}; log:\n{self.log()}"
        self.port = int(line.strip().split("=", 1)[1])

    def log(self):
        with open(os.path.join(self.home, "apiserver.log")) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.logf.close()
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.logf.close()


def mint(home, app=APP):
    p = subprocess.run([CZ_APISERVER, "--home", home, "--mint-ticket", app],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def client_env(port):
    return dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(port), GAE_APPLICATION=APP)


def run(server, name, *args, timeout=180):
    p = subprocess.run([sys.executable, "-W", "ignore", CLIENT, name, mint(server.home), *map(str, args)],
                       capture_output=True, text=True, env=client_env(server.port), timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0 and lines, f"{name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{server.log()[-3000:]}"
    return json.loads(lines[-1])


def ok(server, name, *args, **kw):
    r = run(server, name, *args, **kw)
    assert "ok" in r, f"{name}: {r}\nserver log tail:\n{server.log()[-3000:]}"
    return r["ok"]


@pytest.fixture
def server(cz_home):
    s = ApiServer(cz_home)
    yield s
    if s.proc.poll() is None:
        assert s.stop() == 0, "cz-apiserver did not exit cleanly on SIGTERM"


def test_ndb_every_property_type(server):
    ident, n = ok(server, "ndb_every_type")
    assert ident == "all" and n >= 25


def test_db_every_property_type(server):
    assert ok(server, "db_every_type") == "ok"


def test_namespaces_ancestors_and_ids(server):
    out = ok(server, "namespaces_ancestors_ids")
    # Default ids are scattered: above the sequential range, as on App Engine.
    assert all(i >= 2 ** 52 for i in out["scattered"])
    first, last, after_put, after_max = out["allocated"]
    assert 0 < first <= last < after_put < after_max


def test_long_indexed_strings(server):
    assert ok(server, "long_strings") == "ok"


def test_transactions(server):
    assert ok(server, "transactions") == "ok"


def test_conflicting_transactions_from_threads_are_retried(server):
    threads, incs = 6, 15
    out = ok(server, "contention", threads, incs, timeout=300)
    assert out["errors"] == []
    assert out["done"] == threads * incs
    # The SDK had to retry: conflicts really happened and were reported as
    # CONCURRENT_TRANSACTION (anything else would have surfaced as an error).
    assert out["attempts"] > threads * incs
    assert ok(server, "counter_value") == threads * incs


@pytest.mark.parametrize("kind,error", [
    ("too_big", "BadRequestError"),
    ("other_app", "BadRequestError"),
    ("other_app_get", "BadRequestError"),
    ("reserved_kind", "BadRequestError"),
    ("conflict_exhausted", "TransactionFailedError"),
])
def test_errors(server, kind, error):
    r = run(server, "errors", kind)
    assert r.get("error") == error, r


def test_acknowledged_writes_survive_kill9(cz_home):
    server = ApiServer(cz_home)
    n = 60
    w = subprocess.Popen([sys.executable, "-W", "ignore", CLIENT, "writer", mint(cz_home), str(n * 10)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=client_env(server.port))
    acked = 0
    deadline = time.time() + 120
    while acked < n and time.time() < deadline:
        line = w.stdout.readline()
        if not line:
            break
        if line.startswith("acked "):
            acked = int(line.split()[1])
    assert acked >= n, f"writer stopped early: {w.stderr.read() if w.poll() is not None else ''}"
    server.kill9()             # mid-stream: the writer is still putting
    w.kill()
    w.wait()
    for line in w.stdout:      # anything acknowledged before the kill counts too
        if line.startswith("acked "):
            acked = max(acked, int(line.split()[1]))

    server = ApiServer(cz_home)
    try:
        out = ok(server, "verify_written", acked)
        assert out["missing"] == []
        assert out["unindexed"] == [] and out["ordered"] and out["all_listed"], out
    finally:
        server.stop()
    # Index rows: read the LMDB file directly (mdb_dump) and check that every
    # acknowledged entity has its entity row, its kind row and property rows.
    # (On PostgreSQL, test_kv_postgres.py counts the rows with psql.)
    if DATASTORE_ENGINE == "postgres":
        return
    dump = subprocess.run(["mdb_dump", "-p", os.path.join(cz_home, "datastore")],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    keys = [l[1:] for l in dump.stdout.splitlines()[0::1] if l.startswith(" ")][0::2]
    kinds = sum(1 for k in keys if k.startswith("K") and "Thing" in k)
    ents = sum(1 for k in keys if k.startswith("E") and "Thing" in k)
    vprops = sum(1 for k in keys if k.startswith("P") and "Thing\\00\\01v\\00\\01" in k)
    assert ents >= acked and kinds == ents and vprops == 2 * ents, (acked, ents, kinds, vprops)
