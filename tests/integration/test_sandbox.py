"""The instance sandbox, attacked from inside.

An adversarial app ("evil") gets one handler per escape attempt; each must be
refused or contained. A second app ("victim", from another directory) is
polled in a thread the whole time and must answer every request. Attempts
that kill the evil instance (memory) must leave a sandbox line in its log.
Runs as root (the sandbox needs it); see docs/sandbox.md.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, cz, free_port, wait_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

EVIL = r'''
import ctypes, errno, json, os, signal, socket, time

libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    """Runs one attack: {"escaped": bool, "err": "..."}; escaped means it worked."""
    try:
        detail = fn()
        return {"escaped": True, "detail": repr(detail)[:200]}
    except BaseException as e:
        return {"escaped": False, "err": type(e).__name__ + ": " + str(e)}

def cfail(name, rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, name + ": " + os.strerror(e))
    return rc

def read(path):
    with open(path, "rb") as f:
        return f.read(64)

def write(path):
    with open(path, "w") as f:
        f.write("pwned")
    return path

def fill_tmp():
    written = 0
    try:
        with open("/tmp/fill", "wb") as f:
            chunk = b"x" * (1 << 20)
            while written < (1 << 30):
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError as e:
        os.unlink("/tmp/fill")
        raise OSError(e.errno, "stopped after %d MB: %s" % (written >> 20, os.strerror(e.errno)))
    return written

def fork_bomb():
    kids = []
    try:
        for _ in range(3000):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
    except OSError as e:
        err = e
    else:
        err = None
    for k in kids:
        os.kill(k, signal.SIGKILL)
    for k in kids:
        os.waitpid(k, 0)
    if err is None:
        return len(kids)
    raise OSError(err.errno, "forked %d before: %s" % (len(kids), err))

def eat_memory():
    hog = []
    for _ in range(64):                     # up to 2 GiB, touched
        hog.append(b"m" * (32 << 20))
    return len(hog)

def ptrace():
    return cfail("ptrace", libc.ptrace(16, 1, None, None))     # PTRACE_ATTACH init

def mount():
    return cfail("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))

def unshare():
    return cfail("unshare", libc.unshare(0x10000000 | 0x00020000))   # CLONE_NEWUSER|CLONE_NEWNS

def raw_socket():
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

def packet_socket():
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)

def setuid():
    os.setuid(0)
    return os.getuid()

def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    arg = q.get("arg", "")
    if path == "/ping":
        out = {"ok": True}
    elif path == "/whoami":
        out = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(), "pid": os.getpid(),
               "root": sorted(os.listdir("/")), "etc": sorted(os.listdir("/etc")),
               "dev": sorted(os.listdir("/dev")), "hostname": socket.gethostname(),
               "caps": [l for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"))],
               "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    elif path == "/read":
        out = attempt(lambda: read(arg))
    elif path == "/list":
        out = attempt(lambda: os.listdir(arg))
    elif path == "/write":
        out = attempt(lambda: write(arg))
    elif path == "/kill":
        out = attempt(lambda: os.kill(int(arg), signal.SIGKILL))
    else:
        fn = {"/filltmp": fill_tmp, "/forkbomb": fork_bomb, "/memory": eat_memory, "/ptrace": ptrace,
              "/mount": mount, "/unshare": unshare, "/rawsock": raw_socket, "/packet": packet_socket,
              "/setuid": setuid}.get(path)
        if fn is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such attack"]
        out = attempt(fn)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
'''

VICTIM = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"victim ok"]
'''


def get(port, path, timeout=60):
    """(status, body) of GET path; status 0 when the connection failed."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
        return 0, str(e).encode()


def attack(port, path):
    st, body = get(port, path)
    assert st == 200, (path, st, body)
    return json.loads(body)


def daemon_pid(home, port):
    out = subprocess.run([os.path.join(BIN, "cyclozzo"), "--status"], env={**os.environ, "CYCLOZZO_HOME": home},
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if re.search(rf"\b{port}\b", line):
            nums = [int(x) for x in re.findall(r"\b\d+\b", line) if int(x) != port]
            for n in nums:
                if os.path.exists(f"/proc/{n}") and "cyclozzo" in open(f"/proc/{n}/cmdline", "rb").read().decode(errors="replace"):
                    return n
    raise AssertionError(f"no daemon for port {port} in:\n{out}")


def children_of(pid):
    kids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(p))
    return kids


def uid_processes(uid):
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:") and int(line.split()[1]) == uid:
                        found.append(int(p))
        except OSError:
            pass
    return found


class Poller(threading.Thread):
    """Requests the victim every 50 ms; records every failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.ok, self.failures = port, 0, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            st, body = get(self.port, "/", timeout=10)
            if st == 200 and body == b"victim ok":
                self.ok += 1
            else:
                self.failures.append((time.time(), st, body[:200]))
            time.sleep(0.05)


@pytest.fixture
def apps(tmp_path, cz_env, cz_home):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "app.yaml").write_text("runtime: python311\ninstance_class: F1\n")
    (evil / "main.py").write_text(EVIL)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "app.yaml").write_text("runtime: python311\n")
    (victim / "main.py").write_text(VICTIM)
    (victim / "secret.txt").write_text("victim's secret\n")
    pe, pv = free_port(), free_port()
    cz("--start", "application", "--dir", str(victim), "--port", str(pv), env=cz_env)
    try:
        cz("--start", "application", "--dir", str(evil), "--port", str(pe), env=cz_env)
    except BaseException:
        cz("--stop", "application", "--port", str(pv), env=cz_env, check=False)
        raise
    yield {"evil": evil, "victim": victim, "pe": pe, "pv": pv, "home": cz_home, "env": cz_env}
    cz("--stop", "application", "--port", str(pe), env=cz_env, check=False)
    cz("--stop", "application", "--port", str(pv), env=cz_env, check=False)


def evil_log(a):
    with open(os.path.join(a["home"], "logs", f"evil-{a['pe']}.log"), errors="replace") as f:
        return f.read()


def wait_serving(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        st, _ = get(port, "/ping", timeout=5)
        if st == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port} did not serve again within {timeout}s")


def assert_killed_for_memory(a, st, body):
    """The request died with its instance; the log says why; it serves again."""
    assert st in (0, 502, 503), (st, body)
    pattern = (r'comp=sandbox app=evil instance=1 .*instance killed for breaking a sandbox rule.* '
               r'rule=memory reason="the instance went over its memory limit of 384 MB')
    seen = a.setdefault("kills_seen", 0)
    end = time.time() + 10
    while len(re.findall(pattern, evil_log(a))) <= seen and time.time() < end:
        time.sleep(0.2)
    log = evil_log(a)
    assert len(re.findall(pattern, log)) == seen + 1, log[-3000:]
    a["kills_seen"] = seen + 1
    wait_serving(a["pe"])


def test_escapes_are_refused_or_contained(apps):
    a = apps
    pe, pv, home = a["pe"], a["pv"], a["home"]
    poller = Poller(pv)
    poller.start()
    try:
        who = attack(pe, "/whoami")
        assert who["uid"] != 0 and who["euid"] != 0 and who["gid"] != 0, who
        assert who["pid"] == 2, who                  # its own PID namespace, under the sandbox's init
        assert max(who["procs"]) < 100, who          # sees only its own processes
        assert "root" not in who["root"] and "home" not in who["root"], who["root"]
        assert "shadow" not in who["etc"] and "passwd" in who["etc"], who["etc"]
        assert sorted(who["dev"]) == ["fd", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"]
        assert who["hostname"] == "evil"
        caps = "".join(who["caps"])
        assert re.search(r"CapEff:\s*0+\n", caps) and re.search(r"CapBnd:\s*0+\n", caps), caps
        assert re.search(r"NoNewPrivs:\s*1", caps) and re.search(r"Seccomp:\s*2", caps), caps

        # Files of the host, of the platform and of other apps.
        assert os.path.exists("/etc/shadow")
        secret = os.path.join(home, "secrets", "ticket.key")
        assert os.path.exists(secret)
        other = str(a["victim"] / "secret.txt")
        for path in ["/etc/shadow", other, str(a["victim"] / "main.py"), secret, "/root/.bashrc",
                     os.path.join(home, "logs", f"victim-{pv}.log"), f"/proc/1/root/etc/shadow"]:
            r = attack(pe, "/read?arg=" + path)
            assert not r["escaped"], (path, r)
        for path in [os.path.join(home, "secrets"), os.path.join(home, "datastore"), str(a["victim"]), "/root",
                     os.path.join(home, "logs"), os.path.join(home, "run", f"victim-{pv}")]:
            r = attack(pe, "/list?arg=" + path)
            assert not r["escaped"], (path, r)
        # Of CYCLOZZO_HOME only the path to its own socket directory exists.
        for path, seen in [(home, ["run"]), (os.path.join(home, "run"), [f"evil-{pe}"]),
                           (os.path.join(home, "run", f"evil-{pe}"), ["i1"])]:
            r = attack(pe, "/list?arg=" + path)
            assert r["escaped"] and r["detail"] == repr(seen), (path, r)
        # Writes outside /tmp.
        for path in [str(a["evil"] / "x.py"), "/etc/x", "/usr/x", "/x", str(a["victim"] / "main.py")]:
            r = attack(pe, "/write?arg=" + path)
            assert not r["escaped"], (path, r)
            assert "Read-only" in r["err"] or "No such file" in r["err"] or "Permission" in r["err"], r
        assert "pwned" not in (a["victim"] / "main.py").read_text()
        assert not (a["evil"] / "x.py").exists()
        r = attack(pe, "/write?arg=/tmp/ok")
        assert r["escaped"], r                       # /tmp itself is writable

        # /tmp is size-limited.
        r = attack(pe, "/filltmp")
        assert not r["escaped"] and "No space left" in r["err"], r
        mb = int(re.search(r"after (\d+) MB", r["err"]).group(1))
        assert 64 <= mb <= 128, r

        # Fork bomb: stopped at the process limit, and the instance keeps
        # serving; or, where every fork is large (sanitizer builds), stopped
        # by the memory limit first, killed and logged.
        st, body = get(pe, "/forkbomb", timeout=120)
        if st == 200:
            r = json.loads(body)
            assert not r["escaped"], r
            n = int(re.search(r"forked (\d+)", r["err"]).group(1))
            assert n < 300, r
        else:
            assert_killed_for_memory(a, st, body)
        assert get(pe, "/ping")[0] == 200

        # Kernel interfaces an app never needs.
        for path in ["/ptrace", "/mount", "/unshare", "/rawsock", "/packet", "/setuid"]:
            r = attack(pe, path)
            assert not r["escaped"], (path, r)
            assert "Operation not permitted" in r["err"] or "PermissionError" in r["err"], (path, r)

        # Signals to the daemons and the other app's instance.
        vd, ed = daemon_pid(home, pv), daemon_pid(home, pe)
        vinst = children_of(vd)
        assert vinst, "the victim has an instance"
        for pid in [vd, ed, *vinst, 1]:
            r = attack(pe, f"/kill?arg={pid}")
            assert not r["escaped"] or pid in (1, 2), (pid, r)
        assert os.path.exists(f"/proc/{vd}") and os.path.exists(f"/proc/{ed}")
        assert all(os.path.exists(f"/proc/{p}") for p in vinst)

        # Memory: over F1's 384 MB the instance is killed (cgroup), or the
        # allocation fails (rlimit); either way it is logged or contained.
        st, body = get(pe, "/memory", timeout=120)
        if st == 200:
            r = json.loads(body)
            assert not r["escaped"] and "MemoryError" in r["err"], r
        else:
            assert_killed_for_memory(a, st, body)
        assert get(pe, "/ping")[0] == 200
    finally:
        poller.stop.set()
        poller.join()
    assert poller.ok > 20
    assert poller.failures == [], poller.failures

    # The daemon killed with -9: its instances (and anything they left) go too.
    uid = who["uid"]
    assert uid_processes(uid)
    os.kill(daemon_pid(home, pe), signal.SIGKILL)
    end = time.time() + 10
    while uid_processes(uid) and time.time() < end:
        time.sleep(0.1)
    assert uid_processes(uid) == []
    assert get(pv, "/")[0] == 200


def test_refused_without_root_unless_no_sandbox(tmp_path):
    home = tempfile.mkdtemp(prefix="cz-nosb-")
    os.chmod(home, 0o777)
    env = {**os.environ, "CYCLOZZO_HOME": home}
    app = tempfile.mkdtemp(prefix="cz-nosb-app-")
    os.chmod(app, 0o755)
    with open(os.path.join(app, "app.yaml"), "w") as f:
        f.write("runtime: python311\n")
    with open(os.path.join(app, "main.py"), "w") as f:
        f.write("import os\ndef app(e, s):\n    s('200 OK', [])\n    return [b'uid=%d' % os.getuid()]\n")
    for p in (app, os.path.join(app, "app.yaml"), os.path.join(app, "main.py")):
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)

    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)

    port = free_port()
    args = [os.path.join(BIN, "cyclozzo"), "--start", "application", "--dir", app, "--port", str(port)]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, preexec_fn=as_nobody)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "the sandbox needs Cyclozzo to run as root" in p.stderr and "--no-sandbox" in p.stderr, p.stderr
    p = subprocess.run(args + ["--no-sandbox"], env=env, capture_output=True, text=True, timeout=60,
                       preexec_fn=as_nobody)
    assert p.returncode == 0, (p.stdout, p.stderr)
    try:
        st, body = get(port, "/")
        assert (st, body) == (200, b"uid=65534")
    finally:
        subprocess.run([os.path.join(BIN, "cyclozzo"), "--stop", "application", "--port", str(port)], env=env,
                       capture_output=True, timeout=60, preexec_fn=as_nobody)
        subprocess.run(["rm", "-rf", home, app])


def start_ms(home, app, port):
    with open(os.path.join(home, "logs", f"{app}-{port}.log")) as f:
        m = re.findall(r'instance=1 pid=\d+ msg="ready" start_ms=(\d+)', f.read())
    return int(m[0])


def test_cold_start_with_and_without_sandbox(cz_env, cz_home):
    hello = os.path.join(os.path.dirname(BIN), "examples", "hello")
    if not os.path.isdir(hello):
        hello = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "examples", "hello")
    times = {}
    for flag in ([], ["--no-sandbox"]):
        port = free_port()
        cz("--start", "application", "--dir", hello, "--port", str(port), *flag, env=cz_env)
        try:
            assert get(port, "/")[0] == 200
            times[bool(flag)] = start_ms(cz_home, "hello", port)
        finally:
            cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
    print(f"cold start ms: sandboxed={times[False]} unsandboxed={times[True]}")
    # The target is < 300 ms; leave room for a loaded test machine.
    assert times[False] < 1000, times
