#!/usr/bin/env python3
"""Memcache get/set throughput from Python through Google's SDK
(google.appengine.api.memcache), side by side:

  cyclozzo  the SDK's production API stub -> HTTP /rpc_http -> bin/cz-apiserver
  sdk-stub  the SDK's own in-process MemcacheServiceStub (no RPC at all)

Both run in this one process, alternating, 5 runs each; the medians and the
ratio cyclozzo/sdk-stub are printed. Not part of CI.

  make bin/cz-apiserver && ./scripts/testenv.sh
  build/testenv/bin/python bench/memcache/bench_memcache.py [--ops N] [--value-bytes B]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from google.appengine.api import apiproxy_stub_map, memcache
from google.appengine.runtime import default_api_stub

try:
    from google.appengine.api.memcache import memcache_stub
except ImportError:                       # an SDK without the local stub
    memcache_stub = None


def start_apiserver(home):
    proc = subprocess.Popen([os.path.join(ROOT, "bin", "cz-apiserver"), "--home", home, "--port", "0",
                             "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("port="):
        proc.kill()
        sys.exit("cz-apiserver did not start")
    ticket = subprocess.run([os.path.join(ROOT, "bin", "cz-apiserver"), "--home", home,
                             "--mint-ticket", "dev~bench", "--ttl", "86400"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return proc, int(line.split("=")[1]), ticket


def cyclozzo_map(port, ticket):
    os.environ["API_HOST"] = "127.0.0.1"
    os.environ["API_PORT"] = str(port)
    os.environ[default_api_stub.TICKET_HEADER] = ticket
    default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)
    m = apiproxy_stub_map.APIProxyStubMap()
    m.SetDefaultStub(default_api_stub.DefaultApiStub())
    return m


def stub_map():
    m = apiproxy_stub_map.APIProxyStubMap()
    m.RegisterStub("memcache", memcache_stub.MemcacheServiceStub())
    return m


def one_run(stubmap, ops, value):
    """(sets/s, gets/s) for ops sets then ops gets of distinct keys."""
    apiproxy_stub_map.apiproxy = stubmap
    mc = memcache.Client()
    keys = ["bench:%d" % i for i in range(ops)]
    t0 = time.perf_counter()
    for k in keys:
        if not mc.set(k, value):
            sys.exit("set failed")
    t1 = time.perf_counter()
    for k in keys:
        if mc.get(k) != value:
            sys.exit("get returned the wrong value")
    t2 = time.perf_counter()
    mc.flush_all()
    return ops / (t1 - t0), ops / (t2 - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if memcache_stub is None:
        sys.exit("this SDK ships no memcache_stub: nothing to compare with")
    value = b"v" * a.value_bytes
    with tempfile.TemporaryDirectory() as home:
        proc, port, ticket = start_apiserver(home)
        try:
            maps = {"cyclozzo": cyclozzo_map(port, ticket), "sdk-stub": stub_map()}
            for name, m in maps.items():          # warm-up: connections, imports
                one_run(m, 200, value)
            res = {name: ([], []) for name in maps}
            for _ in range(a.runs):
                for name, m in maps.items():
                    s, g = one_run(m, a.ops, value)
                    res[name][0].append(s)
                    res[name][1].append(g)
        finally:
            proc.terminate()
            proc.wait()
    print("memcache via the SDK, %d ops x %d runs, %d-byte values (ops/s, median)"
          % (a.ops, a.runs, a.value_bytes))
    print("%-10s %12s %12s" % ("", "set", "get"))
    med = {n: (statistics.median(r[0]), statistics.median(r[1])) for n, r in res.items()}
    for n, (s, g) in med.items():
        print("%-10s %12.0f %12.0f" % (n, s, g))
    print("%-10s %12.2f %12.2f" % ("ratio", med["cyclozzo"][0] / med["sdk-stub"][0],
                                   med["cyclozzo"][1] / med["sdk-stub"][1]))
    print("(ratio = cyclozzo / sdk-stub; the stub runs in-process with no RPC)")


if __name__ == "__main__":
    main()
