"""Cyclozzo Python runtime: the Python half of bin/cyclozzo-pyrt.

This file is compiled into the runtime binary (src/runtime/glue.c) and run
once inside the embedded interpreter as the module `_cyclozzo_glue`. The C
host owns sockets, HTTP framing, threads and deadlines; this module owns what
is easier to say in Python:

  setup()   sys.path (app dir, stdlib, the app's virtualenv), a thread-local
            os.environ, logging into the runtime's log, the import of the
            entry application (an import error propagates to the host, which
            prints it and exits non-zero).
  serve()   one WSGI request: resolve the handler's application (imported
            once, then cached), install the per-request environment App
            Engine apps read (os.environ keys such as USER_EMAIL, AUTH_DOMAIN,
            REQUEST_LOG_ID, HTTP_X_APPENGINE_API_TICKET, and the SDK's
            contextvars when the SDK is loaded), call the app, and stream its
            result through the C responder object `r`.

Per-request os.environ: os.environ is replaced by a mapping that reads a
per-thread dict while a request runs and the process environment otherwise,
so concurrent requests never see each other's user or ticket. When the app
wraps itself with google.appengine.api.wrap_wsgi_app the SDK replaces
os.environ with its own thread-local mapping; serve() then fills that one.
"""
import binascii
import collections.abc
import contextvars
import importlib
import io
import logging
import os
import sys
import threading

import _cyclozzo_pyrt as _rt

_local = threading.local()
_apps = {}                    # script ("main.app") -> WSGI callable
_apps_lock = threading.Lock()
_entry = None                 # the --entry application
_multithread = False
_base_ctx = None              # contextvars snapshot taken after the entry import

# X-AppEngine-* headers that App Engine also exposes without the prefix
# (python27 semantics, which the SDK's legacy middleware reproduces).
_UNPREFIXED = (
    'AUTH_DOMAIN', 'DATACENTER', 'DEFAULT_VERSION_HOSTNAME', 'HTTPS',
    'REQUEST_ID_HASH', 'REQUEST_LOG_ID', 'USER_EMAIL', 'USER_ID',
    'USER_IS_ADMIN', 'USER_NICKNAME', 'USER_ORGANIZATION',
)


class _ThreadEnviron(collections.abc.MutableMapping):
    """os.environ replacement: the current request's dict, else the process's."""

    def __init__(self, base):
        self._base = base

    def _d(self):
        d = getattr(_local, 'environ', None)
        return self._base if d is None else d

    def __getitem__(self, key):
        return self._d()[key]

    def __setitem__(self, key, value):
        d = self._d()
        d[key] = value
        if d is self._base:
            try:
                os.putenv(key, value)
            except (TypeError, ValueError):
                pass

    def __delitem__(self, key):
        d = self._d()
        del d[key]
        if d is self._base:
            try:
                os.unsetenv(key)
            except (TypeError, ValueError):
                pass

    def __iter__(self):
        return iter(list(self._d()))

    def __len__(self):
        return len(self._d())

    def __contains__(self, key):
        return key in self._d()

    def get(self, key, default=None):
        return self._d().get(key, default)

    def copy(self):
        return dict(self._d())

    def __repr__(self):
        return 'environ(%r)' % (self._d(),)


_environ = None


class _LogHandler(logging.Handler):
    """Sends every record to the runtime log, tagged with the request log id."""

    def emit(self, record):
        try:
            msg = self.format(record)
            _rt.log(record.levelno, record.name, msg)
        except Exception:
            self.handleError(record)


class _LogStream(io.TextIOBase):
    """A text stream whose lines become log lines (print(), wsgi.errors)."""

    encoding = 'utf-8'
    errors = 'backslashreplace'

    def __init__(self, name, level):
        self._name = name
        self._level = level
        self._lock = threading.Lock()
        self._parts = {}

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError('write() argument must be str, not %s' % type(s).__name__)
        tid = threading.get_ident()
        with self._lock:
            pending = self._parts.pop(tid, '') + s
            *lines, rest = pending.split('\n')
            if rest:
                self._parts[tid] = rest
        for line in lines:
            _rt.log(self._level, self._name, line)
        return len(s)

    def flush(self):
        tid = threading.get_ident()
        with self._lock:
            rest = self._parts.pop(tid, '')
        if rest:
            _rt.log(self._level, self._name, rest)

    def writelines(self, lines):
        for line in lines:
            self.write(line)


_errors = None


def _resolve(spec):
    """'pkg.mod.attr' or 'pkg.mod:attr' -> the object, importing pkg.mod."""
    if spec.endswith('.py'):
        raise ImportError('script %r is a CGI script; Cyclozzo runs WSGI applications, '
                          'named module.attribute (e.g. main.app)' % spec)
    if ':' in spec:
        mod, _, attr = spec.partition(':')
    else:
        mod, _, attr = spec.rpartition('.')
    if not mod or not attr:
        raise ImportError('script %r is not of the form module.attribute' % spec)
    obj = importlib.import_module(mod)
    for part in attr.split('.'):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError('script %r is not a WSGI application (not callable)' % spec)
    return obj


def _app_for(script):
    if not script or script == 'auto':
        return _entry
    app = _apps.get(script)
    if app is None:
        with _apps_lock:
            app = _apps.get(script)
            if app is None:
                app = _resolve(script)
                _apps[script] = app
    return app


class DeadlineExceededError(BaseException):
    """Raised in a request's thread when it outlives X-Cyclozzo-Deadline.

    Used when the app cannot import google.appengine.runtime (the SDK's class
    of the same name is raised then); also _cyclozzo_pyrt.DeadlineExceededError."""

    def __str__(self):
        return 'The overall deadline for responding to the HTTP request was exceeded.'


DeadlineExceededError.__module__ = '_cyclozzo_pyrt'


def _deadline_class():
    """The SDK's DeadlineExceededError when the app can import it, else ours."""
    try:
        from google.appengine.runtime import DeadlineExceededError as sdk_class
        return sdk_class
    except Exception:
        return DeadlineExceededError


def setup(app_dir, site_dir, entry, multithread, debug):
    """Prepare the interpreter and import the entry application.

    Returns the class to raise at a request's deadline. Any exception (the
    app's import error) propagates to the host, which prints it and exits."""
    global _environ, _entry, _multithread, _base_ctx, _errors
    import site
    sys.path[:] = [app_dir] + [p for p in sys.path if p and p != app_dir]
    if site_dir:
        site.addsitedir(site_dir)
    sys.argv[:] = ['']
    _multithread = bool(multithread)
    _rt.DeadlineExceededError = DeadlineExceededError

    _environ = _ThreadEnviron(dict(os.environ))
    os.environ = _environ

    root = logging.getLogger()
    root.addHandler(_LogHandler())
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    _errors = _LogStream('wsgi.errors', logging.ERROR)

    logging.captureWarnings(True)   # warnings.warn() -> logger py.warnings
    exc_class = _deadline_class()
    sys.stdout = _LogStream('stdout', logging.INFO)
    sys.stderr = _LogStream('stderr', logging.WARNING)
    try:
        _entry = _resolve(entry)
    except BaseException:
        # the host prints the traceback: on the real stderr, not as log lines
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        raise
    _base_ctx = contextvars.copy_context()
    return exc_class


def _request_environ(environ):
    """The os.environ a request sees: the process environment, the WSGI
    environ's string values, and the X-AppEngine-* values without prefix."""
    d = dict(_environ._base)
    for key in _UNPREFIXED:
        d.pop(key, None)
    for k, v in environ.items():
        if type(v) is str:
            d[k] = v
    for key in _UNPREFIXED:
        v = environ.get('HTTP_X_APPENGINE_' + key)
        if v is not None:
            d[key] = v
    d.setdefault('AUTH_DOMAIN', 'gmail.com')
    d.setdefault('USER_IS_ADMIN', '0')
    d.setdefault('HTTPS', 'off')
    log_id = environ.get('HTTP_X_APPENGINE_REQUEST_LOG_ID')
    if log_id and 'REQUEST_ID_HASH' not in d:
        d['REQUEST_ID_HASH'] = '%08X' % (binascii.crc32(log_id.encode('latin-1')) & 0xffffffff)
    return d


def _install(d):
    """Make d this thread's os.environ (None: back to the process's)."""
    e = os.environ
    if e is _environ:
        _local.environ = d
        return
    renv = sys.modules.get('google.appengine.runtime.request_environment')
    if renv is not None and isinstance(e, renv.RequestLocalEnviron):
        cur = renv.current_request
        if d is None:
            cur.Reset()
        else:
            cur.Init(cur.errors, d)
    elif d is not None:
        _local.environ = d


def serve(script, environ, r):
    """Run one request in a fresh copy of the start-up contextvars context."""
    _base_ctx.copy().run(_serve, script, environ, r)


def _serve(script, environ, r):
    try:
        if script and script != 'auto' and script not in _apps:
            # first use of this script: import it in the process environment,
            # so import-time snapshots of os.environ (wrap_wsgi_app takes
            # one) never hold this request's user or ticket
            if os.environ is _environ:
                _install(None)
            else:
                _install(dict(_environ._base))
        app = _app_for(script)
    except BaseException:
        import traceback
        _rt.log(logging.ERROR, 'cyclozzo.runtime',
                'cannot load the handler script %r\n' % (script,) + traceback.format_exc())
        r.fail()
        return
    environ['wsgi.errors'] = _errors
    environ['wsgi.multithread'] = _multithread
    _install(_request_environ(environ))
    stub = sys.modules.get('google.appengine.runtime.default_api_stub')
    gctx = sys.modules.get('google.appengine.runtime.context')
    try:
        if gctx is not None:
            gctx.init_from_wsgi_environ(environ)
        if stub is not None:
            stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)
        _run(app, environ, r)
    finally:
        if stub is not None:
            stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(False)
        _install(None)


def _run(app, environ, r):
    try:
        result = app(environ, r.start_response)
        try:
            if isinstance(result, (list, tuple)):
                r.known_length(result)
            for data in result:
                r.body(data)
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                close()
        r.finish()
    except _rt.ClientGone as e:
        _rt.log(logging.WARNING, 'pyrt', 'client went away: %s' % e)
        r.fail()
    except BaseException:
        import traceback
        _rt.log(logging.ERROR, 'cyclozzo.runtime',
                'the application raised an exception\n' + traceback.format_exc())
        r.fail()
