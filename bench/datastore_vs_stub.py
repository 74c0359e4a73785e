"""Datastore benchmark: the same ndb code against Cyclozzo's API server
(bin/cz-apiserver, datastore_v3 on LMDB) and against Google's local datastore
stub (datastore_file_stub, in process, in memory), side by side. Run by hand
with build/testenv's python after `make -j2` and ./scripts/testenv.sh:

  build/testenv/bin/python bench/datastore_vs_stub.py [--n 100000] [--sample 5000]
        [--gets 5000] [--backends cz,stub,cz-nofsync] [--json FILE]

The driver starts cz-apiserver on a fresh CYCLOZZO_HOME in a temporary
directory (with --log-level debug, so the server's own latency per call is
known), mints a ticket, and runs one worker process per back end, one after
the other; then it prints one table with the ratios (stub / Cyclozzo: above 1
means Cyclozzo is faster). Back ends:
  cz          cz-apiserver as shipped (a commit returns once it is on disk)
  stub        DatastoreFileStub("dev~bench", None): Python, in memory
  cz-nofsync  cz-apiserver with fsync/fdatasync/msync turned into no-ops by an
              LD_PRELOAD shim compiled on the fly: what a commit costs without
              waiting for the disk (the effect of the LMDB spec's nosync=1,
              which cz-apiserver has no switch for). Not a supported mode.
  cz-pg       cz-apiserver with --datastore on a PostgreSQL server started for
              the run (tests/integration/pgserver.py: local, fsync on)

Each worker runs inside one request (the SDK's wrap_wsgi_app with the ticket
in X-AppEngine-Api-Ticket, as the runtime does) with ndb's in-context cache
and memcache off, over kind Item {n, bucket = n % 100, label}:
  load       N - SAMPLE entities with put_multi, 500 per call (per-batch times)
  put        SAMPLE entities with one ndb put per call (per-call times): the
             "puts" figure; the rest of N was loaded by put_multi to keep the
             run bounded, as the output says
  get        GETS single gets by key (one key per call, random keys)
  get_rpc    the first 2000 of those keys again as raw datastore_v3.Get calls
             through the SDK's API proxy (no ndb): the floor of one call
  q_eq       Item.bucket == 42, every match (N/100 entities)   } 5 runs each,
  q_range    Item.n >= N/2 ordered by n, first 100              } median
  q_count    Item.bucket == 7, counted                          }
The cz back ends also report the on-disk size of CYCLOZZO_HOME/datastore
(allocated blocks, du) after loading, divided by N, and, from the server's
debug log, the server-side latency of each Put/Get/RunQuery call, so the
client-side remainder (SDK encoding, HTTP, Python) can be told apart.

--strace PREFIX runs cz-apiserver under `strace -c -w -f` (wall time per
syscall, all threads) and leaves the summary in PREFIX.cz: how much of a
put is fdatasync/fsync. strace slows every syscall, so use it for a
separate, smaller run, not for the table.

  python bench/datastore_vs_stub.py worker stub N SAMPLE GETS
  python bench/datastore_vs_stub.py worker api TICKET N SAMPLE GETS  (API_HOST/API_PORT set)
run one back end and print its figures as one JSON line.
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APISERVER = os.path.join(ROOT, "bin", "cz-apiserver")
APP = "dev~bench"
BATCH = 500
QUERY_RUNS = 5
RPC_GETS = 2000

NOFSYNC_C = r"""
/* nofsync.c - LD_PRELOAD shim for the datastore benchmark: every sync call
 * returns at once, to measure what a commit costs without the disk. */
#include <sys/types.h>
int fsync(int fd) { (void)fd; return 0; }
int fdatasync(int fd) { (void)fd; return 0; }
int msync(void *a, size_t n, int f) { (void)a; (void)n; (void)f; return 0; }
int sync_file_range(int fd, off_t o, off_t n, unsigned f) { (void)fd; (void)o; (void)n; (void)f; return 0; }
"""


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(ms, entities_per_call=1):
    total = sum(ms) / 1000.0
    return {"calls": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99),
            "mean_ms": statistics.mean(ms) if ms else float("nan"),
            "per_s": len(ms) * entities_per_call / total if total else float("nan")}


# ---- worker: one back end ----

def work(n, sample, gets, home=None):
    from google.appengine.ext import ndb

    class Item(ndb.Model):
        n = ndb.IntegerProperty()
        bucket = ndb.IntegerProperty()
        label = ndb.StringProperty()
        _use_memcache = False
        _use_cache = False

    ctx = ndb.get_context()
    ctx.set_cache_policy(False)
    ctx.set_memcache_policy(False)

    def mk(j):
        return Item(id=j + 1, n=j, bucket=j % 100, label="item%d" % j)

    out = {"n": n, "sample": sample}
    now = time.perf_counter
    loaded = n - sample
    batch_ms = []
    t0 = now()
    for i in range(0, loaded, BATCH):
        ents = [mk(j) for j in range(i, min(loaded, i + BATCH))]
        t = now()
        ndb.put_multi(ents)
        batch_ms.append((now() - t) * 1000)
    out["load"] = summary(batch_ms, BATCH)
    out["load"]["entities"] = loaded
    out["load"]["seconds"] = now() - t0
    print("load  put_multi entities=%d seconds=%.1f" % (loaded, now() - t0), file=sys.stderr, flush=True)

    put_ms = []
    for j in range(loaded, n):
        e = mk(j)
        t = now()
        e.put()
        put_ms.append((now() - t) * 1000)
    out["put"] = summary(put_ms)
    print("put   single entities=%d p50_ms=%.3f" % (sample, out["put"]["p50_ms"]), file=sys.stderr, flush=True)

    if home and os.path.isdir(os.path.join(home, "datastore")):
        d = os.path.join(home, "datastore")
        alloc = int(subprocess.run(["du", "-s", "--block-size=1", d], capture_output=True,
                                   text=True, check=True).stdout.split()[0])
        apparent = int(subprocess.run(["du", "-s", "--block-size=1", "--apparent-size", d],
                                      capture_output=True, text=True, check=True).stdout.split()[0])
        out["disk"] = {"bytes": alloc, "apparent_bytes": apparent, "per_entity": alloc / n}

    rnd = random.Random(1)
    keys = [ndb.Key(Item, rnd.randrange(1, n + 1)) for _ in range(gets)]
    get_ms = []
    for k in keys:
        t = now()
        e = k.get(use_cache=False, use_memcache=False)
        get_ms.append((now() - t) * 1000)
        assert e is not None and e.n == k.id() - 1
    out["get"] = summary(get_ms)
    print("get   single calls=%d p50_ms=%.3f" % (gets, out["get"]["p50_ms"]), file=sys.stderr, flush=True)

    # The same gets as raw datastore_v3.Get RPCs through the SDK's API proxy,
    # without ndb: the floor of a call (stub: a dict lookup in process; cz:
    # the SDK's HTTP transport plus the server).
    from google.appengine.api import apiproxy_stub_map
    from google.appengine.datastore import datastore_pb
    rpc_ms = []
    for k in keys[:RPC_GETS]:
        req = datastore_pb.GetRequest()
        req.key.add().CopyFrom(k.reference())
        resp = datastore_pb.GetResponse()
        t = now()
        apiproxy_stub_map.MakeSyncCall("datastore_v3", "Get", req, resp)
        rpc_ms.append((now() - t) * 1000)
        assert resp.entity[0].HasField("entity")
    out["get_rpc"] = summary(rpc_ms)

    queries = {
        "q_eq": (lambda: len(Item.query(Item.bucket == 42).fetch()), n // 100),
        "q_range": (lambda: len(Item.query(Item.n >= n // 2).order(Item.n).fetch(100)), min(100, n - n // 2)),
        "q_count": (lambda: Item.query(Item.bucket == 7).count(), n // 100),
    }
    for name, (fn, want) in queries.items():
        ms = []
        for _ in range(QUERY_RUNS):
            t = now()
            got = fn()
            ms.append((now() - t) * 1000)
            assert got == want, (name, got, want)
        out[name] = {"results": want, "median_ms": statistics.median(ms), "max_ms": max(ms),
                     "runs": ms}
        print("%-7s results=%d median_ms=%.1f" % (name, want, statistics.median(ms)), file=sys.stderr, flush=True)
    return out


def worker(argv):
    kind = argv[0]
    if kind == "stub":
        n, sample, gets = map(int, argv[1:4])
        os.environ.setdefault("GAE_APPLICATION", APP)
        from google.appengine.api import apiproxy_stub_map, datastore_file_stub
        apiproxy_stub_map.apiproxy = apiproxy_stub_map.APIProxyStubMap()
        apiproxy_stub_map.apiproxy.RegisterStub(
            "datastore_v3", datastore_file_stub.DatastoreFileStub(APP, None))
        print(json.dumps(work(n, sample, gets)), flush=True)
        return
    import wsgiref.util
    from google.appengine.api import wrap_wsgi_app
    ticket = argv[1]
    n, sample, gets = map(int, argv[2:5])
    res = {}

    def app(environ, start_response):
        res.update(work(n, sample, gets, os.environ.get("CYCLOZZO_HOME")))
        start_response("200 OK", [])
        return [b""]

    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["HTTP_X_APPENGINE_API_TICKET"] = ticket
    list(wrap_wsgi_app(app)(environ, lambda *a: None))
    print(json.dumps(res), flush=True)


# ---- driver ----

def server_latencies(log_path):
    """Server-side latency_us of each datastore_v3 call, by method, from the debug log."""
    by = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            line = line.replace('call="', "call=")
            if "call=datastore_v3." not in line or "latency_us=" not in line:
                continue
            call = line.split("call=datastore_v3.", 1)[1].split()[0].strip('"')
            us = int(line.split("latency_us=", 1)[1].split()[0])
            by.setdefault(call, []).append(us / 1000.0)
    return by


def stop_server(srv, straced):
    """SIGTERM to cz-apiserver; under strace, to strace's child (strace itself
    would keep the server running), after which strace writes its summary."""
    if straced:
        try:
            with open("/proc/%d/task/%d/children" % (srv.pid, srv.pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        for pid in kids:
            os.kill(pid, signal.SIGTERM)
    else:
        srv.terminate()
    srv.wait(timeout=60)


def run_cz(args, tmp, nofsync, name=None, datastore=None, disk=None):
    name = name or ("cz-nofsync" if nofsync else "cz")
    home = os.path.join(tmp, name)
    os.makedirs(home)
    env = dict(os.environ)
    if datastore:
        env["CYCLOZZO_DATASTORE"] = datastore
    if nofsync:
        so = os.path.join(tmp, "nofsync.so")
        if not os.path.exists(so):
            src = os.path.join(tmp, "nofsync.c")
            with open(src, "w") as f:
                f.write(NOFSYNC_C)
            subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", so, src], check=True)
        env["LD_PRELOAD"] = so
    logf = open(os.path.join(home, "apiserver.log"), "wb")
    cmd = [APISERVER, "--home", home, "--port", "0", "--app", APP, "--log-level", "debug"]
    if args.strace:
        # Wall-clock time per syscall (-w), all threads (-f), summed at exit.
        cmd = ["strace", "-c", "-w", "-f", "-o", "%s.%s" % (args.strace, name)] + cmd
    srv = subprocess.Popen(cmd,
                           stdout=subprocess.PIPE, stderr=logf, text=True, env=env)
    try:
        line = srv.stdout.readline()
        if not line.startswith("port="):
            raise SystemExit("cz-apiserver did not start: %r (see %s/apiserver.log)" % (line, home))
        port = line.strip().split("=", 1)[1]
        ticket = subprocess.run([APISERVER, "--home", home, "--mint-ticket", APP, "--ttl", "86400"],
                                capture_output=True, text=True, check=True).stdout.strip()
        cenv = dict(os.environ, API_HOST="127.0.0.1", API_PORT=port, GAE_APPLICATION=APP, CYCLOZZO_HOME=home)
        p = subprocess.run([sys.executable, "-W", "ignore", __file__, "worker", "api", ticket,
                            str(args.n), str(args.sample), str(args.gets)],
                           stdout=subprocess.PIPE, text=True, env=cenv)
        if p.returncode != 0:
            raise SystemExit("%s worker failed (exit %d)" % (name, p.returncode))
        res = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        stop_server(srv, bool(args.strace))
        logf.close()
    if disk:
        b = disk()
        res["disk"] = {"bytes": b, "apparent_bytes": b, "per_entity": b / args.n}
    lat = server_latencies(os.path.join(home, "apiserver.log"))
    res["server"] = {m: {"calls": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for m, v in lat.items()}
    # The single-put phase: the Put calls that carried one entity are the last
    # `sample` Puts (load batches come first).
    puts = lat.get("Put", [])
    if len(puts) >= args.sample:
        single = puts[-args.sample:]
        res["server"]["Put_single"] = {"calls": len(single), "p50_ms": pct(single, 50), "p99_ms": pct(single, 99)}
        batches = puts[:-args.sample]
        res["server"]["Put_batch"] = {"calls": len(batches), "p50_ms": pct(batches, 50), "p99_ms": pct(batches, 99)}
    gets = lat.get("Get", [])
    if len(gets) >= args.gets:
        g = gets[:args.gets]   # the ndb gets; the raw Get RPCs follow
        res["server"]["Get_single"] = {"calls": len(g), "p50_ms": pct(g, 50), "p99_ms": pct(g, 99)}
    return res


def run_stub(args):
    p = subprocess.run([sys.executable, "-W", "ignore", __file__, "worker", "stub",
                        str(args.n), str(args.sample), str(args.gets)], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("stub worker failed (exit %d)" % p.returncode)
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(results, args):
    names = list(results)
    stub = results.get("stub")
    lines = []
    w = lambda *c: lines.append("  ".join(c))
    cols = ["%-26s" % "figure"] + ["%14s" % b for b in names]
    if stub:
        cols += ["%14s" % ("stub/" + b) for b in names if b != "stub"]
    w(*cols)

    def row(label, get, fmt="%14.3f", ratio=True):
        vals = [get(results[b]) for b in names]
        c = ["%-26s" % label] + [fmt % v if v is not None else "%14s" % "-" for v in vals]
        if stub:
            sv = get(stub)
            for b in names:
                if b == "stub":
                    continue
                v = get(results[b])
                c.append("%13.1fx" % (sv / v) if ratio and v and sv else "%14s" % "")
        w(*c)

    row("put single p50 ms", lambda r: r["put"]["p50_ms"])
    row("put single p99 ms", lambda r: r["put"]["p99_ms"])
    row("put single mean ms", lambda r: r["put"]["mean_ms"])
    row("put_multi/500 p50 ms", lambda r: r["load"]["p50_ms"])
    row("put_multi/500 p99 ms", lambda r: r["load"]["p99_ms"])
    row("put_multi ms per entity", lambda r: 1000.0 / r["load"]["per_s"], fmt="%14.4f")
    row("get single p50 ms", lambda r: r["get"]["p50_ms"])
    row("get single p99 ms", lambda r: r["get"]["p99_ms"])
    row("get single mean ms", lambda r: r["get"]["mean_ms"])
    row("raw Get RPC p50 ms", lambda r: r["get_rpc"]["p50_ms"])
    row("raw Get RPC p99 ms", lambda r: r["get_rpc"]["p99_ms"])
    for q in ("q_eq", "q_range", "q_count"):
        row("%s median ms (of %d)" % (q, QUERY_RUNS), lambda r, q=q: r[q]["median_ms"], fmt="%14.1f")
        row("%s max ms" % q, lambda r, q=q: r[q]["max_ms"], fmt="%14.1f")
    for b in names:
        r = results[b]
        if "disk" in r:
            w("%-26s  %s: %d bytes allocated (%d apparent) / %d entities = %.0f bytes/entity"
              % ("disk after load", b, r["disk"]["bytes"], r["disk"]["apparent_bytes"], args.n,
                 r["disk"]["per_entity"]))
    for b in names:
        s = results[b].get("server")
        if not s:
            continue
        for m in ("Put_single", "Put_batch", "Get_single", "RunQuery", "Next"):
            if m in s:
                w("%-26s  %s: server-side %s p50 %.3f ms p99 %.3f ms (%d calls)"
                  % ("server latency", b, m, s[m]["p50_ms"], s[m]["p99_ms"], s[m]["calls"]))
    lines.append("(put_multi entities/s: %s)" % ", ".join("%s %.0f" % (b, results[b]["load"]["per_s"]) for b in names))
    lines.append("(single puts timed on the last %d of N=%d entities; the first %d were loaded with put_multi "
                 "in batches of %d)" % (args.sample, args.n, args.n - args.sample, BATCH))
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description="ndb puts, gets and queries: cz-apiserver vs the SDK's stub")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--sample", type=int, default=5000, help="entities written with single puts")
    ap.add_argument("--gets", type=int, default=5000)
    ap.add_argument("--backends", default="cz,stub")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--strace", metavar="PREFIX",
                    help="run cz-apiserver under strace -c -w -f; the syscall summary goes to PREFIX.BACKEND")
    ap.add_argument("--keep", action="store_true", help="keep the temporary CYCLOZZO_HOMEs")
    args = ap.parse_args()
    if not os.access(APISERVER, os.X_OK):
        raise SystemExit("%s is missing: run make -j2 first" % APISERVER)
    tmp = tempfile.mkdtemp(prefix="cz-dsbench-")
    results = {}
    try:
        for b in args.backends.split(","):
            t = time.time()
            print("== %s (N=%d, single-put sample %d, gets %d); load: %s"
                  % (b, args.n, args.sample, args.gets, os.getloadavg()), file=sys.stderr, flush=True)
            if b == "stub":
                results[b] = run_stub(args)
            elif b in ("cz", "cz-nofsync"):
                results[b] = run_cz(args, tmp, b == "cz-nofsync")
            elif b == "cz-pg":
                sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
                from pgserver import PgServer
                pg = PgServer()
                try:
                    # Table, index and TOAST, as PostgreSQL counts them.
                    size = lambda: int(pg.psql("SELECT pg_total_relation_size('kv')"))
                    results[b] = run_cz(args, tmp, False, name="cz-pg", datastore=pg.uri(), disk=size)
                finally:
                    pg.stop()
            else:
                raise SystemExit("unknown back end %r (cz, stub, cz-nofsync, cz-pg)" % b)
            print("== %s done in %.0f s; load: %s" % (b, time.time() - t, os.getloadavg()),
                  file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print("kept %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
