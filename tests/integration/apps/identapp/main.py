"""Identity, modules and logs test app: answers with what Google's SDK
(app_identity, modules, system, capabilities, the logservice RPC) says."""
import base64
import json
import logging
import os
import time
import urllib.parse

from google.appengine.api import apiproxy_stub_map
from google.appengine.api import app_identity
from google.appengine.api import capabilities
from google.appengine.api import modules
from google.appengine.api import wrap_wsgi_app
from google.appengine.api.system import system_service_pb2
from google.appengine.runtime import apiproxy_errors

import logpb


def catch(fn, *a, **kw):
    try:
        return {"ok": fn(*a, **kw)}
    except Exception as e:
        return {"error": type(e).__name__, "detail": str(e)}


def identity(q):
    out = {
        "service_account": app_identity.get_service_account_name(),
        "bucket": app_identity.get_default_gcs_bucket_name(),
        "app_id": app_identity.get_application_id(),
        "hostname": app_identity.get_default_version_hostname(),
    }
    data = q.get("data", "hello").encode()
    key_name, sig = app_identity.sign_blob(data)
    out["key_name"] = key_name
    out["signature"] = base64.b64encode(sig).decode()
    out["certs"] = [{"key_name": c.key_name, "pem": c.x509_certificate_pem}
                    for c in app_identity.get_public_certificates()]
    scopes = q.get("scopes", "").split(",") if q.get("scopes") else []
    if scopes:
        tok = catch(app_identity.get_access_token, scopes)
        if "ok" in tok:
            out["token"], out["expires"] = tok["ok"]
        else:
            out["token_error"] = tok
    out["empty_scopes"] = catch(app_identity.get_access_token, [])
    out["big_blob"] = catch(app_identity.sign_blob, b"x" * 9000)
    return out


def mods(q):
    return {
        "current_module": modules.get_current_module_name(),
        "current_version": modules.get_current_version_name(),
        "modules": catch(lambda: list(modules.get_modules())),
        "versions": catch(lambda: list(modules.get_versions())),
        "versions_other": catch(modules.get_versions, "nosuchmodule"),
        "default_version": catch(modules.get_default_version),
        "num_instances": catch(modules.get_num_instances),
        "num_instances_badver": catch(modules.get_num_instances, None, "v999"),
        "set_same": catch(modules.set_num_instances, 1),
        "set_other": catch(modules.set_num_instances, 3),
        "set_zero": catch(modules.set_num_instances, 0),
        "start": catch(modules.start_version, modules.get_current_module_name(), "v7"),
        "start_bad": catch(modules.start_version, modules.get_current_module_name(), "v999"),
        "stop": catch(modules.stop_version),
        "hostname": catch(modules.get_hostname),
        "hostname_inst0": catch(modules.get_hostname, instance=0),
        "hostname_inst5": catch(modules.get_hostname, instance=5),
        "hostname_badmod": catch(modules.get_hostname, module="nosuchmodule"),
    }


def system(q):
    req = system_service_pb2.GetSystemStatsRequest()
    resp = system_service_pb2.GetSystemStatsResponse()
    apiproxy_stub_map.MakeSyncCall("system", "GetSystemStats", req, resp)
    bg = catch(apiproxy_stub_map.MakeSyncCall, "system", "StartBackgroundRequest",
               system_service_pb2.StartBackgroundRequestRequest(),
               system_service_pb2.StartBackgroundRequestResponse())
    if "error" in bg:
        bg["detail"] = bg["detail"][:200]
    return {"cpu_total": resp.cpu.total, "cpu_current": resp.cpu.current,
            "mem_current": resp.memory.current, "mem_total": resp.memory.total,
            "background": bg}


def caps(q):
    out = {}
    for pkg, cap_list in [("datastore_v3", ["write"]), ("datastore_v3", None), ("memcache", None),
                          ("taskqueue", None), ("mail", None), ("images", None), ("urlfetch", None),
                          ("blobstore", None), ("xmpp", None)]:
        cs = capabilities.CapabilitySet(pkg, capabilities=cap_list)
        out[pkg + ("/" + ",".join(cap_list) if cap_list else "")] = cs.is_enabled()
    return out


def emit_logs(q):
    tag = q.get("tag", "t")
    logging.debug("debug %s", tag)
    logging.info("info %s", tag)
    logging.warning("warning %s", tag)
    if q.get("error"):
        logging.error("error %s", tag)
    if q.get("critical"):
        logging.critical("critical %s", tag)
    print("printed %s" % tag)
    for i in range(int(q.get("big", 0))):
        logging.info("big %s %d %s", tag, i, "x" * 16000)
    return {"rid": os.environ.get("REQUEST_LOG_ID", "")}


def read_logs(q):
    req = logpb.LogReadRequest(app_id=os.environ["GAE_APPLICATION"])
    for k in ("start_time", "end_time", "count", "minimum_log_level"):
        if k in q:
            setattr(req, k, int(q[k]))
    if q.get("include_app_logs"):
        req.include_app_logs = True
    if q.get("include_incomplete"):
        req.include_incomplete = True
    for v in filter(None, q.get("version_ids", "").split(",")):
        req.version_id.append(v)
    for r in filter(None, q.get("request_ids", "").split(",")):
        req.request_id.append(r.encode())
    if q.get("offset"):
        req.offset.request_id = base64.b64decode(q["offset"])
    if q.get("other_app"):
        req.app_id = "dev~someoneelse"
    resp = logpb.LogReadResponse()
    try:
        apiproxy_stub_map.MakeSyncCall("logservice", "Read", req, resp)
    except apiproxy_errors.ApplicationError as e:
        return {"error": e.application_error, "detail": e.error_detail}
    logs = []
    for r in resp.log:
        logs.append({
            "request_id": r.request_id.decode(), "app_id": r.app_id, "module_id": r.module_id,
            "version_id": r.version_id, "ip": r.ip, "method": r.method, "resource": r.resource,
            "http_version": r.http_version, "status": r.status, "response_size": r.response_size,
            "user_agent": r.user_agent, "referrer": r.referrer, "host": r.host, "start_time": r.start_time,
            "end_time": r.end_time, "latency": r.latency, "finished": r.finished, "combined": r.combined,
            "offset": base64.b64encode(r.offset.request_id).decode(),
            "lines": [{"time": l.time, "level": l.level, "message": l.log_message} for l in r.line],
        })
    out = {"logs": logs}
    if resp.HasField("offset"):
        out["offset"] = base64.b64encode(resp.offset.request_id).decode()
    return out


def flush_and_read(q):
    """Flush this request's lines now, then find this (unfinished) request."""
    rid = os.environ.get("REQUEST_LOG_ID", "")
    group = logpb.UserAppLogGroup()
    group.log_line.add(timestamp_usec=int(time.time() * 1e6), level=3, message="flushed early")
    apiproxy_stub_map.MakeSyncCall("logservice", "Flush", logpb.FlushRequest(logs=group.SerializeToString()),
                                   logpb.VoidProto())
    found = {}
    for _ in range(50):
        found = read_logs({"request_ids": rid, "include_incomplete": "1", "include_app_logs": "1"})
        if found.get("logs"):
            break
        time.sleep(0.05)
    without = read_logs({"request_ids": rid})
    return {"rid": rid, "with_incomplete": found, "without": without}


ROUTES = {"/identity": identity, "/modules": mods, "/system": system, "/caps": caps,
          "/log": emit_logs, "/read": read_logs, "/flushread": flush_and_read}


def app(environ, start_response):
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    fn = ROUTES.get(environ["PATH_INFO"])
    if fn is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body = json.dumps(fn(q)).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = wrap_wsgi_app(app)
