"""bin/cyclozzo-pyrt, driven directly over its Unix socket (no router).

Each test writes a small WSGI app into a temporary app directory, starts the
runtime on it with the App Engine environment the instance manager would set,
and speaks HTTP/1.1 to it with a raw socket client (so keep-alive, pipelining
and chunked framing are checked byte for byte). The SDK tests use
build/testenv (./scripts/testenv.sh) as the app's virtualenv: it holds
Google's appengine-python-standard.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import BIN, ROOT, SANITIZER_MARKS

PYRT = os.path.join(BIN, "cyclozzo-pyrt")
VENV_TOOL = os.path.join(BIN, "cyclozzo-venv")
TESTENV = os.path.join(ROOT, "build", "testenv")
PYVER = "python%d.%d" % sys.version_info[:2]


def gae_env(extra=None):
    env = dict(os.environ)
    env.update({
        "API_HOST": "127.0.0.1", "API_PORT": "1",
        "GAE_APPLICATION": "dev~guestbook", "GOOGLE_CLOUD_PROJECT": "guestbook",
        "GAE_SERVICE": "default", "GAE_VERSION": "1", "GAE_DEPLOYMENT_ID": "1.123",
        "GAE_INSTANCE": "inst-1", "GAE_ENV": "standard", "GAE_RUNTIME": "python311",
        "GAE_MEMORY_MB": "256",
    })
    env.update(extra or {})
    return env


class Runtime:
    """One bin/cyclozzo-pyrt process; stderr collected in a file."""

    def __init__(self, tmp_path, app_dir, *args, venv=None, env=None, wait=True):
        self.sock = str(tmp_path / "rt.sock")
        self.log_path = tmp_path / "rt.log"
        argv = [PYRT, "--socket", self.sock, "--app-dir", str(app_dir), *args]
        if venv:
            argv += ["--venv", venv]
        self.logf = open(self.log_path, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=gae_env(env), stdout=self.logf, stderr=self.logf)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"runtime not listening after {timeout}s:\n{self.log()}")

    def log(self):
        if not self.logf.closed:
            self.logf.flush()
        return self.log_path.read_text(errors="replace")

    def conn(self):
        return Conn(self.sock)

    def request(self, *args, **kw):
        with self.conn() as c:
            return c.request(*args, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        log = self.log_path.read_text(errors="replace")
        for mark in SANITIZER_MARKS:             # SAN builds: no sanitizer reports
            i = log.find(mark)
            assert i < 0, log[max(0, i - 200):i + 3000]


class Response:
    def __init__(self, version, status, headers, body):
        self.version, self.status, self.headers, self.body = version, status, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class Conn:
    """A raw HTTP/1.1 client over the Unix socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.s.close()

    @staticmethod
    def build(method="GET", path="/", headers=None, body=b"", version="HTTP/1.1"):
        h = {"Host": "example.com"}
        h.update(headers or {})
        if body or method in ("POST", "PUT"):
            h["Content-Length"] = str(len(body))
        head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        return head.encode("latin-1") + body

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_response(self, head=False):
        version, status, _ = self._line().decode().split(" ", 2)
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers.append((k.strip(), v.strip()))
        r = Response(version, int(status), headers, b"")
        if head or r.status in (204, 304):
            return r
        if (r.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            r.body = body
        elif r.header("Content-Length") is not None:
            r.body = self._take(int(r.header("Content-Length")))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            r.body, self.buf = self.buf, b""
        return r

    def request(self, method="GET", path="/", headers=None, body=b"", version="HTTP/1.1"):
        self.send(self.build(method, path, headers, body, version))
        return self.read_response(head=(method == "HEAD"))


def write_app(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text))
    return d


def tree(d):
    out = []
    for root, dirs, files in os.walk(d):
        for f in dirs + files:
            out.append(os.path.relpath(os.path.join(root, f), d))
    return sorted(out)


ECHO_APP = """
import io, json, os, sys, threading, time, logging, warnings

print('import-time-print')
warnings.warn('import-time-warning')
closed = []

class Body:
    def __init__(self, parts):
        self.parts = parts
    def __iter__(self):
        return iter(self.parts)
    def close(self):
        closed.append(1)

def app(environ, start_response):
    path = environ['PATH_INFO']
    if path.startswith('/echo'):
        body = environ['wsgi.input'].read()
        keys = ['REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_NAME',
                'SERVER_PORT', 'SERVER_PROTOCOL', 'REMOTE_ADDR', 'CONTENT_TYPE', 'CONTENT_LENGTH',
                'HTTP_X_FOO', 'HTTP_X_CYCLOZZO_SCRIPT', 'HTTP_X_CYCLOZZO_DEADLINE', 'HTTPS',
                'wsgi.url_scheme', 'wsgi.multithread', 'wsgi.multiprocess', 'wsgi.run_once']
        out = {k: environ.get(k) for k in keys}
        out['wsgi.version'] = list(environ['wsgi.version'])
        out['body'] = body.decode('latin-1')
        out['cwd'] = os.getcwd()
        out['sys.path0'] = sys.path[0]
        out['dont_write_bytecode'] = sys.dont_write_bytecode
        environ['wsgi.errors'].write('errors-stream-line\\n')
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [json.dumps(out).encode()]
    if path == '/gen':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def g():
            for i in range(5):
                yield b'part%d;' % i
        return g()
    if path == '/write':
        write = start_response('200 OK', [('Content-Type', 'text/plain')])
        write(b'written-')
        return [b'returned']
    if path == '/closing':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return Body([b'a', b'b'])
    if path == '/closed':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [str(len(closed)).encode()]
    if path == '/boom':
        logging.info('about to fail')
        raise RuntimeError('secret-boom-detail')
    if path == '/excinfo':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        try:
            raise ValueError('late')
        except ValueError:
            start_response('502 Bad Gateway', [('Content-Type', 'text/plain')], sys.exc_info())
        return [b'replaced']
    if path == '/log':
        logging.warning('log-marker-%s', environ['QUERY_STRING'])
        print('print-marker')
        start_response('204 No Content', [])
        return []
    if path == '/sleep':
        time.sleep(float(environ['QUERY_STRING']))
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'slept']
    if path == '/big':
        n = int(environ['QUERY_STRING'])
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [bytes(range(256)) * (n // 256)]
    if path == '/biggen':
        n = int(environ['QUERY_STRING'])
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return (bytes(range(256)) * 256 for _ in range(n))
    if path == '/short':
        start_response('200 OK', [('Content-Length', '10')])
        return [b'12345']
    if path == '/long':
        start_response('200 OK', [('Content-Length', '3')])
        return [b'12345']
    if path == '/import':
        import helper
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [helper.VALUE.encode()]
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'nope']

def other(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'other app']
"""


@pytest.fixture
def echo(tmp_path):
    d = write_app(tmp_path / "app", {"main.py": ECHO_APP, "helper.py": "VALUE = 'helped'\n"})
    rt = Runtime(tmp_path, d, "--threads", "4")
    yield rt
    rt.stop()


def test_wsgi_environ_and_body(echo):
    r = echo.request("POST", "/echo/a%20b/c?x=1&y=%20", body=b"hello body",
                     headers={"Host": "example.com:8080", "Content-Type": "text/plain",
                              "X-Foo": "bar", "X-AppEngine-User-IP": "10.1.2.3",
                              "X-AppEngine-Https": "on", "X-Cyclozzo-Script": "auto",
                              "X-Cyclozzo-Deadline": "30"})
    assert r.status == 200 and r.version == "HTTP/1.1"
    assert r.header("Content-Length") == str(len(r.body))
    e = r.json()
    assert e["REQUEST_METHOD"] == "POST"
    assert e["SCRIPT_NAME"] == ""
    assert e["PATH_INFO"] == "/echo/a b/c"
    assert e["QUERY_STRING"] == "x=1&y=%20"
    assert (e["SERVER_NAME"], e["SERVER_PORT"]) == ("example.com", "8080")
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["REMOTE_ADDR"] == "10.1.2.3"
    assert e["CONTENT_TYPE"] == "text/plain" and e["CONTENT_LENGTH"] == "10"
    assert e["HTTP_X_FOO"] == "bar"
    assert e["HTTP_X_CYCLOZZO_SCRIPT"] is None and e["HTTP_X_CYCLOZZO_DEADLINE"] is None
    assert e["wsgi.url_scheme"] == "https" and e["HTTPS"] == "on"
    assert e["wsgi.multithread"] is True and e["wsgi.multiprocess"] is False
    assert e["wsgi.run_once"] is False and e["wsgi.version"] == [1, 0]
    assert e["body"] == "hello body"
    assert e["cwd"] == os.path.realpath(echo.proc.args[4]) and e["sys.path0"] == e["cwd"]
    assert e["dont_write_bytecode"] is True

    r = echo.request("GET", "/echo", headers={"X-Forwarded-For": "192.0.2.7, 10.0.0.1"})
    e = r.json()
    assert e["REMOTE_ADDR"] == "192.0.2.7"
    assert (e["SERVER_NAME"], e["SERVER_PORT"]) == ("example.com", "80")
    assert e["wsgi.url_scheme"] == "http"
    assert "errors-stream-line" in echo.log()


def test_write_callable_close_and_exc_info(echo):
    r = echo.request("GET", "/write")
    assert r.status == 200 and r.body == b"written-returned"
    with echo.conn() as c:
        assert c.request("GET", "/closing").body == b"ab"
        assert c.request("GET", "/closed").body == b"1"
    r = echo.request("GET", "/excinfo")
    assert r.status == 502 and r.body == b"replaced"


def test_error_is_500_with_traceback_logged_not_sent(echo):
    with echo.conn() as c:
        r = c.request("GET", "/boom", headers={"X-AppEngine-Request-Log-Id": "rid-boom-1"})
        assert r.status == 500
        assert b"secret-boom-detail" not in r.body and b"Traceback" not in r.body
        # the connection survives a failed request
        assert c.request("GET", "/write").body == b"written-returned"
    log = echo.log()
    lines = [l for l in log.splitlines() if 'rid="rid-boom-1"' in l]
    assert any("Traceback" in l for l in lines)
    assert any("secret-boom-detail" in l for l in lines)
    assert any("about to fail" in l for l in lines)


def test_head_and_no_body_statuses(echo):
    with echo.conn() as c:
        r = c.request("HEAD", "/closing")
        assert r.status == 200 and r.header("Content-Length") == "2"
        r = c.request("HEAD", "/gen")        # unknown length: counted, no body sent
        assert r.header("Content-Length") == str(len(b"part0;part1;part2;part3;part4;"))
        r = c.request("GET", "/log?x")
        assert r.status == 204 and r.header("Content-Length") is None
        assert r.header("Transfer-Encoding") is None
        assert c.request("GET", "/write").body == b"written-returned"   # framing stayed in sync


def test_logging_is_captured_per_request(echo):
    echo.request("GET", "/log?abc", headers={"X-AppEngine-Request-Log-Id": "req-log-77"})
    log = echo.log()
    line = [l for l in log.splitlines() if "log-marker-abc" in l]
    assert line and 'rid="req-log-77"' in line[0] and "level=warn" in line[0]
    assert 'app="dev~guestbook"' in line[0]
    assert any("print-marker" in l and 'rid="req-log-77"' in l for l in log.splitlines())
    # import-time output is logged too (outside any request: rid "-")
    assert any('rid="-"' in l and 'msg="import-time-print"' in l for l in log.splitlines())
    assert any('logger="py.warnings"' in l and "import-time-warning" in l for l in log.splitlines())


def test_keepalive_and_pipelining(echo):
    with echo.conn() as c:
        batch = b"".join(Conn.build("GET", p) for p in ("/closing", "/gen", "/write", "/echo?q"))
        c.send(batch)
        bodies = [c.read_response().body for _ in range(4)]
        assert bodies[0] == b"ab"
        assert bodies[1] == b"part0;part1;part2;part3;part4;"
        assert bodies[2] == b"written-returned"
        assert json.loads(bodies[3])["QUERY_STRING"] == "q"
        # a request split across writes, body arriving late
        req = Conn.build("POST", "/echo", body=b"0123456789" * 1000)
        c.send(req[:30])
        time.sleep(0.1)
        c.send(req[30:5000])
        time.sleep(0.1)
        c.send(req[5000:])
        assert c.read_response().json()["body"] == "0123456789" * 1000
        # Connection: close is honoured
        r = c.request("GET", "/closing", headers={"Connection": "close"})
        assert r.header("Connection") == "close"
        with pytest.raises((EOFError, OSError)):
            c.request("GET", "/closing")


def test_chunked_and_length_framing(echo):
    with echo.conn() as c:
        r = c.request("GET", "/gen")
        assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
        assert r.body == b"part0;part1;part2;part3;part4;"
        r = c.request("GET", "/closing")        # list-like with unknown length: chunked too
        assert r.body == b"ab"
        r = c.request("GET", "/echo")
        assert r.header("Content-Length") == str(len(r.body))
    with echo.conn() as c:                       # HTTP/1.0: no chunked, close ends the body
        r = c.request("GET", "/gen", version="HTTP/1.0")
        assert r.header("Transfer-Encoding") is None
        assert r.body == b"part0;part1;part2;part3;part4;"


def test_large_bodies_and_content_length_mismatch(echo):
    with echo.conn() as c:
        r = c.request("GET", "/big?3000000")
        assert r.header("Content-Length") == str(3000000 // 256 * 256)
        assert r.body == bytes(range(256)) * (3000000 // 256)
        r = c.request("GET", "/biggen?40")
        assert r.header("Transfer-Encoding") == "chunked" and r.body == bytes(range(256)) * 256 * 40
        body = os.urandom(2_000_000)
        r = c.request("POST", "/echo", body=body)
        assert r.json()["body"].encode("latin-1") == body
        r = c.request("GET", "/long")            # never more than the declared length
        assert r.body == b"123" and r.header("Connection") == "close"
    with echo.conn() as c:
        c.send(Conn.build("GET", "/short"))     # fewer bytes: the connection closes
        with pytest.raises(EOFError):
            c.read_response()


def test_scripts_are_imported_once_and_cached(echo):
    r = echo.request("GET", "/", headers={"X-Cyclozzo-Script": "main.other"})
    assert r.body == b"other app"
    r = echo.request("GET", "/", headers={"X-Cyclozzo-Script": "nosuchmod.app"})
    assert r.status == 500
    assert "No module named 'nosuchmod'" in echo.log()
    assert echo.request("GET", "/import").body == b"helped"


def timed_parallel(rt, n, path):
    results = [None] * n

    def one(i):
        results[i] = rt.request("GET", path).status

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, results


def test_threadsafe_requests_overlap(echo):
    elapsed, statuses = timed_parallel(echo, 4, "/sleep?0.6")
    assert statuses == [200] * 4
    assert elapsed < 1.5, f"4 x 0.6 s requests took {elapsed:.2f} s with 4 threads"


def test_not_threadsafe_runs_one_at_a_time(tmp_path):
    d = write_app(tmp_path / "app", {"main.py": """
        import threading, time
        lock = threading.Lock()
        state = {'now': 0, 'max': 0}
        def app(environ, start_response):
            with lock:
                state['now'] += 1
                state['max'] = max(state['max'], state['now'])
            time.sleep(0.3)
            with lock:
                state['now'] -= 1
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [str(state['max']).encode()]
    """})
    rt = Runtime(tmp_path, d, "--threads", "8", "--threadsafe", "0")
    try:
        elapsed, statuses = timed_parallel(rt, 3, "/")
        assert statuses == [200] * 3
        assert elapsed >= 0.85, f"3 x 0.3 s requests took only {elapsed:.2f} s without threadsafe"
        assert rt.request("GET", "/").body == b"1"
    finally:
        rt.stop()


DEADLINE_APP = """
import time, os
try:
    from google.appengine.runtime import DeadlineExceededError
except ImportError:
    from _cyclozzo_pyrt import DeadlineExceededError

def app(environ, start_response):
    t0 = time.monotonic()
    try:
        while True:
            time.sleep(0.02)
    except DeadlineExceededError as e:
        if environ['QUERY_STRING'] == 'stubborn':
            while True:
                time.sleep(0.02)
        start_response('503 Service Unavailable', [('Content-Type', 'text/plain')])
        return [('%s.%s after %.2f' % (type(e).__module__, type(e).__name__,
                                        time.monotonic() - t0)).encode()]
"""


@pytest.mark.parametrize("with_sdk", [False, True])
def test_deadline_raises_in_handler_then_exits_if_ignored(tmp_path, with_sdk):
    if with_sdk and not os.path.isdir(TESTENV):
        pytest.skip("build/testenv missing: run ./scripts/testenv.sh")
    d = write_app(tmp_path / "app", {"main.py": DEADLINE_APP})
    rt = Runtime(tmp_path, d, "--grace", "1", venv=TESTENV if with_sdk else None)
    try:
        r = rt.request("GET", "/", headers={"X-Cyclozzo-Deadline": "0.5"})
        assert r.status == 503
        cls, _, secs = r.body.decode().partition(" after ")
        want = "google.appengine.runtime" if with_sdk else "_cyclozzo_pyrt"
        assert cls == want + ".DeadlineExceededError"
        assert 0.45 <= float(secs) < 1.5
        assert rt.proc.poll() is None

        with rt.conn() as c:
            c.send(Conn.build("GET", "/?stubborn", headers={"X-Cyclozzo-Deadline": "0.3"}))
            with pytest.raises((EOFError, OSError)):
                c.read_response()
        assert rt.proc.wait(10) == 3
        assert "request still running after its deadline" in rt.log()
    finally:
        rt.stop()


def test_import_error_fails_start(tmp_path):
    d = write_app(tmp_path / "app", {"main.py": "import os\nraise ImportError('no-such-thing-here')\n"})
    rt = Runtime(tmp_path, d, wait=False)
    try:
        assert rt.proc.wait(20) == 1
        log = rt.log()
        assert "Traceback (most recent call last)" in log
        assert "ImportError: no-such-thing-here" in log
        assert not os.path.exists(rt.sock)
    finally:
        rt.stop()
    d2 = write_app(tmp_path / "app2", {"main.py": "x = 1\n"})
    rt = Runtime(tmp_path, d2, "--entry", "main:app", wait=False)
    try:
        assert rt.proc.wait(20) == 1
        assert "has no attribute 'app'" in rt.log()
    finally:
        rt.stop()


def test_app_dir_untouched_and_sigterm(echo):
    app_dir = echo.proc.args[4]
    before = tree(app_dir)
    assert echo.request("GET", "/import").body == b"helped"
    assert tree(app_dir) == before, "the runtime wrote into the app directory"
    assert not any("__pycache__" in p for p in tree(app_dir))
    echo.proc.send_signal(signal.SIGTERM)
    assert echo.proc.wait(10) == 0
    assert not os.path.exists(echo.sock)


SDK_APP = """
import json, os, time
from google.appengine.api import app_identity, users, namespace_manager, wrap_wsgi_app

def raw(environ, start_response):
    u = users.get_current_user()
    first = u and u.email()
    time.sleep(float(environ.get('QUERY_STRING') or 0))   # overlap with other requests
    u = users.get_current_user()
    out = {
        'email': u and u.email(), 'first': first, 'user_id': u and u.user_id(),
        'nickname': u and u.nickname(), 'admin': users.is_current_user_admin(),
        'app_id': app_identity.get_application_id(),
        'hostname': app_identity.get_default_version_hostname(),
        'ticket': os.environ.get('HTTP_X_APPENGINE_API_TICKET'),
        'log_id': os.environ.get('REQUEST_LOG_ID'),
        'https': os.environ.get('HTTPS'),
        'auth_domain': os.environ.get('AUTH_DOMAIN'),
        'namespace': namespace_manager.get_namespace(),
        'gae_service': os.environ.get('GAE_SERVICE'),
    }
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(out).encode()]

wrapped = wrap_wsgi_app(raw)
"""


@pytest.fixture
def sdk_rt(tmp_path):
    if not os.path.isdir(TESTENV):
        pytest.skip("build/testenv missing: run ./scripts/testenv.sh")
    d = write_app(tmp_path / "app", {"main.py": SDK_APP, "lazy.py": """
        from google.appengine.api import wrap_wsgi_app
        from main import raw
        app = wrap_wsgi_app(raw)
    """})
    rt = Runtime(tmp_path, d, "--entry", "main:raw", "--threads", "4", venv=TESTENV)
    yield rt
    rt.stop()


@pytest.mark.parametrize("script", ["main.raw", "main.wrapped"])
def test_sdk_sees_request_environment(sdk_rt, script):
    hdrs = {"X-Cyclozzo-Script": script, "X-AppEngine-User-Email": "alice@example.com",
            "X-AppEngine-User-Id": "1234", "X-AppEngine-User-Is-Admin": "1",
            "X-AppEngine-Default-Version-Hostname": "guestbook.localhost:8080",
            "X-AppEngine-Api-Ticket": "ticket-abc", "X-AppEngine-Request-Log-Id": "log-1",
            "X-AppEngine-Https": "on"}
    e = sdk_rt.request("GET", "/", headers=hdrs).json()
    assert e["email"] == "alice@example.com" and e["user_id"] == "1234"
    assert e["nickname"] == "alice@example.com" and e["admin"] is True
    assert e["app_id"] == "guestbook"
    assert e["hostname"] == "guestbook.localhost:8080"
    assert e["ticket"] == "ticket-abc" and e["log_id"] == "log-1"
    assert e["https"] == "on" and e["auth_domain"] == "gmail.com"
    assert e["gae_service"] == "default" and e["namespace"] == ""

    # the next request on the same runtime has no user: nothing leaks
    e = sdk_rt.request("GET", "/", headers={"X-Cyclozzo-Script": script}).json()
    assert e["email"] is None and e["admin"] is False and e["ticket"] is None
    assert e["app_id"] == "guestbook"


def test_sdk_lazily_imported_script_keeps_no_request_state(sdk_rt):
    # lazy.py calls wrap_wsgi_app (which snapshots os.environ) while it is
    # imported by a request of a signed-in user: later requests must not
    # inherit that user
    hdrs = {"X-Cyclozzo-Script": "lazy.app", "X-AppEngine-User-Email": "eve@example.com",
            "X-AppEngine-Api-Ticket": "t-eve"}
    e = sdk_rt.request("GET", "/", headers=hdrs).json()
    assert e["email"] == "eve@example.com" and e["ticket"] == "t-eve"
    e = sdk_rt.request("GET", "/", headers={"X-Cyclozzo-Script": "lazy.app"}).json()
    assert e["email"] is None and e["ticket"] is None and e["app_id"] == "guestbook"
    e = sdk_rt.request("GET", "/", headers={"X-Cyclozzo-Script": "main.raw"}).json()
    assert e["email"] is None and e["app_id"] == "guestbook"


@pytest.mark.parametrize("script", ["main.raw", "main.wrapped", "lazy.app"])
def test_sdk_environment_is_per_thread(sdk_rt, script):
    results = {}

    def one(i):
        results[i] = sdk_rt.request("GET", "/?0.4", headers={
            "X-Cyclozzo-Script": script, "X-AppEngine-User-Email": f"user{i}@example.com",
            "X-AppEngine-User-Id": str(i), "X-AppEngine-Api-Ticket": f"t{i}"}).json()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(4):
        assert results[i]["first"] == results[i]["email"] == f"user{i}@example.com"
        assert results[i]["ticket"] == f"t{i}" and results[i]["user_id"] == str(i)


def test_venv_builder(tmp_path, cz_env):
    app = write_app(tmp_path / "vapp", {"requirements.txt": "six==1.17.0\n", "main.py": """
        import six
        def app(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [six.__version__.encode()]
    """})
    before = tree(app)
    p = subprocess.run([VENV_TOOL, str(app)], env=cz_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    venv = p.stdout.strip()
    digest = hashlib.sha256(b"six==1.17.0\n").hexdigest()
    assert venv == os.path.join(cz_env["CYCLOZZO_HOME"], "venvs", digest)
    assert "Collecting six==1.17.0" in p.stderr and "Successfully installed six-1.17.0" in p.stderr
    assert os.path.isdir(os.path.join(venv, "lib", PYVER, "site-packages", "six-1.17.0.dist-info"))
    assert [n for n in os.listdir(os.path.dirname(venv))] == [digest]   # no build leftovers
    assert tree(app) == before

    t0 = time.monotonic()
    p2 = subprocess.run([VENV_TOOL, str(app)], env=cz_env, capture_output=True, text=True, timeout=60)
    assert p2.returncode == 0 and p2.stdout.strip() == venv
    assert "reusing virtualenv" in p2.stderr and "Collecting" not in p2.stderr
    assert time.monotonic() - t0 < 2

    rt = Runtime(tmp_path, app, venv=venv)
    try:
        assert rt.request("GET", "/").body == b"1.17.0"
    finally:
        rt.stop()
    assert tree(app) == before

    noreq = write_app(tmp_path / "noreq", {"main.py": "app = None\n"})
    p3 = subprocess.run([VENV_TOOL, str(noreq)], env=cz_env, capture_output=True, text=True, timeout=60)
    assert p3.returncode == 0 and p3.stdout == "\n"

    bad = write_app(tmp_path / "bad", {"requirements.txt": "this-package-does-not-exist-cyclozzo==0.0.1\n"})
    p4 = subprocess.run([VENV_TOOL, str(bad)], env=cz_env, capture_output=True, text=True, timeout=300)
    assert p4.returncode == 1
    assert "pip could not install" in p4.stderr
    assert [n for n in os.listdir(os.path.dirname(venv))] == [digest]   # failed build left nothing


def test_example_hello(tmp_path):
    app = os.path.join(ROOT, "examples", "hello")
    before = tree(app)
    rt = Runtime(tmp_path, app)
    try:
        r = rt.request("GET", "/", headers={"X-AppEngine-User-Email": "bob@example.com"})
        assert r.status == 200 and b"Hello, bob@example.com!" in r.body
        assert b"dev~guestbook" in r.body
        r = rt.request("GET", "/admin/x", headers={"X-Cyclozzo-Script": "main.admin",
                                                   "X-AppEngine-User-Email": "root@example.com"})
        assert r.body == b"admin area, signed in as root@example.com\n"
    finally:
        rt.stop()
    assert tree(app) == before


def test_example_guestbook_starts(tmp_path):
    if not os.path.isdir(TESTENV):
        pytest.skip("build/testenv missing: run ./scripts/testenv.sh")
    app = os.path.join(ROOT, "examples", "guestbook")
    before = tree(app)
    rt = Runtime(tmp_path, app, venv=TESTENV)
    try:
        r = rt.request("GET", "/_ah/warmup")
        assert r.status == 200 and r.body == b"warm\n"
    finally:
        rt.stop()
    assert tree(app) == before
