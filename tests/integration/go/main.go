// Command apitest is an App Engine app written against Google's Go SDK
// (google.golang.org/appengine/v2), used by tests/integration/test_apiserver.py
// to check that the Go SDK's API calls reach Cyclozzo's API server and that
// its errors come back as the SDK expects. Started with the environment an
// instance gets (PORT, API_HOST, API_PORT, GAE_*); each request carries the
// ticket the test minted in X-AppEngine-Api-Ticket.
//
//	GET /capability          -> "enabled=true|false" (capability.Enabled for datastore_v3 write)
//	GET /call?service=S&method=M[&timeout=SECONDS]
//	                         -> "ok" or "error: <err>" and "timeout=<bool>"
package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/appengine/v2"
	"google.golang.org/appengine/v2/capability"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func main() {
	http.HandleFunc("/capability", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		fmt.Fprintf(w, "enabled=%v\n", capability.Enabled(ctx, "datastore_v3", "write"))
	})
	http.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		q := r.URL.Query()
		if t, err := strconv.ParseFloat(q.Get("timeout"), 64); err == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(t*float64(time.Second)))
			defer cancel()
		}
		in, out := wrapperspb.String("x"), &wrapperspb.StringValue{}
		err := appengine.APICall(ctx, q.Get("service"), q.Get("method"), in, out)
		if err != nil {
			fmt.Fprintf(w, "error: %v\ntimeout=%v\n", err, appengine.IsTimeoutError(err))
			return
		}
		fmt.Fprintf(w, "ok\n")
	})
	appengine.Main()
}
