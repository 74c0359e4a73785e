"""Shared fixtures for the integration tests.

Every test drives real Cyclozzo binaries (bin/) over real sockets. Each test
gets its own CYCLOZZO_HOME under pytest's tmp_path, so tests never share state.
"""
import os
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CYCLOZZO_BIN selects another build, e.g. build/san/bin (ASan/UBSan).
BIN = os.path.abspath(os.environ.get("CYCLOZZO_BIN", os.path.join(ROOT, "bin")))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, host="127.0.0.1"):
    """Block until something accepts on host:port, or raise."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


# True when the binaries under test were built with AddressSanitizer, whose
# shadow memory makes absolute memory figures meaningless.
with open(os.path.join(BIN, "cyclozzo"), "rb") as _f:
    SANITIZED = b"__asan_init" in _f.read()

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def assert_clean_logs(home):
    """Fail if any daemon log under home holds a sanitizer report (SAN builds)."""
    logs = os.path.join(home, "logs")
    if not os.path.isdir(logs):
        return
    for name in os.listdir(logs):
        with open(os.path.join(logs, name), errors="replace") as f:
            text = f.read()
        for mark in SANITIZER_MARKS:
            i = text.find(mark)
            assert i < 0, f"{name}: {text[max(0, i - 200):i + 3000]}"


@pytest.fixture
def cz_home(tmp_path):
    home = tmp_path / "czhome"
    home.mkdir()
    yield str(home)
    assert_clean_logs(str(home))


@pytest.fixture
def cz_env(cz_home):
    env = dict(os.environ)
    env["CYCLOZZO_HOME"] = cz_home
    return env


def cz(*args, env=None, check=True, timeout=120, **kw):
    """Run bin/cyclozzo with args; returns CompletedProcess (text mode)."""
    p = subprocess.run([os.path.join(BIN, "cyclozzo"), *args], env=env, text=True,
                       capture_output=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"cyclozzo {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# CZ_TEST_DATASTORE=postgres runs the selected tests with the datastore on a
# real PostgreSQL server (started once per session, a fresh database per
# test) instead of LMDB: every process the tests start inherits
# CYCLOZZO_DATASTORE. scripts/test.sh runs the datastore suites this way too.
DATASTORE_ENGINE = os.environ.get("CZ_TEST_DATASTORE", "lmdb")


@pytest.fixture(scope="session")
def pg_server():
    from pgserver import PgServer
    srv = PgServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _datastore_engine(request, monkeypatch):
    if DATASTORE_ENGINE != "postgres":
        yield
        return
    srv = request.getfixturevalue("pg_server")
    _datastore_engine.n = getattr(_datastore_engine, "n", 0) + 1
    db = srv.create_db(f"t{_datastore_engine.n}")
    monkeypatch.setenv("CYCLOZZO_DATASTORE", srv.uri(db))
    yield
