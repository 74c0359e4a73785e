"""Datastore queries through Google's Python SDK (ndb and db) against
bin/cz-apiserver: filters, orders, ancestors, projection, distinct, cursors
across batches, counts, keys-only, metadata queries and NEED_INDEX.

Each test starts cz-apiserver on a fresh CYCLOZZO_HOME, stores a small data
set through the SDK, and runs scenarios (tests/integration/ds_query_client.py)
inside real WSGI requests wrapped by the SDK's wrap_wsgi_app.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, ROOT

APP = "dev~querytest"
CZ_APISERVER = os.path.join(BIN, "cz-apiserver")
CZ_INDEXES = os.path.join(BIN, "cz-indexes")
CLIENT = os.path.join(ROOT, "tests", "integration", "ds_query_client.py")


class ApiServer:
    def __init__(self, home):
        self.home = home
        self.log = open(os.path.join(home, "apiserver.log"), "wb")
        self.proc = subprocess.Popen([CZ_APISERVER, "--home", home, "--port", "0", "--app", APP],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("port="), f"cz-apiserver printed {line!r}"
        self.port = int(line.strip().split("=", 1)[1])
        p = subprocess.run([CZ_APISERVER, "--home", home, "--mint-ticket", APP, "--ttl", "600"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        self.ticket = p.stdout.strip()

    def run(self, *scenarios):
        env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(self.port), GAE_APPLICATION=APP)
        p = subprocess.run([sys.executable, "-W", "ignore", CLIENT, self.ticket, *scenarios],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        return out

    def ok(self, scenario):
        r = self.run(scenario)[scenario]
        assert "ok" in r, r
        return r["ok"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def server(cz_home):
    s = ApiServer(cz_home)
    assert s.ok("setup") is True
    yield s
    s.stop()


def test_filters(server):
    r = server.ok("filters")
    assert r["eq"] == [3, 8, 13, 18, 23, 28]
    assert r["two_eq"] == [2, 12, 22]
    assert r["range"] == [21, 22, 23, 24]
    assert r["in"] == [1, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 29]
    assert r["ne"] == 24
    assert r["key_range"] == [26, 27, 28, 29, 30]
    assert r["repeated"] == [1, 4, 7, 10]


def test_orders(server):
    r = server.ok("orders")
    assert r["desc"] == [30, 29, 28]
    assert r["name"] == [1, 2, 3]
    assert r["eq_order"] == [26, 21, 16, 11, 6, 1]
    assert r["ineq_order"] == [4, 9, 14, 19, 24]


def test_ancestor(server):
    r = server.ok("ancestor")
    assert r["all"] == [1, 2, 3, 4, 5]
    assert r["ordered"] == [5, 4, 3, 2, 1]
    assert r["filtered"] == [3]
    assert r["kindless"] == 5


def test_projection_and_distinct(server):
    r = server.ok("projection")
    assert r["ages"] == [0, 0, 0, 0, 0, 0]
    assert r["distinct"] == [0, 1, 2, 3, 4]
    assert r["both"] == [[0, "p05"], [0, "p10"], [0, "p15"]]


def test_cursors_across_batches(server):
    r = server.ok("cursors")
    assert r["seen"] == list(range(1, 31))
    assert r["pages"] == 5
    assert r["batched"] == list(range(2, 31, 2))
    assert r["first"] == [2, 7]
    assert r["rest"] == [12, 17, 22, 27]
    assert r["fwd"] == [1, 2, 3, 4]
    assert r["back"] == [4, 3, 2, 1]
    assert r["ties_fwd"] == [5, 10, 15, 20]
    assert r["ties_back"] == [20, 15, 10, 5]


def test_counts_and_keys_only(server):
    r = server.ok("counts")
    assert r["all"] == 30
    assert r["eq"] == 6
    assert r["limited"] == 7
    assert r["ineq"] == 11
    assert r["keys"] == [4, 9, 14, 19, 24, 29]


def test_metadata(server):
    r = server.ok("metadata")
    assert r["kinds"] == ["Book", "Member", "Person"]
    assert r["namespaces"] == ["", "other"]
    assert r["props"] == ["age", "name", "score", "tags"]
    assert r["reps"] == {"age": ["INT64"], "name": ["STRING"], "score": ["DOUBLE"], "tags": ["STRING"]}


def test_db_api(server):
    r = server.ok("db")
    assert r["filtered"] == ["b2", "b3", "b4", "b5"]
    assert r["gql"] == ["title 3", "title 2", "title 1"]
    assert r["count"] == 5
    assert r["keys"] == ["b5", "b4"]


def test_need_index_when_required(server, tmp_path):
    p = subprocess.run([CZ_INDEXES, "--home", server.home, "--app", APP, "--require-indexes"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = server.run("need_index")["need_index"]
    assert r.get("error") == "NeedIndexError", r
    # The server names the index itself (the SDK then appends its own suggestion).
    assert "The following index is the minimum index required:\n- kind: Person\n" in r["message"], r
    assert "direction: desc" in r["message"]
    # Declaring it in index.yaml builds it; the same query then works.
    (tmp_path / "index.yaml").write_text(
        "indexes:\n- kind: Person\n  properties:\n  - name: age\n  - name: score\n    direction: desc\n")
    p = subprocess.run([CZ_INDEXES, "--home", server.home, "--app", APP, "--require-indexes",
                        "--app-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert server.ok("need_index") == [27, 22, 17, 12, 7, 2]


IDX_APP = '''
from google.appengine.api import wrap_wsgi_app
from google.appengine.ext import ndb


class Note(ndb.Model):
    owner = ndb.StringProperty()
    rank = ndb.IntegerProperty()
    size = ndb.IntegerProperty()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    try:
        if path == "/put":
            ndb.put_multi([Note(id=i, owner="a" if i % 2 else "b", rank=i, size=10 - i) for i in range(1, 9)])
            body = "ok"
        elif path == "/declared":
            body = ",".join(str(n.key.id()) for n in Note.query(Note.owner == "a").order(-Note.rank))
        elif path == "/undeclared":
            body = ",".join(str(n.key.id()) for n in Note.query(Note.owner == "a").order(Note.size))
        else:
            body = "?"
    except Exception as e:
        body = "%s: %s" % (type(e).__name__, e)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


app = wrap_wsgi_app(app)
'''


def test_index_yaml_of_a_served_app(cz_env, tmp_path):
    """`cyclozzo --start application` builds the app's index.yaml indexes; in
    required-index mode (set with cz-indexes) other composite queries fail."""
    import requests
    from conftest import cz, free_port
    d = tmp_path / "idxapp"
    d.mkdir()
    (d / "main.py").write_text(IDX_APP)
    (d / "app.yaml").write_text("runtime: python311\n")
    (d / "requirements.txt").write_text("appengine-python-standard==3.1.0\n")
    (d / "index.yaml").write_text(
        "indexes:\n- kind: Note\n  properties:\n  - name: owner\n  - name: rank\n    direction: desc\n")
    p = subprocess.run([CZ_INDEXES, "--home", cz_env["CYCLOZZO_HOME"], "--app", "dev~idxapp", "--require-indexes"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    port = free_port()
    cz("--start", "application", "--dir", str(d), "--port", str(port), env=cz_env, timeout=600)
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/put", timeout=60).text == "ok"
        assert requests.get(base + "/declared", timeout=60).text == "7,5,3,1"
        r = requests.get(base + "/undeclared", timeout=60).text
        assert r.startswith("NeedIndexError") and "- name: size" in r, r
    finally:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
