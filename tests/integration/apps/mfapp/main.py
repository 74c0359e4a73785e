"""urlfetch and mail test app (tests/integration/test_urlfetch.py and
test_mail.py): an `entrypoint:` WSGI server on $PORT that calls Google's
SDK (google.appengine.api.urlfetch, mail) as the tests ask, and records
inbound mail (InboundEmailMessage) in memcache."""
import base64
import json
import os
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from google.appengine.api import apiproxy_stub_map, api_base_pb2, mail, mail_service_pb2, memcache, urlfetch, wrap_wsgi_app
from google.appengine.runtime import apiproxy_errors


def fetch_result(r):
    return {"status": r.status_code, "content_b64": base64.b64encode(r.content).decode(),
            "length": len(r.content), "headers": dict(r.headers), "final_url": r.final_url,
            "truncated": r.content_was_truncated}


def error(e):
    return {"error": type(e).__name__, "message": str(e)}


def do_fetch(q):
    kw = {}
    for k in ("method", "headers", "deadline", "follow_redirects", "validate_certificate", "allow_truncated"):
        if k in q:
            kw[k] = q[k]
    if "payload" in q:
        kw["payload"] = q["payload"].encode()
    if "payload_size" in q:
        kw["payload"] = b"x" * q["payload_size"]
    try:
        return fetch_result(urlfetch.fetch(q["url"], **kw))
    except Exception as e:  # the test checks the class
        return error(e)


def do_parallel(q):
    t0 = time.time()
    rpcs = []
    for u in q["urls"]:
        rpc = urlfetch.create_rpc(deadline=q.get("deadline", 10))
        urlfetch.make_fetch_call(rpc, u)
        rpcs.append(rpc)
    time.sleep(0.3)              # every fetch is in flight now
    t1 = time.time()
    memcache.set("ping", "pong")
    ok = memcache.get("ping") == "pong"
    ping = time.time() - t1
    out = []
    for rpc in rpcs:
        try:
            out.append(rpc.get_result().status_code)
        except Exception as e:
            out.append(type(e).__name__)
    return {"statuses": out, "elapsed": time.time() - t0, "ping": ping, "ping_ok": ok}


def do_send(q):
    kw = {k: q[k] for k in ("sender", "to", "cc", "bcc", "reply_to", "subject", "body", "html", "headers") if k in q}
    if "attachments" in q:
        kw["attachments"] = [mail.Attachment(a[0], base64.b64decode(a[1]), content_id=a[2] if len(a) > 2 else None)
                             for a in q["attachments"]]
    try:
        if q.get("kind") == "admins":
            kw.pop("to", None)
            mail.AdminEmailMessage(**kw).send()
        else:
            mail.EmailMessage(**kw).send()
        return {"ok": True}
    except Exception as e:
        return error(e)


def do_raw(q):
    """A MailMessage built by hand, so that the service's own checks are
    reached (the SDK refuses some mistakes before sending)."""
    m = mail_service_pb2.MailMessage(Sender=q["sender"], Subject=q.get("subject", "s"), TextBody=q.get("body", "b"))
    m.To.extend(q.get("to", []))
    for name, value in q.get("headers", []):
        m.Header.add(name=name, value=value)
    for a in q.get("attachments", []):
        att = m.Attachment.add(FileName=a[0], Data=base64.b64decode(a[1]))
        if len(a) > 2:
            att.ContentID = a[2]
    try:
        apiproxy_stub_map.MakeSyncCall("mail", q.get("call", "Send"), m, api_base_pb2.VoidProto())
        return {"ok": True}
    except apiproxy_errors.ApplicationError as e:
        return {"error": "ApplicationError", "code": e.application_error, "message": e.error_detail}


def record_inbound(environ, body):
    msg = mail.InboundEmailMessage(body)
    texts = [b.decode() for _, b in msg.bodies("text/plain")]
    htmls = [b.decode() for _, b in msg.bodies("text/html")]
    row = {"path": environ["PATH_INFO"], "sender": msg.sender, "to": msg.to, "subject": msg.subject,
           "text": texts, "html": htmls,
           "attachments": [[a.filename, base64.b64encode(a.payload.decode()).decode()]
                           for a in getattr(msg, "attachments", [])]}
    rows = json.loads(memcache.get("inbound") or "[]")
    rows.append(row)
    memcache.set("inbound", json.dumps(rows))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    status, out = "200 OK", {}
    if path == "/env":
        out = {"api_port": os.environ.get("API_PORT"), "port": os.environ.get("PORT")}
    elif path == "/fetch":
        out = do_fetch(json.loads(body))
    elif path == "/parallel":
        out = do_parallel(json.loads(body))
    elif path == "/send":
        out = do_send(json.loads(body))
    elif path == "/raw":
        out = do_raw(json.loads(body))
    elif path.startswith("/_ah/mail/"):
        record_inbound(environ, body)
    elif path == "/inbound":
        out = json.loads(memcache.get("inbound") or "[]")
    elif path == "/hello":
        out = {"hello": True}
    else:
        status = "404 Not Found"
    data = json.dumps(out).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *a):
        pass


make_server("127.0.0.1", int(os.environ["PORT"]), wrap_wsgi_app(app), server_class=Server,
            handler_class=Quiet).serve_forever()
