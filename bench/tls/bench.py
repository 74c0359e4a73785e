#!/usr/bin/python3
"""bench.py - Cyclozzo's HTTPS against nginx's, side by side.

Run by hand, never in CI (see bench/README.md):

    sudo ./bench/install.sh && make
    /usr/bin/python3 bench/tls/bench.py                    # about 3 minutes
    /usr/bin/python3 bench/tls/bench.py --key rsa2048      # RSA certificate

Two servers serve the same file (build/bench/tls/app/static/1k.txt, 1 KiB)
over HTTPS with the same certificate and key (made here with `openssl req`:
ECDSA P-256 by default, or RSA 2048) and the same protocol and cipher
settings (TLS 1.2 and 1.3; the same TLS 1.2 ECDHE/AEAD list; groups
X25519:P-256:P-384; OpenSSL's default TLS 1.3 suites):

  cyclozzo  bin/cyclozzo --start application --threads 1 --https-port P
            --cert C --key K (the router serves the static_dir file itself)
  nginx     nginx in the foreground, worker_processes 1, `ssl` listener,
            the same directory, a buffered access log (the router always
            writes one)

Two measures, each run --runs times, interleaved (cyclozzo, nginx,
cyclozzo, nginx, ...) so machine drift hits both alike; medians reported:

  handshakes/s  full handshakes, a new TCP connection each, no session
                resumption: --clients copies of `openssl s_time -new
                -connect 127.0.0.1:P -time D` in parallel (each handshakes,
                closes, repeats); the sum of their "connections in N real
                seconds". No HTTP request is sent.
  requests/s    keep-alive HTTPS: `wrk -t1 -c64 -dD https://127.0.0.1:P/static/1k.txt`
                after a 2 s warm-up.

CPU placement: the server (all its threads) on CPU 0, the clients on CPU 1,
so each server gets exactly one core and never competes with its load.
Also reported: the server's CPU time (user + system, all its processes, from
/proc) per handshake and per request. On a machine where one client core
cannot saturate one server core (TLS costs the client about as much as the
server), the rates are the client's limit and the same for both servers;
the CPU time per operation then is the server's own cost, and the number to
compare. Every process started is stopped on exit.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "build", "bench", "tls")
APP = os.path.join(OUT, "app")
CZ_BIN = os.path.join(ROOT, "bin", "cyclozzo")
TLS12 = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
         "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
SERVER_CPU, CLIENT_CPU = {0}, {1}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on 127.0.0.1:{port} after {timeout} s")


def pin_tree(pid, cpus):
    """Hold pid, its threads and its descendants' threads to cpus."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(t), cpus)
        except OSError:
            pass


def tree_cpu(pid):
    """CPU seconds (user + system) used so far by pid and its descendants."""
    kids, ticks = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                kids.setdefault(int(f[1]), []).append(int(d))
                ticks[int(d)] = int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                pass
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        total += ticks.get(p, 0)
    return total / os.sysconf("SC_CLK_TCK")


def measure(fn, pid, port, secs, *args):
    """(rate, server CPU share of one core) of one run of fn."""
    c0, t0 = tree_cpu(pid), time.time()
    rate = fn(port, secs, *args)
    return rate, (tree_cpu(pid) - c0) / (time.time() - t0)


def make_files(key_kind):
    os.makedirs(os.path.join(APP, "static"), exist_ok=True)
    with open(os.path.join(APP, "app.yaml"), "w") as f:
        f.write("runtime: python311\nhandlers:\n- url: /static\n  static_dir: static\n- url: /.*\n  script: auto\n")
    with open(os.path.join(APP, "main.py"), "w") as f:
        f.write("def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'hi']\n")
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"
    with open(os.path.join(APP, "static", "1k.txt"), "wb") as f:
        f.write(line * 16)
    for d, _, files in os.walk(APP):      # nginx workers run as nobody
        os.chmod(d, 0o755)
        for n in files:
            os.chmod(os.path.join(d, n), 0o644)
    crt, key = os.path.join(OUT, f"{key_kind}.crt"), os.path.join(OUT, f"{key_kind}.key")
    if not os.path.exists(crt):
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_kind == "ecdsa" \
            else ["-newkey", "rsa:2048"]
        subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", crt, "-days", "30",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
    return crt, key


def nginx_conf(port, crt, key):
    d = os.path.join(OUT, "nginx")
    os.makedirs(d, exist_ok=True)
    conf = f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ text/plain txt; }}
    access_log {d}/access.log combined buffer=64k flush=1s;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    open_file_cache max=1000 inactive=20s;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/px; fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {TLS12};
        ssl_prefer_server_ciphers on;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        root {APP};
        location /static/ {{ }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def handshakes(port, secs, clients):
    procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(secs)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: os.sched_setaffinity(0, CLIENT_CPU))
             for _ in range(clients)]
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=secs + 60)
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if not m:
            raise SystemExit(f"bench: openssl s_time gave no result:\n{out}")
        total += int(m.group(1)) / max(1, int(m.group(2)))
    return total


def wrk(port, secs):
    url = f"https://127.0.0.1:{port}/static/1k.txt"
    pre = lambda: os.sched_setaffinity(0, CLIENT_CPU)
    subprocess.run(["wrk", "-t1", "-c64", "-d2s", url], capture_output=True, preexec_fn=pre)
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{secs}s", url], capture_output=True, text=True,
                         preexec_fn=pre).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out or "Socket errors" in out and "read 0" not in out:
        log(f"wrk output:\n{out}")
    if not m:
        raise SystemExit("bench: wrk gave no result")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description="Cyclozzo HTTPS vs nginx HTTPS (see the opening comment)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--clients", type=int, default=4, help="parallel openssl s_time processes")
    ap.add_argument("--key", choices=("ecdsa", "rsa2048"), default="ecdsa")
    a = ap.parse_args()
    if not os.access(CZ_BIN, os.X_OK):
        raise SystemExit("bench: bin/cyclozzo is missing; run make first")
    crt, key = make_files(a.key)
    home = os.path.join(OUT, "czhome")
    env = dict(os.environ, CYCLOZZO_HOME=home)
    cz_port, cz_sport, ng_port = free_port(), free_port(), free_port()
    nginx = None
    try:
        subprocess.run([CZ_BIN, "--start", "application", "--dir", APP, "--port", str(cz_port), "--threads", "1",
                        "--https-port", str(cz_sport), "--cert", crt, "--key", key], env=env, check=True,
                       timeout=600)
        st = subprocess.run([CZ_BIN, "--status"], env=env, capture_output=True, text=True).stdout
        cz_pid = int([l.split()[2] for l in st.splitlines() if l.split()[1:2] == [str(cz_port)]][0])
        pin_tree(cz_pid, SERVER_CPU)
        conf = nginx_conf(ng_port, crt, key)
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", os.path.join(OUT, "nginx")], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=lambda: os.sched_setaffinity(0, SERVER_CPU))
        wait_port(cz_sport)
        wait_port(ng_port)
        time.sleep(0.5)
        pin_tree(nginx.pid, SERVER_CPU)
        targets = {"cyclozzo": cz_sport, "nginx": ng_port}
        pids = {"cyclozzo": cz_pid, "nginx": nginx.pid}
        for name, port in targets.items():
            body = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{port}/static/1k.txt"], capture_output=True).stdout
            if len(body) != 1024:
                raise SystemExit(f"bench: {name} did not serve the 1 KiB file over HTTPS")
        hs = {n: [] for n in targets}
        rq = {n: [] for n in targets}
        hs_cpu = {n: [] for n in targets}
        rq_cpu = {n: [] for n in targets}
        for r in range(a.runs):
            for name, port in targets.items():
                rate, cpu = measure(handshakes, pids[name], port, a.duration, a.clients)
                hs[name].append(rate)
                hs_cpu[name].append(cpu)
                log(f"run {r + 1}: {name} handshakes/s {rate:.0f} (server CPU {cpu * 100:.0f}% of a core)")
            for name, port in targets.items():
                rate, cpu = measure(wrk, pids[name], port, a.duration)
                rq[name].append(rate)
                rq_cpu[name].append(cpu)
                log(f"run {r + 1}: {name} keep-alive requests/s {rate:.0f} (server CPU {cpu * 100:.0f}% of a core)")
        print(f"\nHTTPS, {a.key} certificate, 1 server core, medians of {a.runs} interleaved runs of {a.duration} s")
        print(f"{'':12}{'handshakes/s':>14}{'requests/s':>14}{'CPU us/handshake':>18}{'CPU us/request':>16}")
        for name in targets:
            us_h = statistics.median(c / h * 1e6 for c, h in zip(hs_cpu[name], hs[name]))
            us_r = statistics.median(c / q * 1e6 for c, q in zip(rq_cpu[name], rq[name]))
            print(f"{name:12}{statistics.median(hs[name]):>14.0f}{statistics.median(rq[name]):>14.0f}"
                  f"{us_h:>18.0f}{us_r:>16.1f}")
        us = {n: (statistics.median(c / h * 1e6 for c, h in zip(hs_cpu[n], hs[n])),
                  statistics.median(c / q * 1e6 for c, q in zip(rq_cpu[n], rq[n]))) for n in targets}
        print(f"{'ratio':12}{statistics.median(hs['cyclozzo']) / statistics.median(hs['nginx']):>14.2f}"
              f"{statistics.median(rq['cyclozzo']) / statistics.median(rq['nginx']):>14.2f}"
              f"{us['nginx'][0] / us['cyclozzo'][0]:>18.2f}{us['nginx'][1] / us['cyclozzo'][1]:>16.2f}")
        print("(ratios: cyclozzo / nginx for rates, nginx / cyclozzo for CPU per operation, so > 1 favours"
              " cyclozzo; the per-core capacity is 1e6 / (CPU us per operation))")
        print("runs:", {"handshakes": hs, "requests": rq})
    finally:
        subprocess.run([CZ_BIN, "--stop", "application", "--port", str(cz_port)], env=env,
                       capture_output=True, timeout=60)
        if nginx:
            try:
                os.killpg(nginx.pid, signal.SIGTERM)
            except OSError:
                pass
            nginx.wait(timeout=10)


if __name__ == "__main__":
    main()
