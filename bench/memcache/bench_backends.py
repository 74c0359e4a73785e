#!/usr/bin/env python3
"""Memcache backends side by side, through Google's SDK
(google.appengine.api.memcache), in one run:

  embedded    SDK -> HTTP /rpc_http -> bin/cz-apiserver, in-process cache
  memcached   SDK -> HTTP /rpc_http -> bin/cz-apiserver --memcache-servers
              -> memcached (libmemcached, ketama)
  direct      pymemcache -> the same memcached, no Cyclozzo and no SDK: the
              floor, to show what the API hop and the backend add

The same script runs against each: N sets, N gets, N/B get_multi calls of B
keys, timing every call. Each run alternates the targets; the table holds the
medians over the runs of p50 and p99 latency (microseconds) and of calls/s
(get_multi also keys/s). Not part of CI.

  make && ./scripts/testenv.sh
  build/testenv/bin/pip install -r bench/memcache/requirements.txt
  build/testenv/bin/python bench/memcache/bench_backends.py [--ops N] [--runs R]
      [--value-bytes B] [--batch B] [--servers S]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from google.appengine.api import apiproxy_stub_map, memcache
from google.appengine.runtime import default_api_stub

try:
    from pymemcache.client.base import Client as DirectClient
except ImportError:
    DirectClient = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    end = time.time() + 10
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("nothing listens on port %d" % port)


def start_memcached():
    port = free_port()
    args = [shutil.which("memcached") or "/usr/bin/memcached", "-l", "127.0.0.1", "-p", str(port),
            "-U", "0", "-I", "2m", "-m", "256", "-t", "2"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def start_apiserver(home, extra=()):
    exe = os.path.join(ROOT, "bin", "cz-apiserver")
    proc = subprocess.Popen([exe, "--home", home, "--port", "0", "--log-level", "warn", *extra],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("port="):
        proc.kill()
        sys.exit("cz-apiserver did not start")
    ticket = subprocess.run([exe, "--home", home, "--mint-ticket", "dev~bench", "--ttl", "86400"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return proc, int(line.split("=")[1]), ticket


class SdkTarget:
    def __init__(self, port, ticket):
        self.port, self.ticket = port, ticket
        self.map = apiproxy_stub_map.APIProxyStubMap()
        self.map.SetDefaultStub(default_api_stub.DefaultApiStub())

    def activate(self):
        os.environ["API_HOST"] = "127.0.0.1"
        os.environ["API_PORT"] = str(self.port)
        os.environ[default_api_stub.TICKET_HEADER] = self.ticket
        default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)
        apiproxy_stub_map.apiproxy = self.map
        mc = memcache.Client()
        return mc.set, mc.get, mc.get_multi, mc.flush_all


class DirectTarget:
    def __init__(self, port):
        self.c = DirectClient(("127.0.0.1", port), no_delay=True)

    def activate(self):
        c = self.c
        return (lambda k, v: c.set(k, v, noreply=False), c.get, c.get_many,
                lambda: c.flush_all(noreply=False))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def one_run(target, ops, batch, value):
    set_, get, get_multi, flush = target.activate()
    keys = ["bench:%d" % i for i in range(ops)]
    res = {}
    lat = []
    t0 = time.perf_counter()
    for k in keys:
        a = time.perf_counter()
        if not set_(k, value):
            sys.exit("set failed")
        lat.append(time.perf_counter() - a)
    res["set"] = (pct(lat, 0.5), pct(lat, 0.99), ops / (time.perf_counter() - t0), None)
    lat = []
    t0 = time.perf_counter()
    for k in keys:
        a = time.perf_counter()
        if get(k) != value:
            sys.exit("get returned the wrong value")
        lat.append(time.perf_counter() - a)
    res["get"] = (pct(lat, 0.5), pct(lat, 0.99), ops / (time.perf_counter() - t0), None)
    lat = []
    calls = [keys[i:i + batch] for i in range(0, ops, batch)]
    t0 = time.perf_counter()
    for ks in calls:
        a = time.perf_counter()
        if len(get_multi(ks)) != len(ks):
            sys.exit("get_multi missed keys")
        lat.append(time.perf_counter() - a)
    dt = time.perf_counter() - t0
    res["get_multi"] = (pct(lat, 0.5), pct(lat, 0.99), len(calls) / dt, ops / dt)
    flush()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--servers", type=int, default=1, help="memcached servers behind the backend")
    a = ap.parse_args()
    value = b"v" * a.value_bytes
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mports = []
            for _ in range(a.servers):
                p, port = start_memcached()
                procs.append(p)
                mports.append(port)
            os.makedirs(os.path.join(tmp, "e"))
            os.makedirs(os.path.join(tmp, "m"))
            pe, porte, te = start_apiserver(os.path.join(tmp, "e"))
            procs.append(pe)
            spec = ",".join("127.0.0.1:%d" % p for p in mports)
            pm, portm, tm = start_apiserver(os.path.join(tmp, "m"), ("--memcache-servers", spec))
            procs.append(pm)
            targets = {"embedded": SdkTarget(porte, te), "memcached": SdkTarget(portm, tm)}
            if DirectClient is not None:
                targets["direct"] = DirectTarget(mports[0])
            else:
                print("(pymemcache not installed: no memcached-direct reference)")
            for t in targets.values():              # warm-up: connections, imports
                one_run(t, 200, min(a.batch, 200), value)
            runs = {n: [] for n in targets}
            for _ in range(a.runs):
                for n, t in targets.items():
                    runs[n].append(one_run(t, a.ops, a.batch, value))
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    med = {n: {op: tuple(None if r[0][op][i] is None else statistics.median(x[op][i] for x in r)
                         for i in range(4))
               for op in ("set", "get", "get_multi")}
           for n, r in runs.items()}
    print("memcache backends via the SDK: %d ops x %d runs, %d-byte values, get_multi of %d keys, "
          "%d memcached server(s); medians" % (a.ops, a.runs, a.value_bytes, a.batch, a.servers))
    print("%-10s %-10s %9s %9s %10s %10s" % ("target", "op", "p50 us", "p99 us", "calls/s", "keys/s"))
    for n, m in med.items():
        for op, (p50, p99, cps, kps) in m.items():
            print("%-10s %-10s %9.0f %9.0f %10.0f %10s" % (n, op, p50 * 1e6, p99 * 1e6, cps,
                                                          "%.0f" % kps if kps else "-"))
    print("ratios (calls/s; p50 latency in brackets):")
    for op in ("set", "get", "get_multi"):
        e, m = med["embedded"][op], med["memcached"][op]
        line = "  %-10s memcached/embedded %.2f (p50 x%.2f)" % (op, m[2] / e[2], m[0] / e[0])
        if "direct" in med:
            d = med["direct"][op]
            line += "   memcached/direct %.2f (p50 x%.2f)" % (m[2] / d[2], m[0] / d[0])
        print(line)


if __name__ == "__main__":
    main()
