"""Task queue test app: adds tasks with Google's SDK and records every
delivery it receives (headers included) as an ndb entity under its tag."""
import json
import time
import urllib.parse

from google.appengine.api import taskqueue
from google.appengine.api import wrap_wsgi_app
from google.appengine.api import apiproxy_stub_map
from google.appengine.api import memcache
from google.appengine.api.taskqueue import taskqueue_service_bytes_pb2 as tq_pb
from google.appengine.ext import deferred
from google.appengine.ext import ndb


class Seen(ndb.Model):
    path = ndb.StringProperty()
    headers = ndb.JsonProperty()
    body = ndb.TextProperty()
    at = ndb.FloatProperty()


def record(tag, path, headers, body=""):
    Seen(parent=ndb.Key("Tag", tag), path=path, headers=headers, body=body, at=time.time()).put()


class Counter(ndb.Model):
    n = ndb.IntegerProperty(default=0)


@ndb.transactional(propagation=ndb.TransactionOptions.INDEPENDENT)
def bump_elsewhere(tag):
    c = Counter.get_by_id(tag) or Counter(id=tag)
    c.n += 100
    c.put()


def txadd(tag, mode, countdown=0):
    """A task added inside a datastore transaction; returns what the test checks."""
    attempts = []

    @ndb.transactional(xg=True, retries=3)
    def work():
        attempts.append(1)
        c = Counter.get_by_id(tag) or Counter(id=tag)
        c.n += 1
        c.put()
        kw = {"countdown": countdown} if countdown else {}
        if mode == "bulk":
            taskqueue.Queue("default").add([taskqueue.Task(url="/work/" + tag, payload="bulk-%d" % i) for i in range(2)],
                                           transactional=True)
        elif mode == "toomany":
            try:
                for i in range(6):
                    taskqueue.add(url="/work/" + tag, payload="many-%d" % i, transactional=True)
            except taskqueue.TooManyTasksError:
                attempts.append("toomany")
        elif mode == "deferred":
            deferred.defer(deferred_work, tag, 7, _transactional=True, **({"_countdown": countdown} if countdown else {}))
        else:
            taskqueue.add(url="/work/" + tag, payload="attempt-%d" % len(attempts), transactional=True, **kw)
        if mode == "rollback":
            raise ValueError("rolled back on purpose")
        if mode == "conflict" and len(attempts) == 1:
            bump_elsewhere(tag)          # the outer commit now conflicts; ndb runs work() again

    try:
        work()
    except ValueError:
        pass
    c = Counter.get_by_id(tag)
    return {"attempts": len(attempts), "n": c.n if c else None}


def deferred_work(tag, value):
    record(tag, "deferred", {"value": value})


def task_headers(environ):
    return {k[5:].replace("_", "-").title(): v for k, v in environ.items()
            if k.startswith("HTTP_X_APPENGINE") or k.startswith("HTTP_X_CUSTOM")}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n).decode() if n else ""
    status, out = "200 OK", "ok"
    if path == "/add":
        kw = {"url": "/work/" + q["tag"], "queue_name": q.get("queue", "default"),
              "headers": {"X-Custom": "c1"}, "payload": q.get("payload", "hello")}
        if "url" in q:
            kw["url"] = q["url"]
        if "retry_limit" in q:
            kw["retry_options"] = taskqueue.TaskRetryOptions(task_retry_limit=int(q["retry_limit"]))
        if "name" in q:
            kw["name"] = q["name"]
        if "countdown" in q:
            kw["countdown"] = float(q["countdown"])
        if "eta" in q:
            kw["eta"] = float(q["eta"])
            import datetime
            kw["eta"] = datetime.datetime.fromtimestamp(float(q["eta"]), datetime.timezone.utc)
        try:
            t = taskqueue.add(**kw)
            out = t.name
        except taskqueue.Error as e:
            out = "error:" + type(e).__name__
    elif path.startswith("/work"):
        tag = q["tag"] if "tag" in q else path[6:]
        h = task_headers(environ)
        record(tag, path, h, body)
        if tag.startswith("fail2") and int(h.get("X-Appengine-Taskretrycount", "0")) < 2:
            status, out = "500 Internal Server Error", "failing on purpose"
        if tag.startswith("failall"):
            status, out = "503 Service Unavailable", "always failing"
    elif path.startswith("/conc/"):
        tag = path[6:]
        inflight = memcache.incr("conc-" + tag, initial_value=0)
        record(tag, path, {"conc": inflight, "queue": environ.get("HTTP_X_APPENGINE_QUEUENAME")})
        time.sleep(float(q.get("sleep", "0")))
        memcache.decr("conc-" + tag)
    elif path == "/bulk":
        n = int(q["n"])
        sleep = q.get("sleep", "0")
        tasks = [taskqueue.Task(url="/conc/%s?sleep=%s" % (q["tag"], sleep), method="GET") for _ in range(n)]
        for i in range(0, n, 100):
            taskqueue.Queue(q["queue"]).add(tasks[i:i + 100])
        out = str(time.time())
    elif path == "/update":
        import os
        req = tq_pb.TaskQueueUpdateQueueRequest(app_id=os.environ.get("GAE_APPLICATION", "").encode(),
                                                queue_name=q["queue"].encode(),
                                                bucket_refill_per_second=float(q["rate"]),
                                                bucket_capacity=int(q["bucket"]))
        if "max" in q:
            req.max_concurrent_requests = int(q["max"])
        try:
            apiproxy_stub_map.MakeSyncCall("taskqueue", "UpdateQueue", req, tq_pb.TaskQueueUpdateQueueResponse())
        except Exception as e:
            out = "error:%s" % getattr(e, "application_error", type(e).__name__)
    elif path == "/query":
        import os
        req = tq_pb.TaskQueueQueryTasksRequest(app_id=os.environ.get("GAE_APPLICATION", "").encode(),
                                               queue_name=q["queue"].encode(), max_rows=10)
        resp = tq_pb.TaskQueueQueryTasksResponse()
        apiproxy_stub_map.MakeSyncCall("taskqueue", "QueryTasks", req, resp)
        st = taskqueue.Queue(q["queue"]).fetch_statistics()
        out = json.dumps({"tasks": [{"name": t.task_name.decode(), "eta": t.eta_usec, "url": t.url.decode(),
                                     "method": t.method, "body": t.body.decode(),
                                     "headers": {h.key.decode(): h.value.decode() for h in t.header}}
                                    for t in resp.task],
                          "stats": [st.tasks, st.oldest_eta_usec]})
    elif path == "/txadd":
        out = json.dumps(txadd(q["tag"], q["mode"], float(q.get("countdown", 0))))
    elif path == "/admin/cron" or path.startswith("/admin/x"):
        record("cron" if path == "/admin/cron" else path[7:], path, task_headers(environ))
    elif path == "/seen":
        rows = Seen.query(ancestor=ndb.Key("Tag", q["tag"])).order(Seen.at).fetch()
        out = json.dumps([{"path": r.path, "headers": r.headers, "body": r.body, "at": r.at} for r in rows])
    elif path == "/defer":
        deferred.defer(deferred_work, q["tag"], 42)
    elif path == "/pull":
        pq = taskqueue.Queue("pullq")
        op = q["op"]
        if op == "add":
            pq.add([taskqueue.Task(payload="p%d" % i, method="PULL", tag=("a" if i % 2 else "b")) for i in range(4)])
        elif op == "lease":
            tasks = pq.lease_tasks(float(q.get("secs", 60)), 10)
            out = json.dumps([[t.name, t.payload.decode() if isinstance(t.payload, bytes) else t.payload, t.retry_count] for t in tasks])
        elif op == "lease_tag":
            tasks = pq.lease_tasks_by_tag(60, 10, tag=q.get("tag"))
            out = json.dumps([[t.name, t.tag.decode() if isinstance(t.tag, bytes) else t.tag] for t in tasks])
        elif op == "delete_all":
            tasks = pq.lease_tasks(60, 100)
            pq.delete_tasks(tasks)
            out = str(len(tasks))
        elif op == "modify":
            tasks = pq.lease_tasks(1, 1)
            pq.modify_task_lease(tasks[0], 120)
            out = tasks[0].name
        elif op == "stats":
            out = str(pq.fetch_statistics().tasks)
    elif path == "/purge":
        taskqueue.Queue(q["queue"]).purge()
    elif path == "/stats":
        out = str(taskqueue.Queue(q["queue"]).fetch_statistics().tasks)
    elif path == "/pause":
        import os
        req = tq_pb.TaskQueuePauseQueueRequest(app_id=os.environ.get("GAE_APPLICATION", "").encode(),
                                               queue_name=q["queue"].encode(), pause=q["pause"] == "1")
        apiproxy_stub_map.MakeSyncCall("taskqueue", "PauseQueue", req, tq_pb.TaskQueuePauseQueueResponse())
    else:
        status, out = "404 Not Found", "no"
    data = out.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


app = wrap_wsgi_app(app, use_deferred=True)
