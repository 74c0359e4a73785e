"""Indexed query over 100 000 entities: Google's local datastore stub
(datastore_file_stub, in process) against Cyclozzo's API server, both
driven by the same ndb code (run by hand, with build/testenv's python).

  python bench/query_vs_stub.py stub [N]
  python bench/query_vs_stub.py api PORT TICKET [N]     (GAE_APPLICATION set)

Loads N entities of kind Item {n, bucket = n % 100, label} with put_multi
in batches of 500, then times each query 5 times and prints the median:
  eq     Item.bucket == 42, every match (N/100 entities)
  range  Item.n >= N/2 ordered by n, first 100
  count  Item.bucket == 7, counted
"""
import statistics
import sys
import time
import wsgiref.util

from google.appengine.api import apiproxy_stub_map, wrap_wsgi_app
from google.appengine.ext import ndb


class Item(ndb.Model):
    n = ndb.IntegerProperty()
    bucket = ndb.IntegerProperty()
    label = ndb.StringProperty()
    _use_memcache = False   # measure the datastore alone
    _use_cache = False


def work(n):
    t = time.time()
    for i in range(0, n, 500):
        ndb.put_multi([Item(id=j + 1, n=j, bucket=j % 100, label="item%d" % j) for j in range(i, min(n, i + 500))])
    print("put    entities=%d seconds=%.1f" % (n, time.time() - t), flush=True)
    queries = {
        "eq": lambda: len(Item.query(Item.bucket == 42).fetch()),
        "range": lambda: len(Item.query(Item.n >= n // 2).order(Item.n).fetch(100)),
        "count": lambda: Item.query(Item.bucket == 7).count(),
    }
    for name, fn in queries.items():
        times, res = [], None
        for _ in range(5):
            t = time.time()
            res = fn()
            times.append((time.time() - t) * 1000)
            ndb.get_context().clear_cache()
        print("%-6s results=%d median_ms=%.1f" % (name, res, statistics.median(times)), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "stub":
        import os
        os.environ.setdefault("GAE_APPLICATION", "dev~bench")
        from google.appengine.api import datastore_file_stub
        apiproxy_stub_map.apiproxy = apiproxy_stub_map.APIProxyStubMap()
        apiproxy_stub_map.apiproxy.RegisterStub(
            "datastore_v3", datastore_file_stub.DatastoreFileStub("dev~bench", None))
        work(int(sys.argv[2]) if len(sys.argv) > 2 else 100000)
        return
    ticket, n = sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 100000

    def app(environ, start_response):
        work(n)
        start_response("200 OK", [])
        return [b""]

    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["HTTP_X_APPENGINE_API_TICKET"] = ticket
    list(wrap_wsgi_app(app)(environ, lambda *a: None))


if __name__ == "__main__":
    main()
