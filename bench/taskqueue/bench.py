#!/usr/bin/env python3
"""Push-task throughput and latency of Cyclozzo's scheduler, next to the
floor it cannot beat: the same requests POSTed straight to the app.

Run by hand, never in CI (see bench/README.md):

    make && ./scripts/testenv.sh
    build/testenv/bin/python bench/taskqueue/bench.py            # N=5000, 3 runs
    build/testenv/bin/python bench/taskqueue/bench.py --n 1000 --runs 1

One generated app (build/bench/tqapp) is started with `cyclozzo --start
application`. Its handler /t notes the moment it starts (time.time()) in
memcache under the task's run and index; /collect reads them back.

  * bulk: the app adds N push tasks (GET /t?...) to queue `bench`
    (rate 5000/s, bucket_size 500) in batches of 100 with Google's SDK; each
    task carries the time its batch's add call began. Throughput = N / (last
    handler start - first add); latency = handler start - add.
  * single: one task added, wait for its handler, 30 times in a row.
  * direct: a 10-thread (--threads) Python client GETs the same N URLs from the router
    (keep-alive sessions); latency = handler start - request sent.

Every figure is the median of --runs runs. The machine's clock is shared by
the client and the app, so latencies are comparable."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import socket

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("CYCLOZZO_BIN", os.path.join(ROOT, "bin")))

APP_YAML = """runtime: python311
app_engine_apis: true
handlers:
- url: /.*
  script: auto
"""
QUEUE_YAML = """queue:
- name: bench
  rate: 5000/s
  bucket_size: 500
"""
MAIN_PY = r'''
import json, time, urllib.parse
from google.appengine.api import memcache, taskqueue, wrap_wsgi_app

def app(environ, start_response):
    now = time.time()
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    out = "ok"
    if path == "/t":
        memcache.set("a-%s-%s" % (q["run"], q["i"]), "%.6f %s" % (now, q["t0"]))
    elif path == "/enqueue":
        n, run = int(q["n"]), q["run"]
        first = time.time()
        for b in range(0, n, 100):
            t0 = "%.6f" % time.time()
            taskqueue.Queue("bench").add([taskqueue.Task(url="/t?run=%s&i=%d&t0=%s" % (run, i, t0), method="GET")
                                         for i in range(b, min(n, b + 100))])
        out = "%.6f" % first
    elif path == "/collect":
        run, lo, hi = q["run"], int(q["lo"]), int(q["hi"])
        got = memcache.get_multi(["a-%s-%d" % (run, i) for i in range(lo, hi)])
        out = json.dumps({k.split("-")[2]: v for k, v in got.items()})
    data = out.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]

app = wrap_wsgi_app(app)
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cz(*args, env):
    subprocess.run([os.path.join(BIN, "cyclozzo"), *args], env=env, check=True, capture_output=True, text=True,
                   timeout=900)


def collect(base, run, n, timeout=300):
    """{index: (start, t0)} once all n handlers ran (or the timeout passed)."""
    end = time.time() + timeout
    got = {}
    while time.time() < end:
        for lo in range(0, n, 1000):
            if all(i in got for i in range(lo, min(n, lo + 1000))):
                continue
            r = requests.get(base + "/collect", params={"run": run, "lo": lo, "hi": min(n, lo + 1000)}, timeout=60)
            for k, v in r.json().items():
                a, t0 = v.split()
                got[int(k)] = (float(a), float(t0))
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise SystemExit(f"run {run}: only {len(got)} of {n} handlers ran within {timeout} s")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summarise(got, first, n):
    lat = [a - t0 for a, t0 in got.values()]
    last = max(a for a, _ in got.values())
    return {"tasks_per_s": n / (last - first), "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000}


def bulk(base, run, n):
    first = float(requests.get(base + "/enqueue", params={"run": run, "n": n}, timeout=600).text)
    return summarise(collect(base, run, n), first, n)


def single(base, run, reps=30):
    lat = []
    for k in range(reps):
        r = f"{run}s{k}"
        requests.get(base + "/enqueue", params={"run": r, "n": 1}, timeout=60)
        a, t0 = collect(base, r, 1, timeout=60)[0]
        lat.append(a - t0)
    return {"p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000}


def direct(base, run, n, threads=10):
    idx = iter(range(n))
    lock = threading.Lock()

    def worker():
        s = requests.Session()
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            s.get(base + "/t", params={"run": run, "i": i, "t0": "%.6f" % time.time()}, timeout=60)

    first = time.time()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return summarise(collect(base, run, n), first, n)


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=10, help="client threads of the direct run (default 10)")
    ap.add_argument("--json", help="write every run's numbers here")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(BIN, "cyclozzo")):
        sys.exit(f"{BIN}/cyclozzo is missing: run make first")
    appdir = os.path.join(ROOT, "build", "bench", "tqapp")
    shutil.rmtree(appdir, ignore_errors=True)
    os.makedirs(appdir)
    for name, text in (("app.yaml", APP_YAML), ("queue.yaml", QUEUE_YAML), ("main.py", MAIN_PY),
                       ("requirements.txt", "appengine-python-standard\n")):
        with open(os.path.join(appdir, name), "w") as f:
            f.write(text)
    home = os.environ.get("CYCLOZZO_HOME") or tempfile.mkdtemp(prefix="cz-tqbench-")
    env = dict(os.environ, CYCLOZZO_HOME=home)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cz("--start", "application", "--dir", appdir, "--port", str(port), env=env)
    res = {"bulk": [], "single": [], "direct": []}
    try:
        requests.get(base + "/collect", params={"run": "warm", "lo": 0, "hi": 1}, timeout=60)
        direct(base, "warm", 200)
        for r in range(a.runs):
            res["bulk"].append(bulk(base, f"b{r}", a.n))
            res["direct"].append(direct(base, f"d{r}", a.n, a.threads))
            res["single"].append(single(base, f"s{r}"))
            print(f"run {r + 1}: bulk {res['bulk'][-1]}\n       direct {res['direct'][-1]}\n"
                  f"       single {res['single'][-1]}", flush=True)
    finally:
        cz("--stop", "application", "--port", str(port), env=env)
    b, d, s = res["bulk"], res["direct"], res["single"]
    print(f"\nN={a.n}, medians of {a.runs} runs")
    print(f"{'':28}{'tasks/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'scheduler, bulk add':28}{med(b, 'tasks_per_s'):10.0f}{med(b, 'p50_ms'):10.1f}{med(b, 'p99_ms'):10.1f}")
    print(f"{f'direct GET, {a.threads} threads':28}{med(d, 'tasks_per_s'):10.0f}{med(d, 'p50_ms'):10.1f}{med(d, 'p99_ms'):10.1f}")
    print(f"{'scheduler, single task':28}{'':>10}{med(s, 'p50_ms'):10.1f}{med(s, 'p99_ms'):10.1f}")
    print(f"throughput ratio scheduler/direct: {med(b, 'tasks_per_s') / med(d, 'tasks_per_s'):.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
