"""Runs datastore query scenarios through Google's Python SDK (ndb and db),
as an app would, against the API server named by API_HOST/API_PORT.

Usage: ds_query_client.py TICKET SCENARIO...
Each scenario runs inside its own WSGI request wrapped by the SDK's
wrap_wsgi_app, with TICKET in X-AppEngine-Api-Ticket. Prints a JSON object
mapping each scenario to {"ok": value} or {"error": class, "message": str}.
"""
import json
import sys
import wsgiref.util

from google.appengine.api import datastore_errors, wrap_wsgi_app
from google.appengine.ext import db, ndb
from google.appengine.ext.ndb import metadata


class Person(ndb.Model):
    name = ndb.StringProperty()
    age = ndb.IntegerProperty()
    score = ndb.FloatProperty()
    tags = ndb.StringProperty(repeated=True)


class Member(ndb.Model):
    rank = ndb.IntegerProperty()


class Book(db.Model):
    title = db.StringProperty()
    pages = db.IntegerProperty()


def ids(entities):
    return [e.key.id() for e in entities]


def s_setup():
    people = []
    for i in range(1, 31):
        tags = ["t%d" % (i % 3)] + (["even"] if i % 2 == 0 else [])
        people.append(Person(id=i, name="p%02d" % i, age=i % 5, score=i / 4.0, tags=tags))
    ndb.put_multi(people)
    fam = ndb.Key("Family", "smith")
    ndb.put_multi([Member(parent=fam, id=i, rank=10 - i) for i in range(1, 6)])
    Member(parent=ndb.Key("Family", "jones"), id=9, rank=1).put()
    db.put([Book(key_name="b%d" % i, title="title %d" % i, pages=100 * i) for i in range(1, 6)])
    Person(namespace="other", id=1, name="x", age=1).put()
    return True


def s_filters():
    return {
        "eq": ids(Person.query(Person.age == 3).fetch()),
        "two_eq": ids(Person.query(Person.age == 2, Person.tags == "even").fetch()),
        "range": ids(Person.query(Person.score > 5, Person.score <= 6).fetch()),
        "in": sorted(ids(Person.query(Person.age.IN([1, 4])).fetch())),
        "ne": len(Person.query(Person.age != 0).fetch()),
        "key_range": ids(Person.query(Person.key > ndb.Key(Person, 25)).fetch()),
        "repeated": ids(Person.query(Person.tags == "t1").fetch(4)),
    }


def s_orders():
    return {
        "desc": ids(Person.query().order(-Person.score).fetch(3)),
        "name": ids(Person.query().order(Person.name).fetch(3)),
        "eq_order": ids(Person.query(Person.age == 1).order(-Person.name).fetch()),
        "ineq_order": ids(Person.query(Person.age >= 3).order(-Person.age, Person.name).fetch(5)),
    }


def s_ancestor():
    fam = ndb.Key("Family", "smith")
    return {
        "all": ids(Member.query(ancestor=fam).fetch()),
        "ordered": ids(Member.query(ancestor=fam).order(Member.rank).fetch()),
        "filtered": ids(Member.query(Member.rank == 7, ancestor=fam).fetch()),
        "kindless": len(ndb.Query(ancestor=fam).fetch()),
    }


def s_projection():
    rows = Person.query(projection=[Person.age]).order(Person.age).fetch(6)
    distinct = Person.query(projection=[Person.age], distinct=True).fetch()
    both = Person.query(projection=[Person.age, Person.name]).order(Person.age).order(Person.name).fetch(3)
    return {
        "ages": [p.age for p in rows],
        "distinct": sorted(p.age for p in distinct),
        "both": [[p.age, p.name] for p in both],
    }


def s_cursors():
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor, more = Person.query().order(Person.name).fetch_page(7, start_cursor=cursor)
        seen.extend(ids(page))
        pages += 1
        if not more or pages > 20:
            break
    # Iterating with a small batch size crosses many Next calls.
    batched = ids(Person.query(Person.tags == "even").iter(batch_size=3))
    # A cursor from the page, resumed later via its websafe form.
    first, c1, _ = Person.query(Person.age == 2).fetch_page(2)
    rest, _, _ = Person.query(Person.age == 2).fetch_page(10, start_cursor=ndb.Cursor(urlsafe=c1.urlsafe()))
    # Reverse paging (ndb's documented pattern).
    q = Person.query().order(Person.name)
    fwd, fc, _ = q.fetch_page(4)
    back, _, _ = Person.query().order(-Person.name).fetch_page(4, start_cursor=fc)
    # Over ties, with the key as explicit last order both ways.
    tq = Person.query().order(Person.age, Person.key)
    tf, tc, _ = tq.fetch_page(4)
    tb, _, _ = Person.query().order(-Person.age, -Person.key).fetch_page(10, start_cursor=tc)
    return {"seen": seen, "pages": pages, "batched": batched, "first": ids(first), "rest": ids(rest),
            "fwd": ids(fwd), "back": ids(back), "ties_fwd": ids(tf), "ties_back": ids(tb)}


def s_counts():
    return {
        "all": Person.query().count(),
        "eq": Person.query(Person.age == 0).count(),
        "limited": Person.query().count(limit=7),
        "ineq": Person.query(Person.score >= 5).count(),
        "keys": [k.id() for k in Person.query(Person.age == 4).fetch(keys_only=True)],
    }


def s_metadata():
    return {
        "kinds": metadata.get_kinds(),
        "namespaces": metadata.get_namespaces(),
        "props": sorted(metadata.get_properties_of_kind("Person")),
        "reps": metadata.get_representations_of_kind("Person"),
    }


def s_db():
    q = Book.all().filter("pages >", 150).order("pages")
    gql = db.GqlQuery("SELECT * FROM Book WHERE pages <= 300 ORDER BY pages DESC")
    return {
        "filtered": [b.key().name() for b in q.fetch(10)],
        "gql": [b.title for b in gql.fetch(10)],
        "count": Book.all().count(),
        "keys": [k.name() for k in Book.all(keys_only=True).order("-title").fetch(2)],
    }


def s_need_index():
    return ids(Person.query(Person.age == 2).order(-Person.score).fetch())


def main():
    ticket, names = sys.argv[1], sys.argv[2:]
    out = {}

    def app(environ, start_response):
        name = environ["cz.scenario"]
        try:
            out[name] = {"ok": globals()["s_" + name]()}
        except Exception as e:  # reported to the test, which asserts on it
            out[name] = {"error": type(e).__name__, "message": str(e)}
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    wrapped = wrap_wsgi_app(app)
    for name in names:
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ["cz.scenario"] = name
        environ["HTTP_X_APPENGINE_API_TICKET"] = ticket
        list(wrapped(environ, lambda status, headers, exc_info=None: None))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
