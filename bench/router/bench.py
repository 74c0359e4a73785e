#!/usr/bin/python3
"""bench.py - Cyclozzo's router side by side with nginx and nginx+gunicorn.

Run by hand, never in CI (see bench/README.md):

    sudo ./bench/install.sh && make
    /usr/bin/python3 bench/router/bench.py            # full comparison
    /usr/bin/python3 bench/router/bench.py --peers-only   # nginx, gunicorn alone

How it works. One generated App Engine app under build/bench/app (app.yaml
with a static_dir handler for static/1k.txt, a 1 KiB file, and a script
handler for main.py, a hello-world WSGI `app`) is served four ways at once,
each on its own loopback port:

  cyclozzo   bin/cyclozzo --start application --dir build/bench/app --port P
             (the router serves /static/1k.txt itself and proxies / to the
             Python runtime over a Unix socket)
  nginx      nginx in the foreground with a generated config: /static/ from
             the same directory, / proxied with keep-alive upstream
             connections to gunicorn on a Unix socket
  gunicorn   the same main:app, once with sync workers and once with gthread
             workers (nginx has one port for each)

Every target is checked once for the right status and body, then measured
with wrk (64 connections, a warm-up, then the measured run) RUNS times. The
runs are interleaved, target after target, round after round, so any drift
of the machine (other work, thermal, page cache) hits every target alike.
Results are the medians over the runs; req/s counts only the measured run.

CPU placement: by default (--cpus split) every server process is held to
CPU 0 and wrk (one thread) to CPU 1, so each server stack gets exactly one
core and the load generator never competes with it; --cpus shared leaves
everything unpinned with wrk -t2. The router runs as many threads as nginx
runs workers. The servers' CPU time per request is also reported: it is the
least noisy number on a shared machine. Access logs are on at both front
doors (the router always writes one; nginx's is buffered), off in gunicorn.

A server that stops answering mid-benchmark is reported with the run it died
in and the tail of its log; the other targets are still measured.

Memory: RSS (and PSS, which splits shared pages fairly between processes)
of every process of each stack, summed: the Cyclozzo processes (router and
instance), nginx master and workers, gunicorn master and workers; read once
the stacks are up and answered one request (idle), and again after the load.

Every process started here is stopped on exit, failure, Ctrl-C or SIGTERM:
servers run in their own sessions and are killed by process group, and
Cyclozzo is stopped with `cyclozzo --stop application --port P` and then any
of its processes still alive are killed by pid.
"""
import argparse
import glob
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "build", "bench")
APP = os.path.join(OUT, "app")
VENV = os.path.join(ROOT, "build", "bench-venv")
CZ_BIN = os.path.join(ROOT, "bin", "cyclozzo")
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.lua")
STATIC_PATH = "/static/1k.txt"
HELLO = b"Hello, World!"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure worth one clear sentence to the user."""


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# /proc helpers: process trees, CPU time, memory

def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def proc_stat(pid):
    """(ppid, utime+stime ticks) of pid, or None if it is gone (or a zombie:
    an orphan's zombie lingers where init does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[1]), int(rest[11]) + int(rest[12])


def descendants(roots):
    """roots plus every live process below them."""
    children = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    seen, todo = set(), [r for r in roots if proc_stat(r)]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, []))
    return seen


def exe_of(pid):
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def nthreads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def cpu_by_pid(pids):
    """{pid: utime+stime ticks} of the live pids."""
    out = {}
    for p in pids:
        st = proc_stat(p)
        if st:
            out[p] = st[1]
    return out


def mem_of(pid):
    """(rss_kib, pss_kib, anon_kib) of pid; zeros if it is gone. anon is
    RssAnon: RSS without file-backed pages (mapped files such as the request
    log store's LMDB file, which are page cache the kernel can reclaim)."""
    rss = pss = anon = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss, anon


def pin(pids, cpus):
    """Hold every thread of every pid to cpus (None: leave alone)."""
    if cpus is None:
        return
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def fetch(port, path, timeout=30.0):
    """One GET the way wrk sends it (HTTP/1.1, keep-alive: no Connection
    header); reads one response framed by Content-Length, chunked encoding or
    the close, then hangs up. Returns (status, head bytes, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        f = s.makefile("rb")
        status_line = f.readline()
        head_len = len(status_line)
        headers = {}
        while True:
            line = f.readline()
            head_len += len(line)
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 else 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                n = int(f.readline().split(b";")[0], 16)
                if n == 0:
                    break
                body += f.read(n)
                f.readline()
        elif "content-length" in headers:
            body = f.read(int(headers["content-length"]))
        else:
            body = f.read()
    return status, head_len, body


# --------------------------------------------------------------------------
# Starting and stopping what we run

class Stack:
    """A server stack we started: its processes, and how to stop them."""

    def __init__(self, name):
        self.name = name
        self.procs = []        # Popen objects, each leading its own session
        self.extra = set()     # other pids found to belong to the stack
        self.stop_cmd = None   # argv run first when stopping (cyclozzo)
        self.env = None
        self.owns = None       # pid -> still one of ours? (guards against pid reuse)
        self.adopt = None      # finds the stack's processes that left our sessions

    def pids(self):
        return descendants([p.pid for p in self.procs if p.poll() is None] + list(self.extra))

    def stop(self):
        if self.adopt:
            self.adopt()
        if self.stop_cmd:
            try:
                subprocess.run(self.stop_cmd, env=self.env, timeout=30,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as e:
                log(f"{self.name}: stop command failed ({e}); killing its processes")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in self.procs:
                try:   # the group may outlive its leader (a daemonizing parent)
                    os.killpg(p.pid, sig)
                except OSError:
                    pass
            for pid in list(self.extra):
                if self.owns and not self.owns(pid):
                    self.extra.discard(pid)   # gone, or the pid was reused
                    continue
                try:
                    os.kill(pid, sig)
                except OSError:
                    self.extra.discard(pid)
            end = time.time() + 5
            while time.time() < end:
                alive = [p for p in self.procs if p.poll() is None]
                alive += [x for x in self.extra if proc_stat(x)
                          and (not self.owns or self.owns(x))]
                if not alive:
                    return
                time.sleep(0.05)
            if sig == signal.SIGTERM:
                log(f"{self.name}: still running 5 s after SIGTERM; sending SIGKILL")


class Runner:
    def __init__(self):
        self.stacks = []
        self.current_wrk = None

    def spawn(self, stack, argv, logfile, cpus, env=None, cwd=None):
        logf = open(logfile, "ab")
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        try:
            p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=pre, env=env, cwd=cwd)
        except OSError as e:
            raise BenchError(f"cannot start {argv[0]}: {e}")
        finally:
            logf.close()
        stack.procs.append(p)
        return p

    def stop_all(self):
        for s in reversed(self.stacks):
            s.stop()
        if self.current_wrk and self.current_wrk.poll() is None:
            self.current_wrk.kill()
            self.current_wrk.wait()


def wait_ready(port, procs, logfile, what, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if port_open(port):
            return
        for p in procs:
            rc = p.poll()
            if rc not in (None, 0):
                raise BenchError(f"{what} exited with status {rc} before listening on "
                                 f"port {port}; its log is {logfile}:\n{tail(logfile)}")
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s; "
                     f"its log is {logfile}:\n{tail(logfile)}")


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# Generated files

def write_app():
    os.makedirs(os.path.join(APP, "static"), exist_ok=True)
    with open(os.path.join(APP, "app.yaml"), "w") as f:
        f.write("""\
# Generated by bench/router/bench.py: the benchmark app.
runtime: python311
instance_class: F1
automatic_scaling:
  max_instances: 1
handlers:
- url: /static
  static_dir: static
- url: /.*
  script: auto
""")
    with open(os.path.join(APP, "main.py"), "w") as f:
        f.write('''\
"""Hello-world WSGI app for the router benchmark (generated)."""
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
''')
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"   # 64 bytes
    with open(os.path.join(APP, "static", "1k.txt"), "wb") as f:
        f.write(line * 16)
    # nginx workers run as nobody: everything must be world-readable.
    for d, _, files in os.walk(APP):
        os.chmod(d, 0o755)
        for name in files:
            os.chmod(os.path.join(d, name), 0o644)
    with open(os.path.join(APP, "static", "1k.txt"), "rb") as f:
        return f.read()


def nginx_conf(workers, port_sync, port_gthread, sock_sync, sock_gthread, access_log):
    d = os.path.join(OUT, "nginx")
    os.makedirs(d, exist_ok=True)
    alog = f"access_log {d}/access.log combined buffer=64k flush=1s;" if access_log \
        else "access_log off;"
    proxy = """
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;"""
    conf = f"""\
# Generated by bench/router/bench.py: nginx as a production site would run it.
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    types {{ text/plain txt; text/html html; }}
    default_type application/octet-stream;
    {alog}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 10000;
    open_file_cache max=1000 inactive=20s;
    server_tokens off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream gunicorn_sync {{
        server unix:{sock_sync};
        keepalive 64;
        keepalive_timeout 60s;
    }}
    upstream gunicorn_gthread {{
        server unix:{sock_gthread};
        keepalive 64;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port_sync} backlog=4096;
        root {APP};
        location /static/ {{ }}
        location / {{
            proxy_pass http://gunicorn_sync;{proxy}
        }}
    }}
    server {{
        listen 127.0.0.1:{port_gthread} backlog=4096;
        root {APP};
        location / {{
            proxy_pass http://gunicorn_gthread;{proxy}
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


# --------------------------------------------------------------------------
# The stacks

def reap_leftovers():
    """Stop what an earlier run that was killed outright (SIGKILL, a closed
    machine) left behind: Cyclozzo apps recorded under build/bench/czhome,
    and nginx or gunicorn processes whose command line names build/bench/.
    Nothing else uses those paths, so nothing else is touched."""
    home = os.path.join(OUT, "czhome")
    run = os.path.join(home, "run")
    if os.path.isdir(run) and os.access(CZ_BIN, os.X_OK):
        env = dict(os.environ, CYCLOZZO_HOME=home)
        for f in os.listdir(run):
            if f.endswith(".state") and "-" in f:
                port = f[:-len(".state")].rsplit("-", 1)[1]
                if port.isdigit():
                    log(f"stopping the Cyclozzo app an earlier run left on port {port}")
                    subprocess.run([CZ_BIN, "--stop", "application", "--port", port], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=30)
    mine = OUT + os.sep
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmd and ("nginx" in cmd or "gunicorn" in cmd) and proc_stat(pid):
            log(f"stopping pid {pid}, left by an earlier run: {cmd[:70]}")
            found.append(pid)
    victims = descendants(found)   # nginx workers name no path: take them as children
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        end = time.time() + 3
        while time.time() < end and any(proc_stat(p) for p in victims):
            time.sleep(0.05)


def start_cyclozzo(r, cpus, threads, timeout):
    stack = Stack("cyclozzo")
    r.stacks.append(stack)
    home = os.path.join(OUT, "czhome")
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    env = dict(os.environ, CYCLOZZO_HOME=home)
    port = free_port()
    logfile = os.path.join(OUT, "cyclozzo.log")
    open(logfile, "w").close()
    stack.before = set(all_pids())
    stack.env = env
    stack.stop_cmd = [CZ_BIN, "--stop", "application", "--port", str(port)]
    bindir = os.path.join(ROOT, "bin") + os.sep
    marker = f"CYCLOZZO_HOME={home}".encode()
    stack.owns = lambda pid: exe_of(pid).startswith(bindir) or environ_has(pid, marker)
    stack.adopt = lambda: adopt_cyclozzo(stack)
    p = r.spawn(stack, [CZ_BIN, "--start", "application", "--dir", APP, "--port", str(port),
                        "--threads", str(threads)], logfile, cpus, env=env)
    wait_ready(port, [p], logfile, "bin/cyclozzo --start application", timeout)
    stack.port = port
    stack.logfile = logfile
    stack.home = home
    adopt_cyclozzo(stack)
    return stack


def adopt_cyclozzo(stack):
    """Record every Cyclozzo process of this run, including a daemonized
    router that left our process group: those started after we began that run
    a binary of this tree's bin/ or carry this run's CYCLOZZO_HOME, and
    everything below them (instances)."""
    mine = [pid for pid in all_pids() if pid not in stack.before and stack.owns(pid)]
    stack.extra |= set(mine)
    stack.extra = {p for p in descendants(list(stack.extra)) if p not in stack.before}


def environ_has(pid, entry):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def start_peers(r, cpus, nginx_workers, app_procs, gthread_threads, access_log, timeout):
    gun = os.path.join(VENV, "bin", "gunicorn")
    if not os.access(gun, os.X_OK) or not shutil.which("nginx") or not shutil.which("wrk"):
        raise BenchError("the peers are not installed: run bench/install.sh as root first")
    stacks = {}
    socks = {}
    for kind in ("sync", "gthread"):
        st = Stack(f"gunicorn-{kind}")
        r.stacks.append(st)
        sock = os.path.join(OUT, f"gunicorn-{kind}.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        logfile = os.path.join(OUT, f"gunicorn-{kind}.log")
        open(logfile, "w").close()
        argv = [gun, "--chdir", APP, "--bind", f"unix:{sock}", "--workers", str(app_procs),
                "--worker-class", kind, "--keep-alive", "75", "--backlog", "4096",
                "--log-level", "warning", "--error-logfile", "-"]
        if kind == "gthread":
            argv += ["--threads", str(gthread_threads)]
        argv.append("main:app")
        p = r.spawn(st, argv, logfile, cpus)
        end = time.time() + timeout
        while not os.path.exists(sock):
            if p.poll() is not None or time.time() > end:
                raise BenchError(f"gunicorn ({kind}) did not create {sock}; its log is "
                                 f"{logfile}:\n{tail(logfile)}")
            time.sleep(0.05)
        os.chmod(sock, 0o666)   # nginx workers run as nobody
        socks[kind] = sock
        st.logfile = logfile
        stacks[kind] = st
    st = Stack("nginx")
    r.stacks.append(st)
    port_sync, port_gthread = free_port(), free_port()
    conf = nginx_conf(nginx_workers, port_sync, port_gthread, socks["sync"], socks["gthread"],
                      access_log)
    logfile = os.path.join(OUT, "nginx", "stderr.log")
    open(logfile, "w").close()
    p = r.spawn(st, ["nginx", "-p", os.path.join(OUT, "nginx"), "-c", conf, "-e", logfile],
                logfile, cpus)
    for port in (port_sync, port_gthread):
        wait_ready(port, [p], logfile, "nginx", timeout)
    st.port, st.port_gthread, st.logfile = port_sync, port_gthread, logfile
    stacks["nginx"] = st
    return stacks


# --------------------------------------------------------------------------
# wrk

def parse_wrk(out):
    for line in out.splitlines():
        if line.startswith("CZBENCH "):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            return {k: float(v) for k, v in kv.items()}
    raise BenchError(f"wrk printed no result line; its output was:\n{out}")


def run_wrk(r, port, path, seconds, args, wrk_cpus):
    argv = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections),
            "-d", f"{seconds}s", "--timeout", "5s", "-s", LUA, f"http://127.0.0.1:{port}{path}"]
    pre = (lambda: os.sched_setaffinity(0, wrk_cpus)) if wrk_cpus is not None else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    r.current_wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=pre)
    out, _ = r.current_wrk.communicate(timeout=seconds + 60)
    wall = time.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = r.current_wrk.returncode
    r.current_wrk = None
    if rc != 0 or "CZBENCH " not in out:
        return {"failed": f"wrk failed (status {rc}):\n{out}"}
    res = parse_wrk(out)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["wrk_cpu_frac"] = wrk_cpu / wall / args.wrk_threads
    return res


# --------------------------------------------------------------------------
# Reporting

def med(runs, key):
    return statistics.median(x[key] for x in runs)


def fmt_us(us):
    return f"{us / 1000:.2f}ms" if us >= 1000 else f"{us:.0f}us"


def mem_report(stack_list, label):
    pids = set()
    for s in stack_list:
        pids |= s.pids()
    rows = []
    rss = pss = anon = 0
    for pid in sorted(pids):
        a, b, c = mem_of(pid)
        rss, pss, anon = rss + a, pss + b, anon + c
        rows.append((pid, comm_of(pid), a, b, nthreads(pid)))
    return {"label": label, "rss_kib": rss, "pss_kib": pss, "anon_kib": anon, "procs": rows}


def main():
    ap = argparse.ArgumentParser(description="Cyclozzo's router side by side with nginx and "
                                 "nginx+gunicorn (see bench/README.md).")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per target (default 5)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run (2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--cpus", choices=("split", "shared"), default="split",
                    help="split: servers on CPU 0, wrk on CPU 1 (default); shared: unpinned")
    ap.add_argument("--wrk-threads", type=int, default=0,
                    help="wrk threads (default: 1 with --cpus split, all CPUs with shared)")
    ap.add_argument("--nginx-workers", type=int, default=0,
                    help="nginx worker_processes (default: the number of CPUs the servers get)")
    ap.add_argument("--app-procs", type=int, default=0,
                    help="gunicorn workers (default: as many as Cyclozzo runs instances, else 1)")
    ap.add_argument("--gthread-threads", type=int, default=4,
                    help="threads per gunicorn gthread worker (4)")
    ap.add_argument("--access-log", choices=("on", "off"), default="on",
                    help="nginx's access log (buffered), like the router's own, which is "
                    "always on (default: on); gunicorn, behind nginx, never logs access")
    ap.add_argument("--cz-threads", type=int, default=0,
                    help="router threads, `cyclozzo --threads` (default: as many as nginx "
                    "workers)")
    ap.add_argument("--only", choices=("static", "wsgi"), help="measure one half only")
    ap.add_argument("--peers-only", action="store_true",
                    help="measure nginx and gunicorn alone, without Cyclozzo")
    ap.add_argument("--startup-timeout", type=float, default=60.0)
    ap.add_argument("--json", help="also write every run's numbers to this file")
    args = ap.parse_args()

    ncpu = len(os.sched_getaffinity(0))
    if args.cpus == "split":
        if ncpu < 2:
            raise BenchError("--cpus split needs two CPUs; use --cpus shared")
        cpus = sorted(os.sched_getaffinity(0))
        server_cpus, wrk_cpus = {cpus[0]}, {cpus[1]}
    else:
        server_cpus = wrk_cpus = None
    if not args.wrk_threads:
        args.wrk_threads = 1 if args.cpus == "split" else ncpu
    server_ncpu = len(server_cpus) if server_cpus else ncpu
    nginx_workers = args.nginx_workers or server_ncpu
    args.cz_threads = args.cz_threads or nginx_workers
    args.access_log = args.access_log == "on"

    if not args.peers_only and not os.access(CZ_BIN, os.X_OK):
        raise BenchError(f"{CZ_BIN} is missing: build it with `make` first "
                         "(or pass --peers-only to measure nginx and gunicorn alone)")
    os.makedirs(OUT, exist_ok=True)
    reap_leftovers()
    static_body = write_app()

    load = os.getloadavg()[0]
    if load > 0.5 * ncpu:
        log(f"the machine is busy (1-min load average {load:.1f} on {ncpu} CPUs): "
            "req/s and latency will be noisy; cpu/req much less so")
    r = Runner()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # SIGINT too: a shell without job control starts background commands with
    # SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return bench(r, args, server_cpus, wrk_cpus, nginx_workers, static_body)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("stopping every server started")
        r.stop_all()


def bench(r, args, server_cpus, wrk_cpus, nginx_workers, static_body):
    cz = None
    app_procs = args.app_procs
    cz_instances = None
    if not args.peers_only:
        log("starting Cyclozzo")
        cz = start_cyclozzo(r, server_cpus, args.cz_threads, args.startup_timeout)
        # The first script request may start the instance: give it time.
        check(cz.port, "/", HELLO, "cyclozzo (wsgi)", args.startup_timeout)
        check(cz.port, STATIC_PATH, static_body, "cyclozzo (static)", 10)
        time.sleep(0.5)
        adopt_cyclozzo(cz)
        cz_instances = instances_of(cz)
        if not app_procs:
            app_procs = max(1, len(cz_instances))
        pin(cz.pids(), server_cpus)
    app_procs = app_procs or 1
    log(f"starting nginx ({nginx_workers} workers) and gunicorn ({app_procs} workers "
        f"sync, {app_procs} workers x {args.gthread_threads} threads gthread)")
    peers = start_peers(r, server_cpus, nginx_workers, app_procs, args.gthread_threads,
                        args.access_log, args.startup_timeout)
    ng = peers["nginx"]

    # target name -> (port, path, body, stacks that serve it)
    targets = []
    if args.only != "wsgi":
        if cz:
            targets.append(("static", "cyclozzo", cz.port, STATIC_PATH, static_body, [cz]))
        targets.append(("static", "nginx", ng.port, STATIC_PATH, static_body, [ng]))
    if args.only != "static":
        if cz:
            targets.append(("wsgi", "cyclozzo", cz.port, "/", HELLO, [cz]))
        targets.append(("wsgi", "nginx+gunicorn sync", ng.port, "/", HELLO,
                        [ng, peers["sync"]]))
        targets.append(("wsgi", "nginx+gunicorn gthread", ng.port_gthread, "/", HELLO,
                        [ng, peers["gthread"]]))
    heads = {}
    for half, name, port, path, body, _ in targets:
        heads[(half, name)] = check(port, path, body, f"{name} ({half})", 30)

    mem_idle = memory(cz, peers)
    log_sizes0 = log_bytes(cz, peers)

    results = {(t[0], t[1]): [] for t in targets}
    served = {}   # requests per front server (cyclozzo, nginx), warm-ups included
    total = args.runs * len(targets) * (args.duration + args.warmup)
    log(f"{len(targets)} targets x {args.runs} runs x ({args.warmup}+{args.duration}) s, "
        f"about {total // 60} min {total % 60} s")
    dead = {}     # stack name -> what happened, once a stack stopped answering
    for i in range(args.runs):
        for half, name, port, path, body, stacks in targets:
            if cz:
                adopt_cyclozzo(cz)   # instances started under load
            if any(s.name in dead for s in stacks):
                continue
            if not stacks_alive(stacks, port, dead, f"before run {i + 1} of {half} {name}"):
                continue
            pids = set()
            for s in stacks:
                pids |= s.pids()
            pin(pids, server_cpus)
            load = os.getloadavg()[0]
            when = f"during run {i + 1} of {half} {name}"
            if args.warmup:
                w = run_wrk(r, port, path, args.warmup, args, wrk_cpus)
                if "failed" in w:
                    if not stacks_alive(stacks, port, dead, when):
                        continue
                    raise BenchError(w["failed"])
                served[stacks[0].name] = served.get(stacks[0].name, 0) + w["requests"]
            t0 = cpu_by_pid(pids)
            res = run_wrk(r, port, path, args.duration, args, wrk_cpus)
            if cz:
                adopt_cyclozzo(cz)   # an instance started (or restarted) during the run
            t1 = cpu_by_pid(set().union(*(s.pids() for s in stacks)))
            ticks = sum(t1[p] - t0.get(p, 0) for p in t1)
            exited = [p for p in t0 if p not in t1]
            if not stacks_alive(stacks, port, dead, when):
                continue    # numbers of a run the server did not survive mean nothing
            if "failed" in res:
                raise BenchError(res["failed"])
            res["server_cpu_s"] = ticks / CLK_TCK
            res["procs_exited"] = len(exited)
            if exited:
                log(f"{len(exited)} process(es) of {name} exited during run {i + 1} "
                    f"(pids {exited}): its cpu/req misses their CPU time")
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            res["cpu_us_per_req"] = res["server_cpu_s"] * 1e6 / max(1, res["requests"])
            res["loadavg1"] = load
            errs = sum(res[k] for k in ("err_connect", "err_read", "err_write",
                                       "err_status", "err_timeout"))
            res["errors"] = errs
            results[(half, name)].append(res)
            served[stacks[0].name] = served.get(stacks[0].name, 0) + res["requests"]
            log(f"run {i + 1}/{args.runs} {half:6} {name:24} {res['rps']:9.0f} req/s "
                f"p50 {fmt_us(res['lat_p50_us'])} p99 {fmt_us(res['lat_p99_us'])}"
                + (f" ERRORS {errs:.0f}" if errs else ""))
    time.sleep(1)
    if cz:
        adopt_cyclozzo(cz)
    mem_after = memory(cz, peers)
    log_sizes1 = log_bytes(cz, peers)
    if cz:
        cz_instances = instances_of(cz)

    report(args, targets, results, heads, mem_idle, mem_after, log_sizes0, log_sizes1, served, dead,
           nginx_workers, app_procs, server_cpus, wrk_cpus, cz, cz_instances)
    return 0


def stacks_alive(stacks, port, dead, when):
    """True if every stack still has processes and port still accepts; else
    records in dead which stack stopped, and when, with its log's tail."""
    for s in stacks:
        if not s.pids() or not port_open(port):
            logs = [s.logfile] + sorted(glob.glob(os.path.join(getattr(s, "home", "/nonexistent"),
                                                               "logs", "*.log")))
            msg = f"{s.name} stopped answering {when}; see {', '.join(logs)}"
            lines = [l for l in tail(logs[-1], 400).splitlines() if "comp=access" not in l]
            dead[s.name] = msg + ("\n  " + "\n  ".join(lines[-5:]) if lines else "")
            log(dead[s.name])
            return False
    return True


def instances_of(cz):
    """Cyclozzo's Python instances: processes running bin/cyclozzo-pyrt."""
    return [p for p in cz.pids()
            if exe_of(p).endswith("/cyclozzo-pyrt") or comm_of(p) == "cyclozzo-pyrt"]


def check(port, path, body, what, timeout):
    """Fail unless GET path answers 200 with exactly body; returns head size."""
    end = time.time() + timeout
    last = None
    while True:
        try:
            status, head, got = fetch(port, path, timeout=timeout)
            if status == 200 and got == body:
                return head
            last = f"status {status}, {len(got)} body bytes {got[:60]!r}"
        except (OSError, ValueError, IndexError) as e:
            last = str(e)
        if time.time() > end:
            raise BenchError(f"{what}: GET {path} on port {port} did not answer 200 with the "
                             f"expected {len(body)}-byte body (last: {last})")
        time.sleep(0.2)


def memory(cz, peers):
    m = {}
    if cz:
        m["cyclozzo"] = mem_report([cz], "Cyclozzo router + instance")
    m["nginx+gunicorn sync"] = mem_report([peers["nginx"], peers["sync"]], "nginx + gunicorn sync")
    m["nginx+gunicorn gthread"] = mem_report([peers["nginx"], peers["gthread"]],
                                             "nginx + gunicorn gthread")
    return m


def log_bytes(cz, peers):
    """Bytes in each stack's logs: shows whether a server logged every request."""
    def size(paths):
        n = 0
        for p in paths:
            if os.path.isdir(p):
                for d, _, files in os.walk(p):
                    for f in files:
                        try:
                            n += os.path.getsize(os.path.join(d, f))
                        except OSError:
                            pass
            elif os.path.exists(p):
                n += os.path.getsize(p)
        return n
    out = {"nginx": size([os.path.join(OUT, "nginx")]),
           "gunicorn": size([os.path.join(OUT, f) for f in os.listdir(OUT) if f.startswith("gunicorn")])}
    if cz:
        out["cyclozzo"] = size([cz.logfile, cz.home])
    return out


def report(args, targets, results, heads, mem_idle, mem_after, ls0, ls1, served, dead, nginx_workers,
           app_procs, server_cpus, wrk_cpus, cz, cz_instances):
    p = print
    p()
    p(f"Cyclozzo router benchmark: wrk -t{args.wrk_threads} -c{args.connections}, "
      f"median of {args.runs} runs x {args.duration} s (each after {args.warmup} s warm-up), "
      "runs interleaved")
    if server_cpus is not None:
        p(f"CPU placement: servers on CPU {','.join(map(str, sorted(server_cpus)))}, "
          f"wrk on CPU {','.join(map(str, sorted(wrk_cpus)))}")
    else:
        p("CPU placement: unpinned (servers and wrk share every CPU)")
    p(f"nginx: {nginx_workers} worker(s), access log {'on (buffered)' if args.access_log else 'off'}; "
      f"gunicorn: {app_procs} worker(s) (gthread: {args.gthread_threads} threads each), "
      "no access log")
    if cz:
        p(f"Cyclozzo: router --threads {args.cz_threads}, access log always on; "
          f"{len(cz_instances)} instance process(es) at the end")
    p()
    hdr = (f"{'half':6} {'server':24} {'runs':>4} {'req/s':>9} {'(min..max)':>17} {'p50':>8} {'p99':>8} "
           f"{'cpu/req':>8} {'head B':>6} {'errors':>6} {'wrk cpu':>7}")
    p(hdr)
    p("-" * len(hdr))
    summary = {}
    for half, name, *_ in targets:
        runs = results[(half, name)]
        if not runs:
            p(f"{half:6} {name:24} {'no run completed: the server stopped answering':>60}")
            continue
        rps = [x["rps"] for x in runs]
        s = {"rps": statistics.median(rps), "p50": med(runs, "lat_p50_us"),
             "p99": med(runs, "lat_p99_us"), "cpu": med(runs, "cpu_us_per_req"),
             "errors": sum(x["errors"] for x in runs), "wrk": med(runs, "wrk_cpu_frac"),
             "n": len(runs), "exits": sum(x.get("procs_exited", 0) for x in runs)}
        summary[(half, name)] = s
        p(f"{half:6} {name:24} {len(runs):4d} {s['rps']:9.0f} {f'({min(rps):.0f}..{max(rps):.0f})':>17} "
          f"{fmt_us(s['p50']):>8} {fmt_us(s['p99']):>8} {s['cpu']:6.1f}" +
          ("u*" if s["exits"] else "us") + " "
          f"{heads[(half, name)]:6d} {s['errors']:6.0f} {s['wrk'] * 100:6.0f}%")
    p()
    if cz:
        def ratio(half, peer, goal):
            a, b = summary.get((half, "cyclozzo")), summary.get((half, peer))
            if not a or not b:
                return
            def x(k):
                return f"x{a[k] / b[k]:.2f}" if b[k] else "n/a"
            r_rps = a["rps"] / b["rps"]
            verdict = "MET" if r_rps >= goal else "NOT MET"
            if min(a["n"], b["n"]) < args.runs:
                verdict += f", from fewer than {args.runs} runs"
            p(f"{half:6} Cyclozzo/{peer}: req/s x{r_rps:.2f} (target >= {goal:g}: {verdict}), "
              f"p50 {x('p50')}, p99 {x('p99')}, cpu/req {x('cpu')}")
        ratio("static", "nginx", 1.0)
        ratio("wsgi", "nginx+gunicorn sync", 1.5)
        ratio("wsgi", "nginx+gunicorn gthread", 1.5)
        p()
    p(f"{'memory':34} {'idle RSS':>10} {'idle PSS':>10} {'after RSS':>10} {'after PSS':>10} {'after anon':>10}  processes")
    for key, m in mem_idle.items():
        a = mem_after[key]
        def names(rows):
            return ", ".join(c + (f"({t} threads)" if t > 1 else "") for _, c, _, _, t in rows)
        procs = names(a["procs"]) if a["procs"] else \
            f"none left running (idle: {names(m['procs']) or 'none'})"
        p(f"{m['label']:34} {m['rss_kib'] / 1024:8.1f}MB {m['pss_kib'] / 1024:8.1f}MB "
          f"{a['rss_kib'] / 1024:8.1f}MB {a['pss_kib'] / 1024:8.1f}MB {a.get('anon_kib', 0) / 1024:8.1f}MB  {procs}")
    if cz:
        a, b = mem_after["cyclozzo"], mem_after["nginx+gunicorn sync"]
        if a["rss_kib"] and b["rss_kib"]:
            p(f"RSS Cyclozzo/(nginx+gunicorn sync) after load: x{a['rss_kib'] / b['rss_kib']:.2f}"
              f" (anonymous memory only: x{a.get('anon_kib', 0) / max(b.get('anon_kib', 0), 1):.2f};"
              f" the rest is page cache of mapped files, e.g. the request log store)")
    p()
    grow = {k: ls1[k] - ls0[k] for k in ls1}
    p("log bytes written per request served: " + ", ".join(
        f"{k} {v / served[k]:.0f}" if served.get(k) else f"{k} {v} bytes in all"
        for k, v in grow.items()) + " (an access log line is ~100-200 bytes)")
    for msg in dead.values():
        p("STOPPED: " + msg)
    if any(s["exits"] for s in summary.values()):
        p("u*: processes of that stack exited during a run (an instance restart?); "
          "their CPU time is missing from cpu/req")
    loads = [x["loadavg1"] for runs in results.values() for x in runs] or [0.0]
    p(f"1-min load average at run starts: {min(loads):.2f}..{max(loads):.2f} "
      f"(other work on the machine skews every number; compare cpu/req too)")
    flagged = [f"{h} {n}" for (h, n), s in summary.items() if s["wrk"] > 0.9]
    if flagged:
        p("wrk used >90% of its CPU on: " + "; ".join(flagged) +
          " - these may be limited by the load generator, not the server")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args),
                       "runs": {f"{h}/{n}": v for (h, n), v in results.items()},
                       "memory_idle": mem_idle, "memory_after": mem_after}, f, indent=1)
        p(f"every run's numbers: {args.json}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
