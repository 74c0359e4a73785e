"""The PostgreSQL kv engine (src/kv/postgres.c) against a real PostgreSQL
server: the kv contract test binary (tests/unit/test_kv.c) run on it, a
datastore daemon keeping entities there across a kill -9 of both Cyclozzo
and PostgreSQL, and errors that name what was wrong.

The datastore suites themselves (test_datastore_ndb.py, test_datastore_query.py,
test_taskqueue.py) run a second time on PostgreSQL from scripts/test.sh with
CZ_TEST_DATASTORE=postgres.
"""
import os
import subprocess

import pytest

from conftest import BIN, ROOT
from pgserver import PgServer
import test_datastore_ndb as ndbt

UNIT_DIR = os.path.join(os.path.dirname(BIN), "tests") if BIN.endswith(os.path.join("san", "bin")) \
    else os.path.join(ROOT, "build", "rel", "tests")


@pytest.fixture(scope="module")
def pg():
    srv = PgServer()
    yield srv
    srv.stop()


def test_kv_contract_on_postgres(pg):
    pg.create_db("kvcontract")
    p = subprocess.run([os.path.join(UNIT_DIR, "test_kv")], capture_output=True, text=True,
                       env=dict(os.environ, CZ_TEST_KV_PG=pg.conninfo("kvcontract")), timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "engine under test: PostgreSQL" in out
    assert " 0 failed" in out and "passed" in out, out


def test_acknowledged_puts_survive_kill9_of_everything(pg, cz_home, monkeypatch):
    """Writes acknowledged by cz-apiserver on PostgreSQL survive SIGKILL of
    cz-apiserver and of every PostgreSQL process, then a restart of both."""
    monkeypatch.setenv("CYCLOZZO_DATASTORE", pg.uri(pg.create_db("crash")))
    server = ndbt.ApiServer(cz_home)
    w = subprocess.Popen([ndbt.sys.executable, "-W", "ignore", ndbt.CLIENT, "writer", ndbt.mint(cz_home), "2000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ndbt.client_env(server.port))
    acked = 0
    while acked < 80:
        line = w.stdout.readline()
        if not line:
            break
        if line.startswith("acked "):
            acked = int(line.split()[1])
    assert acked >= 80, w.stderr.read()
    pg.kill9()                 # the database first, mid-stream
    server.kill9()
    w.kill()
    w.wait()
    for line in w.stdout:
        if line.startswith("acked "):
            acked = max(acked, int(line.split()[1]))
    pg.start()
    server = ndbt.ApiServer(cz_home)
    try:
        out = ndbt.ok(server, "verify_written", acked)
        assert out["missing"] == [] and out["unindexed"] == [], out
        assert out["ordered"] and out["all_listed"], out
    finally:
        server.stop()
    rows = int(pg.psql("SELECT count(*) FROM kv WHERE k >= 'E' AND k < 'F'", db="crash"))
    assert rows >= acked


def test_unreachable_postgres_is_one_clear_error(cz_home):
    """The API server still starts (other services work); its log says why
    the datastore cannot, naming PostgreSQL and the refused connection."""
    p = subprocess.Popen([os.path.join(BIN, "cz-apiserver"), "--home", cz_home, "--port", "0",
                          "--datastore", "postgresql://cz@127.0.0.1:1/nothing"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "cannot open the datastore" in line, line
        assert "PostgreSQL connection failed" in line and "127.0.0.1" in line, line
    finally:
        p.terminate()
        p.wait(timeout=10)
