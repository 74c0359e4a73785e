"""Datastore scenarios run through Google's Python SDK (ndb and db), as an app.

Run by test_datastore_ndb.py as a subprocess with API_HOST, API_PORT and
GAE_APPLICATION pointing at bin/cz-apiserver:

    ds_client.py SCENARIO TICKET [ARG...]

The scenario runs inside a WSGI request wrapped by the SDK's wrap_wsgi_app,
with the ticket in X-AppEngine-Api-Ticket, the way the runtime hands it over.
Scenarios check what they read with assert; the last line printed is JSON:
{"ok": result} or {"error": exception class, "message": text}. ndb's caches
are turned off so every read goes to the datastore.
"""
import datetime
import json
import sys
import threading
import time
import wsgiref.util

from google.appengine.api import datastore_errors, namespace_manager, users, wrap_wsgi_app
from google.appengine.ext import db, ndb

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def no_cache():
    ctx = ndb.get_context()
    ctx.set_cache_policy(False)
    ctx.set_memcache_policy(False)


class Inner(ndb.Model):
    a = ndb.IntegerProperty()
    b = ndb.StringProperty()


class Every(ndb.Model):
    i = ndb.IntegerProperty()
    big = ndb.IntegerProperty()
    neg = ndb.IntegerProperty()
    f = ndb.FloatProperty()
    nan = ndb.FloatProperty()
    inf = ndb.FloatProperty()
    yes = ndb.BooleanProperty()
    s = ndb.StringProperty()
    uni = ndb.StringProperty()
    t = ndb.TextProperty()
    blob = ndb.BlobProperty()
    iblob = ndb.BlobProperty(indexed=True)
    dt = ndb.DateTimeProperty()
    d = ndb.DateProperty()
    tm = ndb.TimeProperty()
    g = ndb.GeoPtProperty()
    u = ndb.UserProperty()
    k = ndb.KeyProperty()
    j = ndb.JsonProperty()
    p = ndb.PickleProperty()
    st = ndb.StructuredProperty(Inner)
    lst = ndb.LocalStructuredProperty(Inner, repeated=True)
    rep = ndb.IntegerProperty(repeated=True)
    none = ndb.StringProperty()
    comp = ndb.ComputedProperty(lambda self: (self.s or "").upper())
    bk = ndb.BlobKeyProperty()
    gen = ndb.GenericProperty()


def every_values():
    from google.appengine.api import datastore_types
    return dict(
        i=42, big=2 ** 62, neg=-(2 ** 63), f=3.25, nan=float("nan"), inf=float("-inf"), yes=True,
        s="hello", uni="h\u00e9llo \u4e16\u754c \U0001f600", t="x" * 5000, blob=b"\x00\x01\xff" * 1000,
        iblob=b"\x00short\xff", dt=datetime.datetime(2021, 6, 7, 8, 9, 10, 123456),
        d=datetime.date(1999, 12, 31), tm=datetime.time(23, 59, 58, 999),
        g=ndb.GeoPt(-33.865, 151.2094), u=users.User("alice@example.com", _auth_domain="example.com"),
        k=ndb.Key("Other", 5, "Sub", "x"), j={"a": [1, 2, {"b": None}]}, p={"set": {1, 2}},
        st=Inner(a=1, b="in"), lst=[Inner(a=2), Inner(b="z")], rep=[3, 1, 2, 3], none=None,
        bk=datastore_types.BlobKey("blobkey-1"), gen=b"generic")


@scenario
def ndb_every_type():
    no_cache()
    vals = every_values()
    e = Every(id="all", **vals)
    key = e.put()
    got = key.get()
    assert got is not None
    for name, want in vals.items():
        have = getattr(got, name)
        if name == "nan":
            assert have != have, have
        else:
            assert have == want, (name, have, want)
    assert got.comp == "HELLO"
    # Empty entity, and an entity written twice with fewer properties.
    e2 = Every(id="sparse", i=1, s="one")
    e2.put()
    e2.s = None
    e2.put()
    got2 = e2.key.get()
    assert got2.i == 1 and got2.s is None
    return [key.id(), len(vals)]


class DbEvery(db.Model):
    s = db.StringProperty()
    i = db.IntegerProperty()
    f = db.FloatProperty()
    b = db.BooleanProperty()
    dt = db.DateTimeProperty()
    d = db.DateProperty()
    t = db.TimeProperty()
    lst = db.ListProperty(int)
    sl = db.StringListProperty()
    ref = db.ReferenceProperty()
    text = db.TextProperty()
    blob = db.BlobProperty()
    bs = db.ByteStringProperty()
    geo = db.GeoPtProperty()
    user = db.UserProperty()
    email = db.EmailProperty()
    link = db.LinkProperty()
    phone = db.PhoneNumberProperty()
    addr = db.PostalAddressProperty()
    rating = db.RatingProperty()
    cat = db.CategoryProperty()
    im = db.IMProperty()


@scenario
def db_every_type():
    target = DbEvery(key_name="target", s="t")
    target.put()
    vals = dict(
        s="str", i=-7, f=1e-300, b=False, dt=datetime.datetime(2000, 1, 1, 0, 0, 1),
        d=datetime.date(2001, 2, 3), t=datetime.time(4, 5, 6), lst=[1, 2, 3], sl=["a", "b"],
        text=db.Text("long " * 400), blob=db.Blob(b"\x00\xff" * 300), bs=db.ByteString(b"\x01bs"),
        geo=db.GeoPt(10, 20), user=users.User("bob@example.com", _auth_domain="example.com"),
        email=db.Email("c@example.com"), link=db.Link("http://example.com/x"),
        phone=db.PhoneNumber("+1 555 0100"), addr=db.PostalAddress("1 Main St"),
        rating=db.Rating(97), cat=db.Category("cat"), im=db.IM("xmpp", "me@example.com"))
    e = DbEvery(key_name="every", parent=target, ref=target, **vals)
    key = e.put()
    got = db.get(key)
    for name, want in vals.items():
        assert getattr(got, name) == want, (name, getattr(got, name), want)
    assert got.ref.key() == target.key()
    assert got.parent_key() == target.key()
    db.delete(key)
    assert db.get(key) is None
    # Automatic ids through db, and get of several keys with a hole.
    k1 = DbEvery(s="a").put()
    k2 = DbEvery(s="b").put()
    assert k1.id() and k2.id() and k1.id() != k2.id()
    res = db.get([k1, db.Key.from_path("DbEvery", 999999), k2])
    assert res[0].s == "a" and res[1] is None and res[2].s == "b"
    return "ok"


class Thing(ndb.Model):
    v = ndb.IntegerProperty()
    s = ndb.StringProperty()


class DbThing(db.Model):
    """The same kind as ndb's Thing, seen through db."""
    v = db.IntegerProperty()
    s = db.StringProperty()

    @classmethod
    def kind(cls):
        return "Thing"


@scenario
def namespaces_ancestors_ids():
    no_cache()
    out = {}
    for ns in ("", "alpha", "beta"):
        namespace_manager.set_namespace(ns)
        Thing(id="same", v=len(ns)).put()
    for ns in ("", "alpha", "beta"):
        key = ndb.Key(Thing, "same", namespace=ns)
        assert key.get().v == len(ns), ns
    namespace_manager.set_namespace("")
    assert ndb.Key(Thing, "same", namespace="gamma").get() is None
    # Ancestors: a three-level path, ids and names mixed.
    root = ndb.Key("Root", 1)
    mid = Thing(parent=root, id="mid", v=1).put()
    leaf = Thing(parent=mid, id=77, v=2).put()
    assert leaf.pairs() == (("Root", 1), ("Thing", "mid"), ("Thing", 77))
    assert leaf.get().v == 2 and mid.get().v == 1
    assert ndb.Key("Root", 1, "Thing", 77).get() is None
    # Automatic ids: unique, usable, and never handed out again.
    keys = ndb.put_multi([Thing(v=i) for i in range(20)])
    ids = [k.id() for k in keys]
    assert len(set(ids)) == 20 and all(isinstance(i, int) and i > 0 for i in ids)
    assert [k.get().v for k in keys] == list(range(20))
    child_keys = ndb.put_multi([Thing(parent=root, v=i) for i in range(3)])
    assert all(k.parent() == root for k in child_keys)
    first, last = Thing.allocate_ids(size=10)
    assert last - first == 9
    first2, _ = Thing.allocate_ids(size=1)
    assert first2 > last
    Thing(id=last + 1000, v=0).put()
    first3, _ = Thing.allocate_ids(size=1)
    assert first3 > last + 1000, (first3, last)
    first4, last4 = Thing.allocate_ids(max=last + 5000)
    assert last4 == last + 5000
    first5, _ = Thing.allocate_ids(size=1)
    assert first5 > last + 5000
    out["scattered"] = ids[:3]
    out["allocated"] = [first, last, first3, first5]
    # Delete, get_multi with holes.
    ndb.delete_multi(keys[:10])
    got = ndb.get_multi(keys[:12])
    assert got[:10] == [None] * 10 and got[10].v == 10
    return out


@scenario
def transactions():
    no_cache()
    a = ndb.Key(Thing, "a")
    b = ndb.Key(Thing, "b")
    ndb.put_multi([Thing(key=a, v=0), Thing(key=b, v=0)])

    @ndb.transactional
    def bump():
        e = a.get()
        e.v += 1
        e.put()
        return e.v
    assert bump() == 1

    @ndb.transactional(xg=True)
    def move(n):
        x, y = ndb.get_multi([a, b])
        x.v -= n
        y.v += n
        ndb.put_multi([x, y])
    move(5)
    assert (a.get().v, b.get().v) == (-4, 5)

    # An exception rolls back everything.
    @ndb.transactional(xg=True)
    def broken():
        x = a.get()
        x.v = 1000
        x.put()
        Thing(key=b, v=1000).put()
        raise ValueError("boom")
    try:
        broken()
        raise AssertionError("no exception")
    except ValueError:
        pass
    assert (a.get().v, b.get().v) == (-4, 5)

    # New entities with automatic ids inside a transaction.
    @ndb.transactional
    def create():
        return Thing(parent=a, v=9).put()
    k = create()
    assert k.id() and k.get().v == 9

    # The low-level datastore API's cross-group transaction.
    from google.appengine.api import datastore
    datastore.RunInTransactionOptions(datastore.CreateTransactionOptions(xg=True),
                                      lambda: datastore.Put(_set(datastore.Get(a.to_old_key()), "v", 50)))
    assert a.get().v == 50

    # db.run_in_transaction.
    def db_txn():
        x = db.get(b.to_old_key())
        x.v = 60
        x.put()
    db.run_in_transaction(db_txn)
    assert b.get().v == 60

    # Read-only transactions read, and refuse writes with BadRequestError.
    # (ndb's read_only option is refused by the SDK itself, so this uses the
    # SDK's datastore_rpc connection, which sends BeginTransaction mode=READ_ONLY.)
    from google.appengine.datastore import datastore_rpc
    conn = datastore_rpc.Connection()
    tconn = conn.new_transaction(mode=datastore_rpc.TransactionMode.READ_ONLY)
    [pb] = tconn.get([ndb.Key(Thing, "a").reference()])
    assert pb is not None
    try:
        tconn.put([pb])
        raise AssertionError("a read-only transaction wrote")
    except datastore_errors.BadRequestError:
        pass
    tconn.rollback()
    assert a.get().v == 50
    return "ok"


def _set(ent, k, v):
    ent[k] = v
    return ent


@scenario
def contention(threads, incs):
    """Several threads (each its own request) increment one counter in
    transactions; the SDK retries on CONCURRENT_TRANSACTION."""
    threads, incs = int(threads), int(incs)
    no_cache()
    key = ndb.Key(Thing, "counter")
    Thing(key=key, v=0).put()
    return {"spawn": [threads, incs]}


def counter_worker(incs, attempts):
    no_cache()
    key = ndb.Key(Thing, "counter")

    @ndb.transactional(retries=100)
    def inc():
        attempts[0] += 1
        e = key.get()
        e.v += 1
        e.put()
        time.sleep(0.001)   # widen the window so transactions overlap
    for _ in range(incs):
        inc()
    return incs


@scenario
def counter_value():
    no_cache()
    return ndb.Key(Thing, "counter").get().v


@scenario
def errors(kind):
    no_cache()
    if kind == "too_big":
        Thing(id="big", s=None).put()

        class Big(ndb.Model):
            data = ndb.BlobProperty()
        Big(id="x", data=b"\x00" * (1024 * 1024 + 10)).put()
    elif kind == "other_app":
        Thing(key=ndb.Key(Thing, "x", app="dev~someoneelse"), v=1).put()
    elif kind == "other_app_get":
        ndb.Key(Thing, "x", app="dev~someoneelse").get()
    elif kind == "conflict_exhausted":
        key = ndb.Key(Thing, "hot")
        Thing(key=key, v=0).put()

        @ndb.transactional(retries=0)
        def clash():
            e = key.get()
            # Another request commits to the same group in between.
            _other_request(lambda: Thing(key=key, v=99).put())
            e.v += 1
            e.put()
        clash()
    elif kind == "reserved_kind":
        class __Secret__(ndb.Model):
            pass
        __Secret__(id=1).put()
    return "no error"


def _other_request(fn):
    """Run fn as a separate request on another thread (its own context)."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", run_request(fn, _TICKET)))
    t.start()
    t.join()
    return out.get("r")


@scenario
def writer(n):
    """Put n entities one by one; print each acknowledged id at once."""
    n = int(n)
    no_cache()
    for i in range(n):
        k = Thing(id=i + 1, v=i, s="w%d" % i).put()
        print("acked %d" % k.id(), flush=True)
    return n


@scenario
def verify_written(n):
    n = int(n)
    no_cache()
    keys = [ndb.Key(Thing, i + 1) for i in range(n)]
    got = ndb.get_multi(keys)
    missing = [k.id() for k, e in zip(keys, got) if e is None or e.v != k.id() - 1]
    # The index rows came through too: each entity is found by its property
    # value (single-property index), and an ordered scan of the kind sees
    # every one of them in descending order.
    unindexed = [i + 1 for i in range(n) if Thing.query(Thing.v == i).get(keys_only=True) != keys[i]]
    desc = [k.id() for k in Thing.query().order(-Thing.v).fetch(keys_only=True)]
    in_order = desc == sorted(desc, reverse=True)
    return {"missing": missing, "unindexed": unindexed, "ordered": in_order,
            "all_listed": set(range(1, n + 1)) <= set(desc)}


@scenario
def long_strings():
    """Indexed strings up to App Engine's 1500 bytes: stored, found by
    equality exactly, ordered against values that differ early."""
    no_cache()
    a = "y" * 1499 + "a"
    b = "y" * 1499 + "b"
    c = "y" * 10 + "z" + "y" * 1489
    ndb.put_multi([Thing(id="a", s=a), Thing(id="b", s=b), Thing(id="c", s=c), Thing(id="short", s="y")])
    assert ndb.Key(Thing, "a").get().s == a
    eq = [k.id() for k in Thing.query(Thing.s == b).fetch(keys_only=True)]
    assert eq == ["b"], eq
    order = [k.id() for k in Thing.query().order(Thing.s).fetch(keys_only=True)]
    assert order[0] == "short" and order[-1] == "c", order
    return "ok"


_TICKET = None


def _app(environ, start_response):
    fn, result = environ["cz.fn"], environ["cz.result"]
    try:
        result["ok"] = fn()
    except Exception as e:  # reported to the test, which asserts on it
        result["error"] = type(e).__name__
        result["message"] = str(e)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


_WRAPPED = []
_WRAP_LOCK = threading.Lock()


def run_request(fn, ticket):
    """Run fn inside one request of the SDK-wrapped WSGI app (wrapped once:
    wrap_wsgi_app itself is not safe to call from several threads)."""
    with _WRAP_LOCK:
        if not _WRAPPED:
            _WRAPPED.append(wrap_wsgi_app(_app))
    result = {}
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["HTTP_X_APPENGINE_API_TICKET"] = ticket
    environ["cz.fn"] = fn
    environ["cz.result"] = result
    list(_WRAPPED[0](environ, lambda status, headers, exc_info=None: None))
    return result


def main():
    global _TICKET
    name, ticket, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    _TICKET = ticket
    result = run_request(lambda: SCENARIOS[name](*args), ticket)
    if name == "contention" and "ok" in result:
        threads, incs = result["ok"]["spawn"]
        attempts = [0]
        outs = []
        ts = [threading.Thread(target=lambda: outs.append(
            run_request(lambda: counter_worker(incs, attempts), ticket))) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        errs = [o for o in outs if "error" in o]
        result = {"ok": {"done": sum(o.get("ok", 0) for o in outs), "attempts": attempts[0],
                         "errors": errs}}
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
