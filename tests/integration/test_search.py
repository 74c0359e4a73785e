"""The Search API through Google's own SDK (google.appengine.api.search)
against bin/cz-apiserver: put/get/delete/list, the query language with the
exact documents each query must find, sorting, cursors, facets, namespaces,
errors, and durability of acknowledged puts across kill -9."""
import datetime
import os
import signal

import pytest

from apiserver_sdk import ApiServer, raw_call, restore, use_ticket

from google.appengine.api import namespace_manager
from google.appengine.api import search
from google.appengine.api.search import search_service_pb2 as pb

APP = "dev~searchapp"
OTHER = "dev~otherapp"


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home))
    s.tickets = {APP: s.mint(APP), OTHER: s.mint(OTHER)}
    use_ticket(s, s.tickets[APP])
    namespace_manager.set_namespace("")
    yield s
    restore()
    s.stop()


def doc(doc_id, rank=None, facets=(), **fields):
    fs = []
    for name, value in fields.items():
        if isinstance(value, search.Field):
            fs.append(value)
        elif isinstance(value, (int, float)):
            fs.append(search.NumberField(name=name, value=value))
        elif isinstance(value, datetime.date):
            fs.append(search.DateField(name=name, value=value))
        elif isinstance(value, search.GeoPoint):
            fs.append(search.GeoField(name=name, value=value))
        else:
            fs.append(search.TextField(name=name, value=value))
    kw = {"rank": rank} if rank is not None else {}
    return search.Document(doc_id=doc_id, fields=fs, facets=list(facets), **kw)


PARIS = search.GeoPoint(48.8566, 2.3522)
LONDON = search.GeoPoint(51.5074, -0.1278)
BERLIN = search.GeoPoint(52.52, 13.405)


@pytest.fixture
def books(server):
    idx = search.Index(name="books")
    idx.put([
        doc("b1", rank=5, title="The quick brown fox", body="jumps over the lazy dog", price=10,
            published=datetime.date(2019, 5, 1),
            genre=search.AtomField(name="genre", value="Fiction"),
            where=search.GeoField(name="where", value=PARIS),
            code=search.UntokenizedPrefixField(name="code", value="ABC-123"),
            tags=search.TokenizedPrefixField(name="tags", value="programming language"),
            facets=[search.AtomFacet(name="kind", value="novel"), search.NumberFacet(name="pages", value=300)]),
        doc("b2", rank=4, title="A lazy afternoon", body="the dog sleeps all day", price=25.5,
            published=datetime.date(2020, 1, 1),
            genre=search.AtomField(name="genre", value="Non Fiction"),
            where=search.GeoField(name="where", value=LONDON),
            code=search.UntokenizedPrefixField(name="code", value="ABD-999"),
            facets=[search.AtomFacet(name="kind", value="essay"), search.NumberFacet(name="pages", value=120)]),
        doc("b3", rank=3, title="Fox hunting history", body="<p>An <b>old</b> sport &amp; its critics</p>",
            price=5, published=datetime.date(2021, 7, 15),
            genre=search.AtomField(name="genre", value="History"),
            where=search.GeoField(name="where", value=BERLIN),
            facets=[search.AtomFacet(name="kind", value="novel")]),
        doc("b4", rank=2, title="Cooking with herbs", body="basil thyme rosemary", price=40,
            published=datetime.date(2020, 1, 2),
            genre=search.AtomField(name="genre", value="Fiction")),
    ])
    # b3's body is HTML: replace the text field with an HTML one
    d3 = idx.get("b3")
    fields = [f if f.name != "body" else search.HtmlField(name="body", value=f.value) for f in d3.fields]
    idx.put(search.Document(doc_id="b3", fields=fields, facets=d3.facets, rank=3))
    return idx


def ids(results):
    return [r.doc_id for r in results]


def found(idx, q, **opts):
    if opts:
        q = search.Query(q, options=search.QueryOptions(**opts))
    return sorted(ids(idx.search(q)))


def test_put_get_delete_list(server):
    idx = search.Index(name="things")
    res = idx.put([doc("a", name="alpha"), doc("b", name="beta"), doc(None, name="generated")])
    assert [r.code for r in res] == ["OK"] * 3
    gen = res[2].id
    assert gen and gen not in ("a", "b")
    got = idx.get("a")
    assert got.doc_id == "a" and got.field("name").value == "alpha"
    assert idx.get("zzz") is None
    assert idx.get(gen).field("name").value == "generated"
    # replace keeps one document
    idx.put(doc("a", name="alpha two", rank=77))
    assert idx.get("a").field("name").value == "alpha two"
    assert idx.get("a").rank == 77
    listed = ids(idx.get_range())
    assert listed == sorted(["a", "b", gen])
    assert ids(idx.get_range(start_id="b")) == [x for x in listed if x >= "b"]
    assert ids(idx.get_range(start_id="b", include_start_object=False)) == [x for x in listed if x > "b"]
    assert ids(idx.get_range(limit=1)) == listed[:1]
    only = idx.get_range(ids_only=True)
    assert ids(only) == listed and only.results[0].fields == []
    idx.delete(["a", "missing"])
    assert idx.get("a") is None
    assert ids(idx.get_range()) == sorted(["b", gen])
    assert found(idx, "alpha") == []


def test_field_types_round_trip(books):
    d = books.get("b1")
    by = {f.name: f for f in d.fields}
    assert by["price"].value == 10
    assert by["published"].value == datetime.datetime(2019, 5, 1)
    assert isinstance(by["genre"], search.AtomField) and by["genre"].value == "Fiction"
    assert (by["where"].value.latitude, by["where"].value.longitude) == (PARIS.latitude, PARIS.longitude)
    assert isinstance(by["code"], search.UntokenizedPrefixField)
    assert isinstance(by["tags"], search.TokenizedPrefixField)
    assert d.rank == 5
    assert sorted((f.name, f.value) for f in d.facets) == [("kind", "novel"), ("pages", 300)]


def test_terms_phrases_boolean(books):
    assert found(books, "fox") == ["b1", "b3"]
    assert found(books, "FOX lazy") == ["b1"]                 # implicit AND, case-insensitive
    assert found(books, "fox AND lazy") == ["b1"]
    assert found(books, "fox OR herbs") == ["b1", "b3", "b4"]
    assert found(books, "lazy NOT fox") == ["b2"]
    assert found(books, "lazy -fox") == ["b2"]
    assert found(books, "NOT dog") == ["b3", "b4"]
    assert found(books, '"lazy dog"') == ["b1"]
    assert found(books, '"dog lazy"') == []
    assert found(books, "(fox OR afternoon) AND (dog OR sport)") == ["b1", "b2", "b3"]
    assert found(books, "dog OR herbs fox") == ["b1"]          # OR binds tighter than the sequence
    assert found(books, "") == ["b1", "b2", "b3", "b4"]
    assert found(books, "nothingmatches") == []


def test_html_and_field_restrictions(books):
    assert found(books, "sport") == ["b3"]
    assert found(books, "old") == ["b3"]
    assert found(books, "b") == []                             # HTML tags are not text
    assert found(books, "title:fox") == ["b1", "b3"]
    assert found(books, "body:fox") == []
    assert found(books, "title:(lazy OR herbs)") == ["b2", "b4"]
    assert found(books, 'body:"lazy dog"') == ["b1"]
    assert found(books, "title:fox body:sport") == ["b3"]


def test_atoms_and_prefixes(books):
    assert found(books, "genre:Fiction") == ["b1", "b4"]
    assert found(books, "genre:fiction") == ["b1", "b4"]       # atoms match case-insensitively
    assert found(books, 'genre:"Non Fiction"') == ["b2"]
    assert found(books, "genre:Non") == []                     # atoms match whole values only
    assert found(books, "genre=History") == ["b3"]
    assert found(books, "genre!=Fiction") == ["b2", "b3"]
    assert found(books, "code:ABC") == ["b1"]                  # untokenized prefix
    assert found(books, "code:AB") == ["b1", "b2"]
    assert found(books, "code:BC") == []
    books.put(doc("u1", city=search.AtomField(name="city", value="ÉCOLE Łódź")))
    assert found(books, 'city:"école łÓdŹ"') == ["u1"]
    books.delete("u1")
    assert found(books, "tags:prog") == ["b1"]                 # tokenized prefix, any token
    assert found(books, "tags:lang") == ["b1"]
    assert found(books, "tags:rogram") == []


def test_numbers_dates_geo(books):
    assert found(books, "price < 10") == ["b3"]
    assert found(books, "price <= 10") == ["b1", "b3"]
    assert found(books, "price > 10") == ["b2", "b4"]
    assert found(books, "price >= 25.5") == ["b2", "b4"]
    assert found(books, "price = 40") == ["b4"]
    assert found(books, "price:5") == ["b3"]
    assert found(books, "price != 5") == ["b1", "b2", "b4"]
    assert found(books, "price > 6 price < 30") == ["b1", "b2"]
    assert found(books, "published >= 2020-01-01") == ["b2", "b3", "b4"]
    assert found(books, "published > 2020-01-01") == ["b3", "b4"]
    assert found(books, "published < 2020-01-02") == ["b1", "b2"]
    assert found(books, "published <= 2020-01-02") == ["b1", "b2", "b4"]
    assert found(books, "published:2020-01-01") == ["b2"]
    assert found(books, "distance(where, geopoint(48.8566, 2.3522)) < 1000") == ["b1"]
    # Paris-London is about 344 km, Paris-Berlin about 878 km
    assert found(books, "distance(where, geopoint(48.8566, 2.3522)) < 500000") == ["b1", "b2"]
    assert found(books, "distance(where, geopoint(48.8566, 2.3522)) >= 500000") == ["b3"]
    assert found(books, "fox distance(where, geopoint(52.52, 13.405)) < 10") == ["b3"]
    assert found(books, "distance(where, geopoint(51.5074, -0.1278)) < 1000") == ["b2"]


def test_sorting(books):
    def order(*exprs, q="", **kw):
        opts = search.QueryOptions(sort_options=search.SortOptions(expressions=list(exprs)), **kw)
        return ids(books.search(search.Query(q, options=opts)))
    assert ids(books.search("")) == ["b1", "b2", "b3", "b4"]               # rank, descending
    asc = search.SortExpression.ASCENDING
    assert order(search.SortExpression("price", asc, default_value=0)) == ["b3", "b1", "b2", "b4"]
    assert order(search.SortExpression("price", default_value=0)) == ["b4", "b2", "b1", "b3"]
    assert order(search.SortExpression("title", asc, default_value="")) == ["b2", "b4", "b3", "b1"]
    assert order(search.SortExpression("published", asc,
                                       default_value=datetime.date(1999, 1, 1))) == ["b1", "b2", "b4", "b3"]
    assert order(search.SortExpression("_rank", asc)) == ["b4", "b3", "b2", "b1"]
    near_berlin = search.SortExpression("distance(where, geopoint(52.5, 13.4))", asc, default_value=1e9)
    assert order(near_berlin) == ["b3", "b1", "b2", "b4"]            # Berlin, Paris, London, none
    # a default puts documents without the field where it belongs
    books.put(doc("b5", rank=1, title="no price here"))
    assert order(search.SortExpression("price", asc, default_value=7))[:3] == ["b3", "b5", "b1"]
    assert order(search.SortExpression("price", asc, default_value=100))[-1] == "b5"
    res = books.search(search.Query("fox", options=search.QueryOptions(
        sort_options=search.SortOptions(expressions=[search.SortExpression("price", asc, default_value=0)]))))
    assert ids(res) == ["b3", "b1"] and res.results[0].sort_scores == [5.0]


def test_match_scorer(server):
    idx = search.Index(name="scored")
    idx.put([doc("A", rank=1, t="apple apple apple"), doc("B", rank=3, t="apple pie with cream and sugar"),
             doc("C", rank=2, t="apple banana"), doc("D", rank=4, t="no fruit")])
    assert ids(idx.search("apple")) == ["B", "C", "A"]                        # rank order
    res = idx.search(search.Query("apple", options=search.QueryOptions(
        sort_options=search.SortOptions(match_scorer=search.MatchScorer()))))
    assert ids(res) == ["A", "C", "B"]
    scores = [r.sort_scores[0] for r in res]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    res = idx.search(search.Query("apple", options=search.QueryOptions(sort_options=search.SortOptions(
        expressions=[search.SortExpression("_score", search.SortExpression.ASCENDING, default_value=0)]))))
    assert ids(res) == ["B", "C", "A"]
    # terms under NOT do not score; a query without terms scores 0 and keeps rank order
    res = idx.search(search.Query("NOT fruit", options=search.QueryOptions(
        sort_options=search.SortOptions(match_scorer=search.MatchScorer()))))
    assert ids(res) == ["B", "C", "A"] and all(r.sort_scores == [0.0] for r in res)


def test_limit_offset_cursors(server):
    idx = search.Index(name="many")
    idx.put([doc("d%02d" % i, rank=100 - i, n=i, word="common") for i in range(25)])
    res = idx.search(search.Query("common", options=search.QueryOptions(limit=10)))
    assert res.number_found == 25 and len(res.results) == 10
    res = idx.search(search.Query("common", options=search.QueryOptions(limit=10, offset=20)))
    assert ids(res) == ["d%02d" % i for i in range(20, 25)]
    # a response cursor walks all pages
    seen, cursor = [], search.Cursor()
    while cursor is not None:
        res = idx.search(search.Query("common", options=search.QueryOptions(limit=10, cursor=cursor)))
        seen += ids(res)
        cursor = res.cursor
    assert seen == ["d%02d" % i for i in range(25)]
    # per-result cursors resume after any result
    res = idx.search(search.Query("common", options=search.QueryOptions(
        limit=5, cursor=search.Cursor(per_result=True))))
    third = res.results[2].cursor
    res2 = idx.search(search.Query("common", options=search.QueryOptions(limit=3, cursor=third)))
    assert ids(res2) == ["d03", "d04", "d05"]
    # a cursor of another query is refused
    with pytest.raises(search.InvalidRequest, match="cursor"):
        idx.search(search.Query("n < 5", options=search.QueryOptions(cursor=third)))
    # a cursor resumes after its document: inserts before it do not shift the next page
    res = idx.search(search.Query("common", options=search.QueryOptions(limit=10, cursor=search.Cursor())))
    assert ids(res)[-1] == "d09"
    idx.put([doc("early%d" % i, rank=1000 + i, word="common") for i in range(3)])
    res2 = idx.search(search.Query("common", options=search.QueryOptions(limit=3, cursor=res.cursor)))
    assert ids(res2) == ["d10", "d11", "d12"]
    # ... also under a sort, descending and ascending, with ties broken by rank
    opts = dict(sort_options=search.SortOptions(expressions=[
        search.SortExpression("word", search.SortExpression.ASCENDING, default_value=""),
        search.SortExpression("n", search.SortExpression.DESCENDING, default_value=-1)]))
    seen, cursor = [], search.Cursor()
    while cursor is not None:
        res = idx.search(search.Query("common", options=search.QueryOptions(limit=4, cursor=cursor, **opts)))
        seen += ids(res)
        cursor = res.cursor
    assert seen == ["d%02d" % i for i in range(24, -1, -1)] + ["early2", "early1", "early0"]
    # when the cursor's document is gone, the position is used
    res = idx.search(search.Query("common", options=search.QueryOptions(limit=5, cursor=search.Cursor(), **opts)))
    idx.delete(ids(res)[-1])
    res2 = idx.search(search.Query("common", options=search.QueryOptions(limit=2, cursor=res.cursor, **opts)))
    assert ids(res2) == ["d18", "d17"]
    idx.delete(["early0", "early1", "early2"])
    # number_found_accuracy is accepted; counts stay exact
    res = idx.search(search.Query("n < 5", options=search.QueryOptions(number_found_accuracy=100)))
    assert res.number_found == 5


def test_returned_fields_ids_only_expressions(books):
    res = books.search(search.Query("fox", options=search.QueryOptions(returned_fields=["title"])))
    assert [[f.name for f in r.fields] for r in res] == [["title"], ["title"]]
    res = books.search(search.Query("fox", options=search.QueryOptions(ids_only=True)))
    assert ids(res) == ["b1", "b3"] and all(r.fields == [] for r in res)
    res = books.search(search.Query("lazy", options=search.QueryOptions(
        returned_fields=["title"], snippeted_fields=["body"],
        returned_expressions=[search.FieldExpression(name="p", expression="price"),
                              search.FieldExpression(name="r", expression="_rank")])))
    first = res.results[0]
    assert first.doc_id == "b1"
    ex = {e.name: e.value for e in first.expressions}
    assert ex["body"] == "jumps over the <b>lazy</b> dog"
    assert ex["p"] == 10 and ex["r"] == 5
    res = books.search(search.Query("sport", options=search.QueryOptions(snippeted_fields=["body"])))
    assert res.results[0].expressions[0].value == "An old <b>sport</b> &amp; its critics"
    with pytest.raises(search.InvalidRequest, match="not supported"):
        books.search(search.Query("fox", options=search.QueryOptions(
            returned_expressions=[search.FieldExpression(name="x", expression="price * 2")])))


def test_facets(books):
    res = books.search(search.Query("", enable_facet_discovery=True))
    facets = {f.name: [(v.label, v.count) for v in f.values] for f in res.facets}
    assert facets["kind"] == [("novel", 2), ("essay", 1)]
    assert facets["pages"] == [("[120,300]", 2)]
    res = books.search(search.Query("", enable_facet_discovery=True, facet_options=search.FacetOptions(
        discovery_limit=1, discovery_value_limit=1)))
    assert [(f.name, [(v.label, v.count) for v in f.values]) for f in res.facets] == [("kind", [("novel", 2)])]
    res = books.search(search.Query("fox", enable_facet_discovery=True))
    assert {f.name: [(v.label, v.count) for v in f.values] for f in res.facets} == {
        "kind": [("novel", 2)], "pages": [("[300,300]", 1)]}
    res = books.search(search.Query("", return_facets=[
        search.FacetRequest("pages", ranges=[search.FacetRange(end=200), search.FacetRange(start=200)])]))
    assert [(v.label, v.count) for v in res.facets[0].values] == [("[-inf,200)", 1), ("[200,inf)", 1)]
    res = books.search(search.Query("", facet_refinements=[search.FacetRefinement("kind", value="novel")]))
    assert sorted(ids(res)) == ["b1", "b3"]
    token = books.search(search.Query("", enable_facet_discovery=True)).facets[0].values[1].refinement_token
    if isinstance(token, bytes):          # the SDK's token is base64 bytes under Python 3
        token = token.decode()
    res = books.search(search.Query("", facet_refinements=[token]))
    assert ids(res) == ["b2"]
    res = books.search(search.Query("", facet_refinements=[
        search.FacetRefinement("pages", facet_range=search.FacetRange(start=100, end=200))]))
    assert ids(res) == ["b2"]


def test_list_indexes_schema_and_delete_schema(server):
    search.Index(name="alpha").put(doc("1", t="x", n=1))
    search.Index(name="alpine").put(doc("1", t="x"))
    search.Index(name="beta").put(doc("1", t="x"))
    names = [i.name for i in search.get_indexes().results]
    assert names == ["alpha", "alpine", "beta"]
    assert [i.name for i in search.get_indexes(index_name_prefix="alp").results] == ["alpha", "alpine"]
    assert [i.name for i in search.get_indexes(start_index_name="alpine", include_start_index=False).results] == ["beta"]
    assert [i.name for i in search.get_indexes(limit=1, offset=1).results] == ["alpine"]
    got = search.get_indexes(index_name_prefix="alpha", fetch_schema=True).results[0]
    assert got.schema == {"t": [search.Field.TEXT], "n": [search.Field.NUMBER]}
    assert got.storage_usage > 0 and got.storage_limit > 0
    idx = search.Index(name="beta")
    idx.delete("1")
    idx.delete_schema()
    assert [i.name for i in search.get_indexes().results] == ["alpha", "alpine"]


def test_namespaces_and_apps_kept_apart(server):
    search.Index(name="shared").put(doc("x", t="default namespace"))
    search.Index(name="shared", namespace="ns1").put(doc("y", t="namespace one"))
    namespace_manager.set_namespace("ns1")
    assert ids(search.Index(name="shared").search("namespace")) == ["y"]
    assert [i.name for i in search.get_indexes().results] == ["shared"]
    namespace_manager.set_namespace("")
    assert ids(search.Index(name="shared").search("namespace")) == ["x"]
    assert ids(search.Index(name="shared", namespace="ns1").get_range()) == ["y"]
    both = search.get_indexes(all_namespaces=True).results
    assert sorted((i.namespace, i.name) for i in both) == [("", "shared"), ("ns1", "shared")]
    use_ticket(server, server.tickets[OTHER])
    assert ids(search.Index(name="shared").search("namespace")) == []
    assert search.get_indexes().results == []
    use_ticket(server, server.tickets[APP])


def test_errors(server):
    idx = search.Index(name="errs")
    idx.put(doc("a", t="hello", n=3))
    # the SDK's own parser refuses bad syntax before sending
    with pytest.raises(search.QueryError):
        idx.search("a AND OR")

    def raw_search(query, **params):
        req = pb.SearchRequest()
        req.params.index_spec.name = params.pop("index", "errs")
        req.params.query = query
        for k, v in params.items():
            setattr(req.params, k, v)
        return raw_call("search", "Search", req, pb.SearchResponse())

    r = raw_search("(hello")
    assert r.status.code == pb.SearchServiceError.INVALID_REQUEST
    assert "position 7" in r.status.error_detail and "')'" in r.status.error_detail
    r = raw_search("n < abc")
    assert r.status.code == pb.SearchServiceError.INVALID_REQUEST and "position 5" in r.status.error_detail
    r = raw_search("hello", index="!bad")
    assert r.status.code == pb.SearchServiceError.INVALID_REQUEST and "'!'" in r.status.error_detail
    r = raw_search("hello", index="x" * 101)
    assert r.status.code == pb.SearchServiceError.INVALID_REQUEST
    r = raw_search("hello", limit=5000)
    assert r.status.code == pb.SearchServiceError.INVALID_REQUEST
    assert raw_search("hello").matched_count == 1
    with pytest.raises(search.InvalidRequest, match="sort expression"):
        idx.search(search.Query("hello", options=search.QueryOptions(sort_options=search.SortOptions(
            expressions=[search.SortExpression("n + 1", default_value=0)]))))
    # a bad document id fails that document only
    req = pb.IndexDocumentRequest()
    req.params.index_spec.name = "errs"
    d = req.params.document.add()
    d.id = "bad id"
    d2 = req.params.document.add()
    d2.id = "good"
    d3 = req.params.document.add()
    d3.id = "badnum"
    f = d3.field.add()
    f.name = "t"
    f.value.string_value = "should not be found"
    f = d3.field.add()
    f.name = "n"
    f.value.type = f.value.NUMBER
    f.value.string_value = "twelve"
    resp = raw_call("search", "IndexDocument", req, pb.IndexDocumentResponse())
    assert [s.code for s in resp.status] == [pb.SearchServiceError.INVALID_REQUEST, pb.SearchServiceError.OK,
                                             pb.SearchServiceError.INVALID_REQUEST]
    assert "not a number" in resp.status[2].error_detail
    assert idx.get("good") is not None
    assert idx.get("badnum") is None and found(idx, "found") == []
    r = raw_call("search", "ListDocuments", pb.ListDocumentsRequest(
        app_id=b"dev~otherapp", params={"index_spec": {"name": "errs"}}), pb.ListDocumentsResponse())
    assert r.status.code == pb.SearchServiceError.PERMISSION_DENIED and not r.document


def test_durable_across_kill9(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home))
    try:
        use_ticket(s, s.mint(APP))
        idx = search.Index(name="durable")
        for i in range(20):
            idx.put(doc("k%02d" % i, t="persisted value %d" % i, n=i))
        idx.delete("k05")
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait()
        s.proc.stdout.close()
        restore()
        s2 = ApiServer(str(home))
        try:
            use_ticket(s2, s2.mint(APP))
            idx = search.Index(name="durable")
            got = ids(idx.get_range(limit=100))
            assert got == ["k%02d" % i for i in range(20) if i != 5]
            assert sorted(ids(idx.search("persisted n >= 18"))) == ["k18", "k19"]
            assert os.path.exists(home / "search" / "dev_searchapp.sqlite")
        finally:
            restore()
            s2.stop()
    finally:
        if s.proc.poll() is None:
            s.stop()
