"""Memcache through Google's own SDK (google.appengine.api.memcache) against
bin/cz-apiserver: every public behaviour the SDK exposes, plus the few
protocol answers the SDK hides (error codes) checked with raw calls.

Every test runs twice: on the in-process cache ("embedded") and on two real
memcached servers ("memcached", --memcache-servers), which must behave the
same. The few places where memcached's one-second clock or its coarse
last-access time show are marked where they are."""
import time

import pytest

from apiserver_sdk import ApiServer, raw_call, restore, use_ticket, wait_until
from memcached_servers import MemcachedServers

from google.appengine.api import memcache, namespace_manager
from google.appengine.api.memcache import memcache_service_pb2 as pb
from google.appengine.runtime import apiproxy_errors

APP = "dev~mcapp"
OTHER = "dev~otherapp"


@pytest.fixture(params=["embedded", "memcached"])
def backend(request):
    """None for the in-process cache, else the running MemcachedServers."""
    if request.param == "embedded":
        yield None
    else:
        with MemcachedServers(2) as servers:
            yield servers


def backend_args(backend):
    return ("--memcache-servers", backend.spec) if backend else ()


@pytest.fixture
def server(tmp_path, backend):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home), args=backend_args(backend))
    s.backend = backend
    s.tickets = {APP: s.mint(APP), OTHER: s.mint(OTHER)}
    use_ticket(s, s.tickets[APP])
    namespace_manager.set_namespace("")
    yield s
    restore()
    s.stop()


@pytest.fixture
def mc(server):
    return memcache.Client()


def test_set_get_add_replace(mc):
    assert mc.get("k") is None
    assert mc.set("k", b"v1") is True
    assert mc.get("k") == b"v1"
    assert mc.add("k", b"v2") is False
    assert mc.get("k") == b"v1"
    assert mc.add("new", b"n") is True
    assert mc.replace("missing", b"x") is False
    assert mc.get("missing") is None
    assert mc.replace("k", b"v3") is True
    assert mc.get("k") == b"v3"
    assert mc.set("k", b"v4") is True
    assert mc.get("k") == b"v4"


def test_types_and_flags_preserved(mc):
    values = {"s": "unicodé", "b": b"\x00\xffraw", "i": 42, "t": True,
              "f": 2.5, "d": {"a": [1, 2]}, "big": 2**70}
    for k, v in values.items():
        assert mc.set(k, v)
    for k, v in values.items():
        got = mc.get(k)
        assert got == v and type(got) is type(v), k
    # The flags travel untouched: check them on the wire too.
    resp = raw_call("memcache", "Get", pb.MemcacheGetRequest(key=[b"i", b"s"]), pb.MemcacheGetResponse())
    flags = {item.key: item.flags for item in resp.item}
    assert flags == {b"i": memcache.TYPE_INT, b"s": memcache.TYPE_UNICODE}


def test_gets_and_cas(server, mc):
    other = memcache.Client()
    assert mc.cas("c", b"x") is False            # no gets before: nothing to compare
    mc.set("c", b"1")
    assert mc.gets("c") == b"1"
    assert mc.cas("c", b"2") is True
    assert mc.get("c") == b"2"
    assert mc.cas("c", b"3") is False            # the cas id was used up by the store
    mc.gets("c")
    other.set("c", b"changed")                    # someone else writes in between
    assert mc.cas("c", b"mine") is False
    assert mc.get("c") == b"changed"
    assert mc.gets("c") == b"changed"
    assert mc.cas("c", b"mine") is True
    assert mc.get("c") == b"mine"
    mc.gets("c")
    mc.delete("c")
    assert mc.cas("c", b"gone") is False         # deleted meanwhile: NOT_STORED
    # cas_multi and get_multi(for_cas=True)
    mc.set_multi({"x": b"1", "y": b"2"})
    assert mc.get_multi(["x", "y"], for_cas=True) == {"x": b"1", "y": b"2"}
    other.set("y", b"other")
    assert mc.cas_multi({"x": b"10", "y": b"20"}) == ["y"]
    assert mc.get_multi(["x", "y"]) == {"x": b"10", "y": b"other"}


def test_delete_and_hold(mc):
    assert mc.delete("nothing") == memcache.DELETE_ITEM_MISSING
    mc.set("d", b"v")
    assert mc.delete("d") == memcache.DELETE_SUCCESSFUL
    assert mc.get("d") is None
    assert mc.add("d", b"again") is True          # no hold: add works at once

    mc.set("h", b"v")
    start = time.time()
    assert mc.delete("h", seconds=2) == memcache.DELETE_SUCCESSFUL
    assert mc.get("h") is None
    assert mc.add("h", b"blocked") is False       # held
    assert mc.replace("h", b"blocked") is False
    assert mc.delete("h") == memcache.DELETE_ITEM_MISSING
    assert mc.get("h") is None
    wait_until(start + 3.1)
    assert mc.add("h", b"after") is True
    assert mc.get("h") == b"after"

    mc.set("h2", b"v")
    mc.delete("h2", seconds=30)
    assert mc.add("h2", b"no") is False
    assert mc.set("h2", b"set wins") is True      # set ignores the hold
    assert mc.get("h2") == b"set wins"


def test_incr_decr(mc):
    assert mc.incr("n") is None                    # missing, no initial value
    assert mc.get("n") is None
    assert mc.incr("n", initial_value=10) == 11
    assert mc.incr("n", delta=5) == 16
    assert mc.get("n") == 16                       # stored as an int (initial_flags)
    assert mc.decr("n", delta=6) == 10
    assert mc.decr("n", delta=100) == 0            # floors at zero
    assert mc.decr("fresh", delta=3, initial_value=5) == 2
    assert mc.set("wrap", 2**64 - 1)
    assert mc.incr("wrap", delta=2) == 1           # unsigned 64-bit wrap
    assert mc.set("s", b"17")
    assert mc.incr("s") == 18
    assert mc.get("s") == b"18"                    # flags (plain bytes) kept
    assert mc.set("text", b"not a number")
    assert mc.incr("text") is None
    assert mc.get("text") == b"not a number"
    # The SDK hides the error; on the wire it is INVALID_VALUE.
    with pytest.raises(apiproxy_errors.ApplicationError) as e:
        raw_call("memcache", "Increment", pb.MemcacheIncrementRequest(key=b"text", delta=1),
                 pb.MemcacheIncrementResponse())
    assert e.value.application_error == pb.MemcacheServiceError.INVALID_VALUE
    with pytest.raises(ValueError):
        mc.incr("n", delta=-1)


def test_batch_forms(mc):
    assert mc.set_multi({"a": b"1", "b": b"2", "c": 3}) == []
    assert mc.get_multi(["a", "b", "c", "zz"]) == {"a": b"1", "b": b"2", "c": 3}
    assert mc.get_multi(["a", "b"], key_prefix="") == {"a": b"1", "b": b"2"}
    assert mc.set_multi({"1": b"x", "2": b"y"}, key_prefix="p:") == []
    assert mc.get_multi(["1", "2"], key_prefix="p:") == {"1": b"x", "2": b"y"}
    assert mc.get("p:1") == b"x"
    assert sorted(mc.add_multi({"a": b"new", "d": b"4"})) == ["a"]
    assert sorted(mc.replace_multi({"a": b"A", "zz": b"Z"})) == ["zz"]
    assert mc.get_multi(["a", "d", "zz"]) == {"a": b"A", "d": b"4"}
    assert mc.offset_multi({"c": 10, "d": -1, "none": 1}) == {"c": 13, "d": 3, "none": None}
    assert mc.offset_multi({"none": 2, "e": -5}, initial_value=4) == {"none": 6, "e": 0}
    assert mc.offset_multi({"a": 1}) == {"a": None}          # not a number
    assert mc.delete_multi(["a", "b", "c"]) is True
    assert mc.get_multi(["a", "b", "c", "d"]) == {"d": b"3"}
    assert mc.delete_multi(["never-there"]) is True          # missing is not a failure
    resp = raw_call("memcache", "Delete",
                    pb.MemcacheDeleteRequest(item=[pb.MemcacheDeleteRequest.Item(key=b"d"),
                                                   pb.MemcacheDeleteRequest.Item(key=b"q")]),
                    pb.MemcacheDeleteResponse())
    assert list(resp.delete_status) == [pb.MemcacheDeleteResponse.DELETED,
                                        pb.MemcacheDeleteResponse.NOT_FOUND]


def test_flush_all(mc):
    mc.set_multi({"a": b"1", "b": b"2"})
    mc.set("c", b"3", namespace="ns")
    assert mc.flush_all() is True
    assert mc.get_multi(["a", "b"]) == {}
    assert mc.get("c", namespace="ns") is None
    assert mc.get_stats()["items"] == 0


def test_stats(mc):
    s = mc.get_stats()
    assert s == {"hits": 0, "misses": 0, "byte_hits": 0, "items": 0, "bytes": 0, "oldest_item_age": 0}
    mc.set("key1", b"hello")          # 4 + 5 bytes
    mc.set("k2", b"xyz")              # 2 + 3 bytes
    assert mc.get("key1") == b"hello"
    assert mc.get("key1") == b"hello"
    assert mc.get("nope") is None
    assert mc.get_multi(["k2", "nope2"]) == {"k2": b"xyz"}
    s = mc.get_stats()
    assert s["hits"] == 3
    assert s["misses"] == 2
    assert s["byte_hits"] == 9 + 9 + 5
    assert s["items"] == 2
    assert s["bytes"] == 9 + 5
    assert 0 <= s["oldest_item_age"] <= 1
    time.sleep(2.1)
    mc.set("key1", b"hello")           # k2 is now the least recently used
    s = mc.get_stats()
    assert 2 <= s["oldest_item_age"] <= 4
    mc.delete("k2")
    s = mc.get_stats()
    assert s["items"] == 1 and s["bytes"] == 9
    assert s["oldest_item_age"] <= 1


def test_namespaces(mc):
    mc.set("k", b"default")
    mc.set("k", b"in-a", namespace="a")
    mc.set("k", b"in-b", namespace="b")
    assert mc.get("k") == b"default"
    assert mc.get("k", namespace="a") == b"in-a"
    assert mc.get("k", namespace="b") == b"in-b"
    assert mc.get("k", namespace="c") is None
    namespace_manager.set_namespace("a")
    try:
        assert mc.get("k") == b"in-a"                 # the namespace_manager default
        assert mc.incr("n", initial_value=0) == 1
        assert mc.delete("k") == memcache.DELETE_SUCCESSFUL
    finally:
        namespace_manager.set_namespace("")
    assert mc.get("k") == b"default"
    assert mc.get("n") is None
    assert mc.get("n", namespace="a") == 1
    assert mc.get("k", namespace="b") == b"in-b"
    mc.gets("k", namespace="b")
    assert mc.cas("k", b"cas-b", namespace="b") is True
    assert mc.get("k", namespace="b") == b"cas-b"


def test_relative_and_absolute_expiration(server, mc):
    # memcached's clock ticks in whole seconds: an absolute time is honoured
    # to within a second there.
    slack = 1.0 if server.backend else 0.0
    start = time.time()
    assert mc.set("rel", b"r", time=1)
    assert mc.set("rel_f", b"r", time=0.2)            # rounded up to a second
    absolute = int(start) + 2
    assert mc.set("abs", b"a", time=absolute)
    assert mc.set("forever", b"f")
    assert mc.set("past", b"p", time=int(start) - 3600 * 24 * 40)   # absolute, long gone
    assert mc.get("rel") == b"r"
    assert mc.get("abs") == b"a"
    assert mc.get("past") is None
    assert mc.add("past", b"p2") is True              # an expired item does not block add
    wait_until(start + 2.2)
    assert mc.get("rel") is None
    assert mc.get("rel_f") is None
    assert mc.get("forever") == b"f"
    wait_until(absolute + 0.3 + slack)
    assert mc.get("abs") is None
    s = mc.get_stats()
    assert s["items"] == 2                            # forever, past (re-added)


def test_value_size_limit(mc):
    v = b"x" * 10**6                                  # the SDK's MAX_VALUE_SIZE
    assert mc.set("big", v) is True
    assert mc.get("big") == v
    with pytest.raises(ValueError):
        mc.set("too-big", b"x" * (10**6 + 1))
    # The server refuses what the SDK would not send: > 1 MiB item.
    req = pb.MemcacheSetRequest(item=[pb.MemcacheSetRequest.Item(key=b"raw", value=b"y" * (1 << 20))])
    resp = raw_call("memcache", "Set", req, pb.MemcacheSetResponse())
    assert list(resp.set_status) == [pb.MemcacheSetResponse.ERROR]
    assert mc.get("raw") is None
    # Long keys are hashed by the SDK and still work.
    long_key = "k" * 1000
    assert mc.set(long_key, b"long") is True
    assert mc.get(long_key) == b"long"
    # The longest key the SDK sends unhashed, in a long namespace: more than
    # memcached's 250 bytes once app and namespace are added (hashed there).
    near, ns = "q" * 250, "ns" * 40
    assert mc.set(near, b"near", namespace=ns) is True
    assert mc.set(near[:-1] + "r", b"other", namespace=ns) is True
    assert mc.get(near, namespace=ns) == b"near"
    assert mc.get(near) is None
    assert mc.incr(near[:-1] + "s", namespace=ns, initial_value=1) == 2
    assert mc.delete(near, namespace=ns) == memcache.DELETE_SUCCESSFUL
    assert mc.get(near, namespace=ns) is None


def test_apps_are_isolated(server):
    a = memcache.Client()
    a.set("shared", b"from-a")
    a.set("n", 5)
    use_ticket(server, server.tickets[OTHER])
    b = memcache.Client()
    assert b.get("shared") is None
    assert b.incr("n") is None
    assert b.get_stats()["items"] == 0
    b.set("shared", b"from-b")
    assert b.flush_all() is True
    # The SDK's app override cannot reach another app's memcache.
    with pytest.raises(apiproxy_errors.ApplicationError) as e:
        req = pb.MemcacheGetRequest(key=[b"shared"])
        req.override.app_id = "mcapp"
        raw_call("memcache", "Get", req, pb.MemcacheGetResponse())
    assert e.value.application_error == pb.MemcacheServiceError.PERMISSION_DENIED
    assert memcache.Client(_app_id="mcapp").get("shared") is None
    use_ticket(server, server.tickets[APP])
    assert a.get("shared") == b"from-a"            # b's flush left a alone
    assert a.get("n") == 5
    assert a.get_stats()["items"] == 2
    # Overriding with one's own id is allowed.
    assert memcache.Client(_app_id="mcapp").get("shared") == b"from-a"


def test_call_without_valid_ticket_is_refused(server, mc):
    use_ticket(server, "not-a-ticket")
    try:
        with pytest.raises(apiproxy_errors.Error):
            raw_call("memcache", "Get", pb.MemcacheGetRequest(key=[b"k"]), pb.MemcacheGetResponse())
    finally:
        use_ticket(server, server.tickets[APP])


def test_get_refreshes_age(server, mc):
    """A read makes an item recently used. memcached records a read in its
    last-access time at most once a minute, so this is the embedded cache's."""
    if server.backend:
        pytest.skip("memcached refreshes last access on reads once a minute")
    mc.set("a", b"1")
    mc.set("b", b"2")
    time.sleep(2.1)
    mc.get("a")
    mc.delete("b")
    assert mc.get_stats()["oldest_item_age"] <= 1


def test_cap_and_eviction(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home), extra_env={"CYCLOZZO_MEMCACHE_MB": "4"})
    try:
        use_ticket(s, s.mint(APP))
        mc = memcache.Client()
        chunk = b"z" * 100_000
        for i in range(100):                         # 10 MB into a 4 MiB cache
            assert mc.set("k%d" % i, chunk) is True
            if i >= 1:
                mc.get("k0")                         # keep k0 recently used
        st = mc.get_stats()
        assert st["bytes"] <= 4 << 20
        assert st["items"] < 42
        assert mc.get("k99") == chunk
        assert mc.get("k1") is None                  # evicted, least recently used
        assert mc.get("k0") == chunk                 # kept: it was used all along
    finally:
        restore()
        s.stop()


def test_concurrent_increments_and_sets(server):
    """The API server runs calls on a worker pool: increments from several
    threads must all count, and concurrent sets must leave whole values."""
    import threading
    from google.appengine.runtime import default_api_stub
    memcache.Client().set("ctr", 0)
    errors = []

    def work(tid):
        try:
            default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)
            c = memcache.Client()
            for i in range(100):
                if c.incr("ctr") is None:
                    errors.append("incr failed")
                c.set("shared", bytes([65 + tid]) * 5000)
                v = c.get("shared")
                if v is None or len(set(v)) != 1 or len(v) != 5000:
                    errors.append("torn value")
        except Exception as e:  # surfaced below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert memcache.Client().get("ctr") == 400


def test_peek(mc):
    now = int(time.time())
    mc.set("p", b"val", time=100)
    it = mc.peek("p")
    assert it.get_value() == b"val"
    assert now + 99 <= it.get_expiration_time_sec() <= now + 101
    assert abs(it.get_last_access_time_sec() - now) <= 1
    assert it.get_delete_lock_time_sec() == 0
    mc.delete("p", seconds=50)
    it = mc.peek("p")                               # peek sees the held key
    assert it.get_value() == ""
    assert now + 49 <= it.get_delete_lock_time_sec() <= now + 51
    assert mc.get("p") is None
    assert mc.peek("never") is None


@pytest.fixture
def cluster(tmp_path):
    """cz-apiserver on two memcached servers (memcached backend only)."""
    with MemcachedServers(2) as servers:
        home = tmp_path / "home"
        home.mkdir()
        s = ApiServer(str(home), args=backend_args(servers))
        s.backend = servers
        use_ticket(s, s.mint(APP))
        namespace_manager.set_namespace("")
        try:
            yield s
        finally:
            restore()
            s.stop()


def test_keys_spread_over_servers(cluster):
    mc = memcache.Client()
    assert mc.set_multi({"spread%d" % i: b"v%d" % i for i in range(200)}) == []
    counts = [cluster.backend.curr_items(i) for i in range(2)]
    assert sum(counts) == 200
    assert min(counts) >= 40, counts              # consistent hashing uses both
    got = mc.get_multi(["spread%d" % i for i in range(200)])   # one multi-get over both
    assert got == {"spread%d" % i: b"v%d" % i for i in range(200)}
    assert mc.get_stats()["items"] == 200          # stats add up both servers
    assert mc.flush_all() is True
    assert [cluster.backend.curr_items(i) for i in range(2)] == [0, 0]


def test_server_killed_mid_test(cluster):
    mc = memcache.Client()
    keys = ["k%d" % i for i in range(100)]
    assert mc.set_multi({k: k.encode() for k in keys}) == []
    before = cluster.backend.curr_items(1)
    assert before > 0
    cluster.backend.kill(1)
    got = mc.get_multi(keys)                       # the dead server's keys miss
    assert 0 < len(got) < 100
    assert len(got) == 100 - before
    assert all(got[k] == k.encode() for k in got)
    lost = [k for k in keys if k not in got]
    assert mc.set(lost[0], b"x") is False          # sets to it fail soft
    assert mc.get(lost[0]) is None
    assert mc.set(next(iter(got)), b"still") is True   # the other server works on
    assert mc.incr(lost[1], initial_value=1) is None
    assert mc.delete(lost[2]) == memcache.DELETE_ITEM_MISSING
    assert isinstance(mc.get_stats(), dict)        # the live server still counts
    cluster.backend.start(1)                       # back, empty, on the same port
    deadline = time.time() + 10
    while mc.set(lost[0], b"back") is not True:
        assert time.time() < deadline, "no recovery after the server returned"
        time.sleep(0.2)
    assert mc.get(lost[0]) == b"back"
    with open(cluster.log) as f:
        warnings = [l for l in f if "memcached server unreachable" in l]
    assert len(warnings) == 1, warnings            # logged once, not per call


# An app (no SDK in its environment) that sets one memcache item with a
# hand-encoded remote_api call, as the SDK would, through the daemon's API
# server.
RAW_MEMCACHE_APP = r'''
import http.client, os

def field(num, data):
    n, out = len(data), bytes([(num << 3) | 2])
    while n >= 0x80:
        out += bytes([(n & 0x7f) | 0x80]); n >>= 7
    return out + bytes([n]) + data

def app(environ, start_response):
    item = b"\x0b" + field(2, b"daemon-key") + field(3, b"daemon-value") + b"\x25\x00\x00\x00\x00\x0c"
    req = (field(2, b"memcache") + field(3, b"Set") + field(4, item)
           + field(5, environ["HTTP_X_APPENGINE_API_TICKET"].encode()))
    c = http.client.HTTPConnection(os.environ["API_HOST"], int(os.environ["API_PORT"]), timeout=10)
    c.request("POST", "/rpc_http", req, {"Content-Type": "application/octet-stream"})
    body = c.getresponse().read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]
'''


def test_daemon_option_puts_memcache_on_memcached(tmp_path, cz_env):
    from conftest import cz, free_port
    d = tmp_path / "mcdapp"
    d.mkdir()
    (d / "main.py").write_text(RAW_MEMCACHE_APP)
    (d / "app.yaml").write_text("runtime: python311\n")
    import requests
    with MemcachedServers(2) as servers:
        port = free_port()
        cz("--start", "application", "--dir", str(d), "--port", str(port), "--no-sandbox",
           "--memcache-servers", servers.spec, env=cz_env)
        try:
            body = requests.get("http://127.0.0.1:%d/" % port, timeout=30).content
            assert b"\x08\x01" in body                      # set_status STORED
            dumps = [servers.command(i, "lru_crawler metadump all") for i in range(2)]
            found = [l for dump in dumps for l in dump.splitlines() if "daemon-key" in l]
            assert len(found) == 1 and "dev~mcdapp" in found[0], dumps
        finally:
            cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
    bad = cz("--start", "application", "--dir", str(d), "--port", str(free_port()),
             "--memcache-servers", "host:notaport", env=cz_env, check=False)
    assert bad.returncode == 2 and "notaport" in bad.stderr
