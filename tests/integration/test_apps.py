"""Whole apps on the Python runtime, through `cyclozzo --start application`:
the router, the instance manager and bin/cyclozzo-pyrt together."""
import concurrent.futures
import os
import shutil
import time

import pytest
import requests

from conftest import ROOT, assert_clean_logs, cz, free_port


@pytest.fixture
def started(cz_env):
    """start(appdir) -> base URL; every app started is stopped afterwards."""
    ports = []

    def start(appdir, **kw):
        port = free_port()
        p = cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=cz_env, **kw)
        ports.append(port)
        return f"http://127.0.0.1:{port}", p

    yield start
    for port in ports:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)


def test_hello_example(started, cz_env):
    base, _ = started(os.path.join(ROOT, "examples", "hello"))
    r = requests.get(base + "/")
    assert r.status_code == 200 and "Hello, world!" in r.text
    assert "dev~hello" in r.text
    r = requests.get(base + "/static/style.css")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
    r = requests.get(base + "/images/cyclozzo.svg")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
    r = requests.get(base + "/admin/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith("/_ah/login?continue=")
    assert requests.get(base + "/nothing-here").status_code == 404


WSGI_APP = '''
import os, threading, time
from google.appengine.api import wrap_wsgi_app
from google.appengine.runtime import DeadlineExceededError

calls = []

def app(environ, start_response):
    path = environ["PATH_INFO"]
    calls.append(path)
    if path == "/_ah/warmup":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"warm"]
    if path == "/calls":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [",".join(calls).encode()]
    if path == "/sleep":
        time.sleep(1.0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/exit":
        os._exit(1)
    if path == "/env":
        body = "%s|%s|%s" % (os.environ.get("GAE_APPLICATION"), environ.get("HTTP_X_APPENGINE_REQUEST_LOG_ID", ""),
                             environ.get("wsgi.multithread"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no"]
'''


@pytest.fixture
def pyapp(tmp_path):
    d = tmp_path / "pyapp"
    d.mkdir()
    (d / "main.py").write_text(WSGI_APP.replace("from google.appengine.api import wrap_wsgi_app\n", "")
                               .replace("from google.appengine.runtime import DeadlineExceededError\n", ""))
    (d / "app.yaml").write_text("runtime: python311\ninbound_services:\n- warmup\n")
    return d


def test_warmup_then_requests_threadsafe_concurrency(started, pyapp):
    base, _ = started(pyapp)
    assert requests.get(base + "/calls").text.startswith("/_ah/warmup,")
    env = requests.get(base + "/env").text.split("|")
    assert env[0] == "dev~pyapp" and len(env[1]) >= 16 and env[2] == "True"
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: requests.get(base + "/sleep").text, range(8)))
    assert results == ["slept"] * 8
    assert time.time() - t0 < 4.0      # 8 x 1 s overlapped on one threadsafe instance


def test_not_threadsafe_serialises_or_scales(started, pyapp):
    (pyapp / "app.yaml").write_text("runtime: python311\nthreadsafe: false\nmanual_scaling:\n  instances: 1\n")
    base, _ = started(pyapp)
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: requests.get(base + "/sleep").text, range(3)))
    assert results == ["slept"] * 3
    assert time.time() - t0 >= 2.9     # one at a time on the single instance


def test_crashed_instance_restarts(started, pyapp, cz_env):
    base, _ = started(pyapp)
    t0 = time.time()
    r = requests.get(base + "/exit", timeout=10)
    assert r.status_code == 502 and time.time() - t0 < 5
    deadline = time.time() + 20
    status = None
    while time.time() < deadline:
        try:
            status = requests.get(base + "/env", timeout=5).status_code
            if status == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert status == 200
    logs = os.path.join(cz_env["CYCLOZZO_HOME"], "logs", "pyapp-%s.log" % base.rsplit(":", 1)[1])
    assert "instance exited" in open(logs).read()


def test_import_error_fails_start_with_traceback(started, pyapp):
    (pyapp / "main.py").write_text("import no_such_module_anywhere\n")
    port = free_port()
    p = cz("--start", "application", "--dir", str(pyapp), "--port", str(port),
           env=dict(os.environ, CYCLOZZO_HOME=str(pyapp.parent / "h")), check=False, timeout=60)
    assert p.returncode != 0
    assert "no_such_module_anywhere" in p.stderr


def test_guestbook_starts_with_sdk_virtualenv(started, cz_env):
    """The guestbook's requirements.txt (Google's SDK from PyPI) becomes a
    cached virtualenv, with progress shown; the app directory is not written."""
    src = os.path.join(ROOT, "examples", "guestbook")
    before = sorted(os.listdir(src))
    base, p = started(src, timeout=600)
    assert "virtualenv" in p.stderr.lower() or "installing" in p.stderr.lower()
    r = requests.get(base + "/static/" + sorted(os.listdir(os.path.join(src, "static")))[0])
    assert r.status_code == 200
    assert sorted(os.listdir(src)) == before

    # Signing works end to end: ndb put, memcache, users through the SDK.
    r = requests.post(base + "/sign?guestbook_name=gb1", data={"content": "first post"}, allow_redirects=False)
    assert r.status_code in (302, 303)
    page = requests.get(base + "/?guestbook_name=gb1").text
    assert "first post" in page and "Sign in" in page

    # The greeting survives kill -9 of every Cyclozzo process.
    port = base.rsplit(":", 1)[1]
    st = cz("--status", env=cz_env).stdout
    pid = int([l.split()[2] for l in st.splitlines() if l.split()[1:2] == [port]][0])
    os.kill(pid, 9)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            requests.get(base + "/", timeout=1)
        except requests.RequestException:
            break
        time.sleep(0.1)
    cz("--start", "application", "--dir", src, "--port", port, env=cz_env, timeout=300)
    assert "first post" in requests.get(base + "/?guestbook_name=gb1").text
    assert sorted(os.listdir(src)) == before
