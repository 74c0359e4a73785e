"""Makes App Engine API calls through Google's Python SDK, as an app would.

Run as a subprocess by the integration tests with API_HOST, API_PORT and
GAE_APPLICATION set. Reads a JSON list of calls on stdin; each runs inside its
own WSGI request through the SDK's wrap_wsgi_app, with the given ticket in the
X-AppEngine-Api-Ticket header (omitted when null), exactly the way the
runtime hands the ticket to the SDK. Prints one JSON result per call:
{"ok": value} or {"error": exception class name, "message": str(exception)}.

Call kinds:
  {"kind": "capability", "package": P, "capabilities": [...], "ticket": T}
      CapabilitySet(P, capabilities).is_enabled() -> bool
  {"kind": "is_enabled_raw", "package": P, "capabilities": [...], "ticket": T}
      the raw IsEnabledResponse as {"summary": int, "configs": [[pkg, cap, status], ...]}
  {"kind": "call", "service": S, "method": M, "pad": N, "ticket": T}
      MakeSyncCall(S, M, IsEnabledRequest(package="x" * N), IsEnabledResponse())
"""
import json
import sys
import wsgiref.util

from google.appengine.api import apiproxy_stub_map, capabilities, wrap_wsgi_app
from google.appengine.api.capabilities import capability_service_pb2


def run_one(call):
    kind = call["kind"]
    if kind == "capability":
        return capabilities.CapabilitySet(call["package"], capabilities=call.get("capabilities")).is_enabled()
    if kind == "is_enabled_raw":
        req = capability_service_pb2.IsEnabledRequest(package=call["package"])
        req.capability.extend(call["capabilities"])
        resp = capability_service_pb2.IsEnabledResponse()
        apiproxy_stub_map.MakeSyncCall("capability_service", "IsEnabled", req, resp)
        return {"summary": resp.summary_status,
                "configs": [[c.package, c.capability, c.status] for c in resp.config]}
    if kind == "call":
        req = capability_service_pb2.IsEnabledRequest(package="x" * call.get("pad", 1))
        resp = capability_service_pb2.IsEnabledResponse()
        apiproxy_stub_map.MakeSyncCall(call["service"], call["method"], req, resp)
        return resp.summary_status
    raise ValueError("unknown call kind %r" % kind)


def main():
    calls = json.load(sys.stdin)
    results = []

    def app(environ, start_response):
        try:
            results.append({"ok": run_one(environ["cz.call"])})
        except Exception as e:  # reported to the test, which asserts on it
            results.append({"error": type(e).__name__, "message": str(e)})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    wrapped = wrap_wsgi_app(app)
    for call in calls:
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ["cz.call"] = call
        if call.get("ticket") is not None:
            environ["HTTP_X_APPENGINE_API_TICKET"] = call["ticket"]
        list(wrapped(environ, lambda status, headers, exc_info=None: None))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
