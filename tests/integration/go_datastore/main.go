// Command dstest is an App Engine app written against Google's Go SDK
// (google.golang.org/appengine/v2/datastore), used by
// tests/integration/test_datastore_go.py to check the Go SDK against
// Cyclozzo's datastore. Started with the environment an instance gets (PORT,
// API_HOST, API_PORT, GAE_*); each request carries a ticket minted by the test.
//
//	GET /types     put and get an entity with every Go property type
//	GET /keys      incomplete keys, ancestors, names, namespaces, delete, multi-get holes
//	GET /counter?n=N   one transactional increment (RunInTransaction retries conflicts)
//	GET /read      the counter's value
//	GET /query     a filtered, ordered query and a keys-only ancestor query
//
// Every handler answers "ok ..." or "FAIL: reason".
package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"google.golang.org/appengine/v2"
	"google.golang.org/appengine/v2/datastore"
)

type Every struct {
	I     int64
	I32   int32
	F     float64
	B     bool
	S     string
	Long  string `datastore:",noindex"`
	Bs    []byte
	Short datastore.ByteString
	T     time.Time
	G     appengine.GeoPoint
	K     *datastore.Key
	L     []int64
	Ls    []string
}

type Counter struct{ N int64 }

type Item struct {
	Cat   string
	Score int64
}

func fail(w http.ResponseWriter, f string, a ...interface{}) {
	fmt.Fprintf(w, "FAIL: "+f+"\n", a...)
}

func main() {
	http.HandleFunc("/types", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		ref := datastore.NewKey(ctx, "Ref", "", 7, nil)
		in := Every{I: -1 << 62, I32: 12345, F: 2.5, B: true, S: "h\u00e9llo", Long: string(bytes.Repeat([]byte("z"), 5000)),
			Bs: []byte{0, 1, 255}, Short: datastore.ByteString("bs"), T: time.Date(2020, 5, 6, 7, 8, 9, 123456000, time.UTC),
			G: appengine.GeoPoint{Lat: 1.5, Lng: -2.25}, K: ref, L: []int64{3, 1, 2}, Ls: []string{"a", "b"}}
		k, err := datastore.Put(ctx, datastore.NewKey(ctx, "Every", "all", 0, nil), &in)
		if err != nil {
			fail(w, "put: %v", err)
			return
		}
		var out Every
		if err := datastore.Get(ctx, k, &out); err != nil {
			fail(w, "get: %v", err)
			return
		}
		out.T = out.T.UTC()
		if !reflect.DeepEqual(in, out) {
			fail(w, "round trip:\n%+v\n%+v", in, out)
			return
		}
		fmt.Fprintf(w, "ok types\n")
	})
	http.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		parent := datastore.NewKey(ctx, "Parent", "p", 0, nil)
		keys := make([]*datastore.Key, 5)
		items := make([]Item, 5)
		for i := range keys {
			keys[i] = datastore.NewIncompleteKey(ctx, "Item", parent)
			items[i] = Item{Cat: "c", Score: int64(i)}
		}
		got, err := datastore.PutMulti(ctx, keys, items)
		if err != nil {
			fail(w, "putmulti: %v", err)
			return
		}
		seen := map[int64]bool{}
		for _, k := range got {
			if k.Incomplete() || k.IntID() == 0 || !k.Parent().Equal(parent) || seen[k.IntID()] {
				fail(w, "bad key %v", k)
				return
			}
			seen[k.IntID()] = true
		}
		// A namespace is its own world.
		nctx, err := appengine.Namespace(ctx, "ns1")
		if err != nil {
			fail(w, "namespace: %v", err)
			return
		}
		nk := datastore.NewKey(nctx, "Item", "x", 0, nil)
		if _, err := datastore.Put(nctx, nk, &Item{Cat: "ns"}); err != nil {
			fail(w, "put ns: %v", err)
			return
		}
		var it Item
		if err := datastore.Get(ctx, datastore.NewKey(ctx, "Item", "x", 0, nil), &it); err != datastore.ErrNoSuchEntity {
			fail(w, "namespace leak: %v", err)
			return
		}
		if err := datastore.Get(nctx, nk, &it); err != nil || it.Cat != "ns" {
			fail(w, "get ns: %v %v", err, it)
			return
		}
		// Delete, and a multi-get with a hole.
		if err := datastore.Delete(ctx, got[0]); err != nil {
			fail(w, "delete: %v", err)
			return
		}
		dst := make([]Item, 2)
		err = datastore.GetMulti(ctx, []*datastore.Key{got[0], got[1]}, dst)
		me, ok := err.(appengine.MultiError)
		if !ok || me[0] != datastore.ErrNoSuchEntity || me[1] != nil || dst[1].Score != 1 {
			fail(w, "getmulti: %v %v", err, dst)
			return
		}
		// AllocateIDs gives a fresh range.
		lo, hi, err := datastore.AllocateIDs(ctx, "Item", nil, 10)
		if err != nil || hi-lo != 10 || lo < 1 { // [lo, hi)
			fail(w, "allocate: %v %d %d", err, lo, hi)
			return
		}
		fmt.Fprintf(w, "ok keys\n")
	})
	http.HandleFunc("/counter", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		k := datastore.NewKey(ctx, "Counter", "c", 0, nil)
		tries := 0
		err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
			tries++
			var c Counter
			if err := datastore.Get(tc, k, &c); err != nil && err != datastore.ErrNoSuchEntity {
				return err
			}
			c.N++
			time.Sleep(2 * time.Millisecond)
			_, err := datastore.Put(tc, k, &c)
			return err
		}, &datastore.TransactionOptions{Attempts: 100})
		if err != nil {
			fail(w, "transaction: %v", err)
			return
		}
		fmt.Fprintf(w, "ok tries=%d\n", tries)
	})
	http.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		var c Counter
		if err := datastore.Get(ctx, datastore.NewKey(ctx, "Counter", "c", 0, nil), &c); err != nil {
			fail(w, "get: %v", err)
			return
		}
		fmt.Fprintf(w, "ok %d\n", c.N)
	})
	http.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		parent := datastore.NewKey(ctx, "Parent", "p", 0, nil)
		var items []Item
		if _, err := datastore.NewQuery("Item").Ancestor(parent).Filter("Score >=", 2).Order("-Score").GetAll(ctx, &items); err != nil {
			fail(w, "query: %v", err)
			return
		}
		scores := []int64{}
		for _, it := range items {
			scores = append(scores, it.Score)
		}
		fmt.Fprintf(w, "ok %v\n", scores)
	})
	appengine.Main()
}
