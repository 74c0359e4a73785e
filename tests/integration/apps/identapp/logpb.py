"""The logservice messages (log_service.proto field numbers), built at run
time: appengine-python-standard 3.x ships no logservice module, so the app
calls the logservice RPC itself through the SDK's API proxy."""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
_fd = descriptor_pb2.FileDescriptorProto(name="cz_log_service.proto", package="czlog", syntax="proto2")


def _msg(name, *fields):
    m = _fd.message_type.add(name=name)
    for num, fname, ftype, label, tname in fields:
        f = m.field.add(name=fname, number=num, type=ftype, label=label)
        if tname:
            f.type_name = ".czlog." + tname


OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
S, B, I64, I32, BOOL, MSG = F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_BOOL, F.TYPE_MESSAGE

_msg("UserAppLogLine", (1, "timestamp_usec", I64, OPT, None), (2, "level", I64, OPT, None), (3, "message", S, OPT, None))
_msg("UserAppLogGroup", (2, "log_line", MSG, REP, "UserAppLogLine"))
_msg("FlushRequest", (1, "logs", B, OPT, None))
_msg("VoidProto")
_msg("LogOffset", (1, "request_id", B, OPT, None))
_msg("LogLine", (1, "time", I64, OPT, None), (2, "level", I32, OPT, None), (3, "log_message", S, OPT, None))
_msg("RequestLog", (1, "app_id", S, OPT, None), (37, "module_id", S, OPT, None), (2, "version_id", S, OPT, None),
     (3, "request_id", B, OPT, None), (35, "offset", MSG, OPT, "LogOffset"), (4, "ip", S, OPT, None),
     (5, "nickname", S, OPT, None), (6, "start_time", I64, OPT, None), (7, "end_time", I64, OPT, None),
     (8, "latency", I64, OPT, None), (10, "method", S, OPT, None), (11, "resource", S, OPT, None),
     (12, "http_version", S, OPT, None), (13, "status", I32, OPT, None), (14, "response_size", I64, OPT, None),
     (15, "referrer", S, OPT, None), (16, "user_agent", S, OPT, None), (18, "combined", S, OPT, None),
     (20, "host", S, OPT, None), (27, "finished", BOOL, OPT, None), (29, "line", MSG, REP, "LogLine"))
_msg("LogModuleVersion", (1, "module_id", S, OPT, None), (2, "version_id", S, OPT, None))
_msg("LogReadRequest", (1, "app_id", S, OPT, None), (2, "version_id", S, REP, None),
     (19, "module_version", MSG, REP, "LogModuleVersion"), (3, "start_time", I64, OPT, None),
     (4, "end_time", I64, OPT, None), (5, "offset", MSG, OPT, "LogOffset"), (6, "request_id", B, REP, None),
     (7, "minimum_log_level", I32, OPT, None), (8, "include_incomplete", BOOL, OPT, None),
     (9, "count", I64, OPT, None), (10, "include_app_logs", BOOL, OPT, None))
_msg("LogReadResponse", (1, "log", MSG, REP, "RequestLog"), (2, "offset", MSG, OPT, "LogOffset"),
     (3, "last_end_time", I64, OPT, None))

_pool = descriptor_pool.DescriptorPool()
_pool.Add(_fd)
for _m in _fd.message_type:
    globals()[_m.name] = message_factory.GetMessageClass(_pool.FindMessageTypeByName("czlog." + _m.name))
