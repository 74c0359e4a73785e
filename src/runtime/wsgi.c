/* wsgi.c - the embedded CPython of the runtime: start-up, the WSGI environ
 * (PEP 3333) of each request, and the responder that turns a WSGI response
 * into HTTP/1.1 on the connection.
 *
 * Start-up (wsgi_start, main thread): an isolated interpreter (no PYTHON*
 * variables, no user or system site-packages, UTF-8 mode, no bytecode
 * written anywhere, no signal handlers) with the built-in module
 * _cyclozzo_pyrt (log(), ClientGone, DeadlineExceededError); then glue.py
 * sets sys.path and imports the entry application; then the main thread
 * releases the GIL for good.
 *
 * Per request (wsgi_handle, a worker thread): take the GIL, build the environ
 * from the parsed request, create a Responder, call glue.serve(), release
 * the GIL. The Responder is start_response (with exc_info) and write(), plus
 * body()/known_length()/finish()/fail() used by glue.serve(). It decides the
 * framing when the head is sent: the app's Content-Length, else the summed
 * length of a list/tuple result, else (HTTP/1.1) chunked; HEAD and 1xx/204/
 * 304 carry no body. Socket writes happen with the GIL released. Nothing
 * reaches the socket until the first body bytes (or the end), so an error
 * before then becomes a clean 500; after, the connection is closed. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "runtime/pyrt.h"
#include "runtime/applog.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/util.h"

static struct {
    const pyrt_opts *o;
    PyObject *serve;            /* glue.serve */
    PyObject *bytesio;          /* io.BytesIO */
    PyObject *empty_bytes;
    PyObject *wsgi_version;     /* (1, 0) */
    PyObject *client_gone;      /* _cyclozzo_pyrt.ClientGone */
    PyObject *exc_class;        /* what deadline.c raises */
} py;

typedef struct {
    int slot;
    PyThreadState *ts;
    unsigned long tid;
} worker_t;

static __thread char cur_rid[64];

/* ---- _cyclozzo_pyrt.log ------------------------------------------------ */

static log_level py_level(int levelno)
{
    if (levelno >= 40) return LOG_ERROR;
    if (levelno >= 30) return LOG_WARN;
    if (levelno >= 20) return LOG_INFO;
    return LOG_DEBUG;
}

/* One log line per line of msg (long lines in pieces), tagged with the
 * request log id of the calling worker ("-" outside requests). */
static void log_lines(log_level lvl, const char *name, const char *msg, size_t len)
{
    const char *rid = cur_rid[0] ? cur_rid : "-";
    char piece[401];
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t j = i;
        do {
            size_t n = end - j > 400 ? 400 : end - j;
            memcpy(piece, msg + j, n);
            piece[n] = 0;
            if (n || end == i) {
                if (n) logf_(lvl, "app", "app=%s rid=%s logger=%s msg=%s",
                             log_q(py.o->app_id), log_q(rid), log_q(name), log_q(piece));
            }
            j += n;
        } while (j < end);
        i = end + 1;
    }
}

static PyObject *rt_log(PyObject *self, PyObject *args)
{
    int levelno;
    const char *name, *msg;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iss#", &levelno, &name, &msg, &len)) return NULL;
    if (cur_rid[0]) applog_add(levelno, msg, (size_t)len);
    log_level lvl = py_level(levelno);
    if (!log_enabled(lvl)) Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    log_lines(lvl, name, msg, (size_t)len);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ---- the Responder ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pyrt_conn *c;
    int head_req;               /* HEAD: no body on the wire */
    int http10;
    int keep_alive;
    int started;                /* start_response called */
    int head_built;             /* status line + headers are in out (or sent) */
    int wire;                   /* some bytes were handed to the socket */
    int finished;
    int broken;                 /* the peer went away */
    int chunked;
    int no_body;                /* HEAD, 1xx, 204, 304 */
    int buffered;               /* list/tuple result: write at the end */
    int status;
    int64_t declared;           /* the app's Content-Length, -1 none */
    int64_t known;              /* summed list/tuple length, -1 unknown */
    int64_t count;              /* body bytes the app produced */
    int64_t sent;               /* body bytes framed for the wire */
    buf status_line;            /* "200 OK" */
    buf headers;                /* the app's headers, "Name: value\r\n" each */
    buf out;
} Responder;

static void resp_dealloc(Responder *r)
{
    buf_free(&r->status_line);
    buf_free(&r->headers);
    buf_free(&r->out);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int send_iov(Responder *r, struct iovec *iov, int n)
{
    int rc;
    r->wire = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = conn_send(r->c, iov, n);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        r->broken = 1;
        r->keep_alive = 0;
        PyErr_SetString(py.client_gone, "the router closed the connection or stopped reading");
        return -1;
    }
    return 0;
}

static int flush_out(Responder *r)
{
    if (!buf_unread(&r->out)) return 0;
    struct iovec iov = {buf_rp(&r->out), buf_unread(&r->out)};
    int rc = send_iov(r, &iov, 1);
    buf_reset(&r->out);
    return rc;
}

static int is_token_char(unsigned char ch)
{
    return ch > 32 && ch < 127 && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

static PyObject *resp_start_response(Responder *r, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"status", "response_headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|O:start_response", kwl, &status, &headers, &exc_info))
        return NULL;
    if (exc_info != Py_None) {
        if (r->wire) {               /* too late to change the response: re-raise (PEP 3333) */
            PyObject *t, *v, *tb;
            if (!PyArg_ParseTuple(exc_info, "OOO", &t, &v, &tb)) return NULL;
            Py_INCREF(t); Py_INCREF(v); Py_INCREF(tb);
            PyErr_Restore(t, v, tb == Py_None ? NULL : tb);
            return NULL;
        }
    } else if (r->started) {
        PyErr_SetString(PyExc_AssertionError, "start_response() called a second time without exc_info");
        return NULL;
    }

    Py_ssize_t slen;
    const char *s = PyUnicode_AsUTF8AndSize(status, &slen);
    if (!s) return NULL;
    if (slen < 3 || s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' ||
        (slen > 3 && s[3] != ' ')) {
        PyErr_Format(PyExc_ValueError, "WSGI status %R is not \"NNN Reason\"", status);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < slen; i++)
        if ((unsigned char)s[i] < 32 || (unsigned char)s[i] >= 127) {
            PyErr_Format(PyExc_ValueError, "WSGI status %R holds a control or non-ASCII character", status);
            return NULL;
        }

    PyObject *seq = PySequence_Fast(headers, "response_headers must be a list of (name, value) tuples");
    if (!seq) return NULL;
    buf hb = BUF_INIT;
    int64_t declared = -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *name, *value;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyUnicode_Check(name = PyTuple_GET_ITEM(item, 0)) ||
            !PyUnicode_Check(value = PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError, "response header %R is not a (str, str) tuple", item);
            goto fail;
        }
        Py_ssize_t nlen, vlen;
        const char *nm = PyUnicode_AsUTF8AndSize(name, &nlen);
        if (!nm) goto fail;
        int ok = nlen > 0;
        for (Py_ssize_t k = 0; ok && k < nlen; k++) ok = is_token_char((unsigned char)nm[k]);
        if (!ok) { PyErr_Format(PyExc_ValueError, "invalid response header name %R", name); goto fail; }
        PyObject *vb = PyUnicode_AsLatin1String(value);
        if (!vb) goto fail;
        const char *v = PyBytes_AS_STRING(vb);
        vlen = PyBytes_GET_SIZE(vb);
        for (Py_ssize_t k = 0; k < vlen; k++)
            if (v[k] == '\r' || v[k] == '\n' || v[k] == 0) {
                Py_DECREF(vb);
                PyErr_Format(PyExc_ValueError, "response header %R has a line break in its value", name);
                goto fail;
            }
        /* hop-by-hop headers are the server's business (PEP 3333) */
        if (strn_case_eq(nm, (size_t)nlen, "connection") || strn_case_eq(nm, (size_t)nlen, "keep-alive") ||
            strn_case_eq(nm, (size_t)nlen, "transfer-encoding") || strn_case_eq(nm, (size_t)nlen, "upgrade")) {
            Py_DECREF(vb);
            continue;
        }
        if (strn_case_eq(nm, (size_t)nlen, "content-length")) {
            char tmp[32];
            char *end;
            long long cl = -1;
            if (vlen > 0 && vlen < (Py_ssize_t)sizeof tmp) {
                memcpy(tmp, v, (size_t)vlen); tmp[vlen] = 0;
                cl = strtoll(tmp, &end, 10);
                if (*end || cl < 0 || tmp[0] == '-' || tmp[0] == '+') cl = -1;
            }
            Py_DECREF(vb);
            if (cl < 0) { PyErr_Format(PyExc_ValueError, "invalid Content-Length %R", value); goto fail; }
            declared = cl;
            continue;                 /* written by the framing code */
        }
        buf_append(&hb, nm, (size_t)nlen);
        buf_append(&hb, ": ", 2);
        buf_append(&hb, v, (size_t)vlen);
        buf_append(&hb, "\r\n", 2);
        Py_DECREF(vb);
    }
    Py_DECREF(seq);

    buf_free(&r->headers);
    r->headers = hb;
    buf_reset(&r->status_line);
    buf_append(&r->status_line, s, (size_t)slen);
    r->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    r->declared = declared;
    r->no_body = r->head_req || r->status < 200 || r->status == 204 || r->status == 304;
    r->started = 1;
    if (!r->wire) { buf_reset(&r->out); r->head_built = 0; r->sent = 0; r->count = 0; r->chunked = 0; }
    return PyObject_GetAttrString((PyObject *)r, "write");
fail:
    buf_free(&hb);
    Py_DECREF(seq);
    return NULL;
}

/* Append the status line, headers and framing to out. final: the body is
 * complete (its length is r->count). */
static void build_head(Responder *r, int final)
{
    buf *o = &r->out;
    buf_printf(o, "HTTP/1.%d %.*s\r\n", r->http10 ? 0 : 1, (int)buf_unread(&r->status_line), buf_rp(&r->status_line));
    buf_append(o, buf_rp(&r->headers), buf_unread(&r->headers));
    if (r->no_body) {
        if (r->head_req && r->status >= 200 && r->status != 204 && r->status != 304) {
            int64_t len = r->declared >= 0 ? r->declared : r->known >= 0 ? r->known : final ? r->count : -1;
            if (len >= 0) buf_printf(o, "Content-Length: %lld\r\n", (long long)len);
        }
    } else if (r->declared >= 0) {
        buf_printf(o, "Content-Length: %lld\r\n", (long long)r->declared);
    } else if (r->known >= 0) {
        buf_printf(o, "Content-Length: %lld\r\n", (long long)r->known);
    } else if (final) {
        buf_printf(o, "Content-Length: %lld\r\n", (long long)r->count);
    } else if (!r->http10) {
        r->chunked = 1;
        buf_puts(o, "Transfer-Encoding: chunked\r\n");
    } else {
        r->keep_alive = 0;            /* HTTP/1.0 without a length: the close ends the body */
    }
    if (!r->keep_alive) buf_puts(o, "Connection: close\r\n");
    else if (r->http10) buf_puts(o, "Connection: keep-alive\r\n");
    buf_puts(o, "\r\n");
    r->head_built = 1;
}

/* Frame and (maybe) send one piece of body. flush: send now (write(),
 * generators); otherwise small pieces wait for finish(). */
static int emit(Responder *r, PyObject *data, int flush)
{
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "WSGI response body must be bytes, not %.100s", Py_TYPE(data)->tp_name);
        return -1;
    }
    if (!r->started) {
        PyErr_SetString(PyExc_AssertionError, "response body before start_response()");
        return -1;
    }
    if (r->broken) { PyErr_SetString(py.client_gone, "the router closed the connection"); return -1; }
    size_t n = (size_t)PyBytes_GET_SIZE(data);
    if (!n) return 0;
    r->count += (int64_t)n;
    if (r->no_body) return 0;
    if (r->declared >= 0 && r->sent + (int64_t)n > r->declared) {
        n = (size_t)(r->declared - r->sent);   /* never more than promised; close after */
        r->keep_alive = 0;
        if (!n) return 0;
    }
    if (!r->head_built) build_head(r, 0);
    r->sent += (int64_t)n;
    if (r->chunked) buf_printf(&r->out, "%zx\r\n", n);
    if (n >= 16384) {
        struct iovec iov[3] = {
            {buf_rp(&r->out), buf_unread(&r->out)},
            {PyBytes_AS_STRING(data), n},
            {(void *)"\r\n", 2},
        };
        int rc = send_iov(r, iov, r->chunked ? 3 : 2);
        buf_reset(&r->out);
        return rc;
    }
    buf_append(&r->out, PyBytes_AS_STRING(data), n);
    if (r->chunked) buf_append(&r->out, "\r\n", 2);
    if (flush || buf_unread(&r->out) >= 65536) return flush_out(r);
    return 0;
}

static PyObject *resp_write(Responder *r, PyObject *data)
{
    if (emit(r, data, 1) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *resp_body(Responder *r, PyObject *data)
{
    if (emit(r, data, !r->buffered) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *resp_known_length(Responder *r, PyObject *seq)
{
    int64_t total = 0;
    Py_ssize_t n = PySequence_Size(seq);
    if (n < 0) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(seq, i);
        if (!item) return NULL;
        int ok = PyBytes_Check(item);
        if (ok) total += PyBytes_GET_SIZE(item);
        Py_DECREF(item);
        if (!ok) Py_RETURN_NONE;    /* emit() will reject it with a clear error */
    }
    if (!r->head_built) r->known = total;
    r->buffered = 1;
    Py_RETURN_NONE;
}

static PyObject *resp_finish(Responder *r, PyObject *unused)
{
    if (r->finished) Py_RETURN_NONE;
    if (!r->started) {
        PyErr_SetString(PyExc_RuntimeError, "the WSGI application returned without calling start_response()");
        return NULL;
    }
    if (!r->head_built) build_head(r, 1);
    if (r->chunked) buf_puts(&r->out, "0\r\n\r\n");
    if (!r->no_body && r->declared >= 0 && r->sent < r->declared) {
        log_warn("pyrt", "app=%s rid=%s msg=\"response shorter than its Content-Length; closing the connection\" declared=%lld sent=%lld",
                 log_q(py.o->app_id), log_q(cur_rid), (long long)r->declared, (long long)r->sent);
        r->keep_alive = 0;
    }
    r->finished = 1;
    if (flush_out(r) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The request failed: a 500 if nothing is on the wire yet, else close. */
static void fail_c(Responder *r)
{
    if (r->finished) return;
    r->finished = 1;
    if (r->broken || r->wire) { r->keep_alive = 0; return; }
    buf_reset(&r->out);
    r->status = 500;
    static const char body[] = "Internal Server Error\n";
    buf_printf(&r->out, "HTTP/1.%d 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
               r->http10 ? 0 : 1, sizeof body - 1, r->keep_alive ? "" : "Connection: close\r\n");
    if (!r->head_req) buf_puts(&r->out, body);
    struct iovec iov = {buf_rp(&r->out), buf_unread(&r->out)};
    int rc;
    r->wire = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = conn_send(r->c, &iov, 1);
    Py_END_ALLOW_THREADS
    if (rc < 0) { r->broken = 1; r->keep_alive = 0; }
    buf_reset(&r->out);
}

static PyObject *resp_fail(Responder *r, PyObject *unused)
{
    fail_c(r);
    Py_RETURN_NONE;
}

static PyMethodDef resp_methods[] = {
    {"start_response", (PyCFunction)(void (*)(void))resp_start_response, METH_VARARGS | METH_KEYWORDS,
     "PEP 3333 start_response(status, response_headers, exc_info=None) -> write"},
    {"write", (PyCFunction)resp_write, METH_O, "PEP 3333 write(data): send body bytes now"},
    {"body", (PyCFunction)resp_body, METH_O, "one item of the application's result"},
    {"known_length", (PyCFunction)resp_known_length, METH_O, "the result is this list/tuple"},
    {"finish", (PyCFunction)resp_finish, METH_NOARGS, "end the response"},
    {"fail", (PyCFunction)resp_fail, METH_NOARGS, "the request failed: 500 or close"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ResponderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_cyclozzo_pyrt.Responder",
    .tp_basicsize = sizeof(Responder),
    .tp_dealloc = (destructor)resp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The HTTP side of one WSGI request.",
    .tp_methods = resp_methods,
};

/* ---- the module ---------------------------------------------------------- */

static PyMethodDef rt_methods[] = {
    {"log", rt_log, METH_VARARGS, "log(levelno, logger_name, message): write to the runtime log"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef rt_module = {
    PyModuleDef_HEAD_INIT, "_cyclozzo_pyrt",
    "Cyclozzo's Python runtime host: logging and request plumbing.", -1, rt_methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *rt_init(void)
{
    if (PyType_Ready(&ResponderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&rt_module);
    if (!m) return NULL;
    py.client_gone = PyErr_NewExceptionWithDoc("_cyclozzo_pyrt.ClientGone",
        "The router closed the connection while the response was being written.",
        PyExc_ConnectionError, NULL);
    if (!py.client_gone || PyModule_AddObjectRef(m, "ClientGone", py.client_gone) < 0) { Py_DECREF(m); return NULL; }
    return m;
}

/* ---- start-up ------------------------------------------------------------ */

/* Flush Python's own stdout/stderr (PyErr_Print writes through them); the
 * process may then leave with _exit(). */
static void flush_py_stdio(void)
{
    const char *names[] = {"stderr", "stdout"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]);    /* borrowed */
        PyObject *r = f && f != Py_None ? PyObject_CallMethod(f, "flush", NULL) : NULL;
        Py_XDECREF(r);
        PyErr_Clear();
    }
}

static int status_err(PyStatus st, const char *what, char *err, size_t errlen)
{
    if (!PyStatus_Exception(st)) return 0;
    set_err(err, errlen, "cannot start the Python interpreter (%s): %s", what, st.err_msg ? st.err_msg : "unknown error");
    return -1;
}

int wsgi_start(const pyrt_opts *o, char *err, size_t errlen)
{
    py.o = o;
    char site_dir[PATH_MAX] = "";
    if (o->venv && *o->venv) {
        snprintf(site_dir, sizeof site_dir, "%s/lib/python%d.%d/site-packages", o->venv, PY_MAJOR_VERSION, PY_MINOR_VERSION);
        struct stat st;
        if (stat(site_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            set_err(err, errlen, "virtualenv %s has no %s (not a Python %d.%d virtualenv?)", o->venv, site_dir,
                    PY_MAJOR_VERSION, PY_MINOR_VERSION);
            return -1;
        }
    }
    if (chdir(o->app_dir) < 0) {
        set_err(err, errlen, "cannot enter the app directory %s: %s", o->app_dir, strerror(errno));
        return -1;
    }
    if (PyImport_AppendInittab("_cyclozzo_pyrt", rt_init) < 0) {
        set_err(err, errlen, "cannot register the _cyclozzo_pyrt module");
        return -1;
    }

    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    if (status_err(Py_PreInitialize(&pre), "pre-initialisation", err, errlen)) return -1;

    PyConfig cfg;
    PyConfig_InitIsolatedConfig(&cfg);
    cfg.site_import = 0;              /* no system dist-packages: only the app's venv */
    cfg.write_bytecode = 0;           /* never a __pycache__ in the (read-only) app dir */
    cfg.install_signal_handlers = 0;  /* the host owns SIGTERM/SIGINT */
    cfg.user_site_directory = 0;
    PyStatus st = PyConfig_SetBytesString(&cfg, &cfg.program_name, "cyclozzo-pyrt");
    if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (status_err(st, "initialisation", err, errlen)) return -1;

    PyObject *glue = PyImport_AddModule("_cyclozzo_glue");   /* borrowed */
    PyObject *gd = glue ? PyModule_GetDict(glue) : NULL;
    PyObject *code = gd ? Py_CompileString(pyrt_glue_source, "<cyclozzo-pyrt glue.py>", Py_file_input) : NULL;
    PyObject *res = code ? PyEval_EvalCode(code, gd, gd) : NULL;
    Py_XDECREF(code);
    if (!res) {
        PyErr_Print();
        flush_py_stdio();
        set_err(err, errlen, "the runtime's Python glue failed to load");
        return -1;
    }
    Py_DECREF(res);

    PyObject *setup = PyDict_GetItemString(gd, "setup");
    res = setup ? PyObject_CallFunction(setup, "sssii", o->app_dir, site_dir, o->entry,
                                        o->threadsafe, o->debug) : NULL;
    if (!res) {
        PyErr_Print();
        flush_py_stdio();
        set_err(err, errlen, "the app's entry point %s failed to load (traceback above)", o->entry);
        return -1;
    }
    py.exc_class = res;
    py.serve = PyDict_GetItemString(gd, "serve");
    Py_XINCREF(py.serve);
    PyObject *io = PyImport_ImportModule("io");
    py.bytesio = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
    Py_XDECREF(io);
    py.empty_bytes = PyBytes_FromStringAndSize("", 0);
    py.wsgi_version = Py_BuildValue("(ii)", 1, 0);
    if (!py.serve || !py.bytesio || !py.empty_bytes || !py.wsgi_version) {
        PyErr_Print();
        flush_py_stdio();
        set_err(err, errlen, "the runtime's Python glue is incomplete");
        return -1;
    }
    int nslots = o->threadsafe ? o->threads : 1;
    if (deadline_start(nslots, o->grace_s, py.exc_class, o->app_id, err, errlen) < 0) return -1;
    PyEval_SaveThread();              /* from now on only workers run Python */
    return 0;
}

void *wsgi_worker_init(int slot)
{
    worker_t *w = xcalloc(1, sizeof *w);
    w->slot = slot;
    PyGILState_Ensure();              /* creates this thread's state */
    w->tid = PyThread_get_thread_ident();
    w->ts = PyEval_SaveThread();
    return w;
}

/* ---- the environ ------------------------------------------------------------ */

static int set_str(PyObject *d, const char *key, const char *s, size_t n)
{
    PyObject *v = PyUnicode_DecodeLatin1(s, (Py_ssize_t)n, NULL);
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static int set_cstr(PyObject *d, const char *key, const char *s) { return set_str(d, key, s, strlen(s)); }

/* Add header name: value as HTTP_NAME (joined with ", " when repeated; "; "
 * for Cookie). Names holding '_' are dropped, as most WSGI servers do, so
 * "X_AppEngine_User_Email" cannot pose as "X-AppEngine-User-Email". */
static int add_header(PyObject *d, const http_header *h)
{
    char key[256];
    if (h->name_len + 6 > sizeof key || memchr(h->name, '_', h->name_len)) return 0;
    memcpy(key, "HTTP_", 5);
    for (size_t i = 0; i < h->name_len; i++) {
        char ch = h->name[i];
        key[5 + i] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
    }
    key[5 + h->name_len] = 0;
    const char *k = key;
    if (!strcmp(key, "HTTP_CONTENT_TYPE")) k = "CONTENT_TYPE";
    else if (!strcmp(key, "HTTP_CONTENT_LENGTH")) k = "CONTENT_LENGTH";
    PyObject *old = PyDict_GetItemString(d, k);
    if (!old) return set_str(d, k, h->value, h->value_len);
    PyObject *v = PyUnicode_DecodeLatin1(h->value, (Py_ssize_t)h->value_len, NULL);
    PyObject *joined = v ? PyUnicode_FromFormat("%U%s%U", old, strcmp(k, "HTTP_COOKIE") ? ", " : "; ", v) : NULL;
    Py_XDECREF(v);
    if (!joined) return -1;
    int rc = PyDict_SetItemString(d, k, joined);
    Py_DECREF(joined);
    return rc;
}

typedef struct {
    const http_header *host, *https, *user_ip, *xff, *log_id, *script, *deadline, *ticket;
} known_headers;

static PyObject *build_environ(pyrt_conn *c, const known_headers *kh, int https)
{
    const http_request *q = &c->req;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    char stackbuf[2048];
    char *path = q->path_len < sizeof stackbuf ? stackbuf : xmalloc(q->path_len + 1);
    long plen = http_url_decode(q->path, q->path_len, path);
    int bad = plen < 0;
    if (bad) { memcpy(path, q->path, q->path_len); plen = (long)q->path_len; }
    int rc = set_str(d, "REQUEST_METHOD", q->method, q->method_len) |
             set_cstr(d, "SCRIPT_NAME", "") |
             set_str(d, "PATH_INFO", path, (size_t)plen) |
             set_str(d, "QUERY_STRING", q->query ? q->query : "", q->query ? q->query_len : 0) |
             set_str(d, "REQUEST_URI", q->target, q->target_len) |
             set_cstr(d, "SERVER_PROTOCOL", q->version_minor ? "HTTP/1.1" : "HTTP/1.0") |
             set_cstr(d, "SERVER_SOFTWARE", "Cyclozzo");
    if (path != stackbuf) free(path);

    /* SERVER_NAME / SERVER_PORT from Host ("name", "name:port", "[v6]:port") */
    const char *hs = kh->host ? kh->host->value : "localhost";
    size_t hn = kh->host ? kh->host->value_len : 9;
    const char *port = https ? "443" : "80";
    size_t portn = strlen(port), namen = hn;
    const char *name = hs;
    if (hn && hs[0] == '[') {
        const char *rb = memchr(hs, ']', hn);
        if (rb) {
            name = hs + 1; namen = (size_t)(rb - hs - 1);
            if ((size_t)(rb - hs) + 1 < hn && rb[1] == ':') { port = rb + 2; portn = hn - (size_t)(rb - hs) - 2; }
        }
    } else {
        const char *colon = memrchr(hs, ':', hn);
        if (colon) { namen = (size_t)(colon - hs); port = colon + 1; portn = hn - namen - 1; }
    }
    rc |= set_str(d, "SERVER_NAME", name, namen) | set_str(d, "SERVER_PORT", port, portn);

    /* REMOTE_ADDR: the user's address as the router saw it */
    if (kh->user_ip) rc |= set_str(d, "REMOTE_ADDR", kh->user_ip->value, kh->user_ip->value_len);
    else if (kh->xff) {
        const char *comma = memchr(kh->xff->value, ',', kh->xff->value_len);
        size_t n = comma ? (size_t)(comma - kh->xff->value) : kh->xff->value_len;
        while (n && kh->xff->value[n - 1] == ' ') n--;
        rc |= set_str(d, "REMOTE_ADDR", kh->xff->value, n);
    } else rc |= set_cstr(d, "REMOTE_ADDR", "127.0.0.1");
    if (kh->https) rc |= set_cstr(d, "HTTPS", https ? "on" : "off");

    for (size_t i = 0; i < q->nheaders; i++) {
        const http_header *h = &q->headers[i];
        if (h->name_len > 11 && !strncasecmp(h->name, "x-cyclozzo-", 11)) continue;
        rc |= add_header(d, h);
    }

    size_t cl = q->content_length > 0 ? (size_t)q->content_length : 0;
    PyObject *body = cl ? PyBytes_FromStringAndSize(buf_rp(&c->in) + q->head_len, (Py_ssize_t)cl) : NULL;
    PyObject *input = PyObject_CallOneArg(py.bytesio, body ? body : py.empty_bytes);
    Py_XDECREF(body);
    if (!input) { Py_DECREF(d); return NULL; }
    rc |= PyDict_SetItemString(d, "wsgi.input", input);
    Py_DECREF(input);
    rc |= PyDict_SetItemString(d, "wsgi.version", py.wsgi_version) |
          set_cstr(d, "wsgi.url_scheme", https ? "https" : "http") |
          PyDict_SetItemString(d, "wsgi.multiprocess", Py_False) |
          PyDict_SetItemString(d, "wsgi.run_once", Py_False) |
          PyDict_SetItemString(d, "wsgi.input_terminated", Py_True);
    if (rc) { Py_DECREF(d); return NULL; }
    return d;
}

/* ---- one request ------------------------------------------------------------ */

int wsgi_handle(void *worker, pyrt_conn *c)
{
    worker_t *w = worker;
    const http_request *q = &c->req;
    known_headers kh = {0};
    for (size_t i = 0; i < q->nheaders; i++) {
        const http_header *h = &q->headers[i];
        const char *n = h->name;
        size_t nl = h->name_len;
        if (strn_case_eq(n, nl, "host")) kh.host = h;
        else if (nl > 12 && !strncasecmp(n, "x-appengine-", 12)) {
            if (strn_case_eq(n, nl, "x-appengine-https")) kh.https = h;
            else if (strn_case_eq(n, nl, "x-appengine-user-ip")) kh.user_ip = h;
            else if (strn_case_eq(n, nl, "x-appengine-request-log-id")) kh.log_id = h;
            else if (strn_case_eq(n, nl, "x-appengine-api-ticket")) kh.ticket = h;
        } else if (strn_case_eq(n, nl, "x-forwarded-for")) kh.xff = h;
        else if (strn_case_eq(n, nl, "x-cyclozzo-script")) kh.script = h;
        else if (strn_case_eq(n, nl, "x-cyclozzo-deadline")) kh.deadline = h;
    }
    int https = kh.https && strn_case_eq(kh.https->value, kh.https->value_len, "on");
    double deadline = 60;
    if (kh.deadline) {
        char tmp[32];
        size_t n = kh.deadline->value_len < sizeof tmp - 1 ? kh.deadline->value_len : sizeof tmp - 1;
        memcpy(tmp, kh.deadline->value, n); tmp[n] = 0;
        double v = strtod(tmp, NULL);
        if (v > 0) deadline = v;
    }
    if (kh.log_id) {
        size_t n = kh.log_id->value_len < sizeof cur_rid - 1 ? kh.log_id->value_len : sizeof cur_rid - 1;
        memcpy(cur_rid, kh.log_id->value, n); cur_rid[n] = 0;
    } else {
        uint8_t rb[8];
        if (random_bytes(rb, sizeof rb) == 0) hex_encode(rb, sizeof rb, cur_rid); else strcpy(cur_rid, "-");
    }
    char pathc[160];
    snprintf(pathc, sizeof pathc, "%.*s", (int)(q->path_len < 150 ? q->path_len : 150), q->path);
    int64_t t0 = now_us();
    applog_begin(kh.ticket ? kh.ticket->value : "", kh.ticket ? kh.ticket->value_len : 0);

    PyEval_RestoreThread(w->ts);
    Responder *r = PyObject_New(Responder, &ResponderType);
    int keep;
    if (!r) {
        PyErr_Clear();
        PyEval_SaveThread();
        cur_rid[0] = 0;
        return 0;
    }
    r->c = c;
    r->head_req = strn_case_eq(q->method, q->method_len, "HEAD");
    r->http10 = q->version_minor == 0;
    r->keep_alive = q->keep_alive;
    r->started = r->head_built = r->wire = r->finished = r->broken = r->chunked = r->no_body = r->buffered = 0;
    r->status = 0;
    r->declared = r->known = -1;
    r->count = r->sent = 0;
    r->status_line = (buf)BUF_INIT;
    r->headers = (buf)BUF_INIT;
    r->out = (buf)BUF_INIT;

    PyObject *env = build_environ(c, &kh, https);
    PyObject *script = kh.script ? PyUnicode_DecodeLatin1(kh.script->value, (Py_ssize_t)kh.script->value_len, NULL)
                                 : (Py_INCREF(Py_None), Py_None);
    PyObject *res = NULL;
    if (env && script) {
        deadline_begin(w->slot, w->tid, deadline, cur_rid, pathc);
        res = PyObject_CallFunctionObjArgs(py.serve, script, env, (PyObject *)r, NULL);
        if (deadline_end(w->slot)) PyThreadState_SetAsyncExc(w->tid, NULL);
    }
    if (!res) {
        /* serve() catches everything the app raises; this is the runtime's own failure */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyObject *s = v ? PyObject_Repr(v) : NULL;
        log_error("pyrt", "app=%s rid=%s msg=\"request failed inside the runtime\" err=%s",
                  log_q(py.o->app_id), log_q(cur_rid), log_q(s ? PyUnicode_AsUTF8(s) : "?"));
        Py_XDECREF(s); Py_XDECREF(t); Py_XDECREF(v); Py_XDECREF(tb);
        PyErr_Clear();
    }
    Py_XDECREF(res);
    fail_c(r);                        /* no-op when the response was finished */
    keep = r->keep_alive && !r->broken;
    int status = r->status;
    Py_XDECREF(env);
    Py_XDECREF(script);
    Py_DECREF(r);
    PyEval_SaveThread();
    applog_end(py.o->app_id, cur_rid);

    log_debug("pyrt", "app=%s rid=%s msg=request method=%.*s path=%s status=%d ms=%.2f",
              log_q(py.o->app_id), log_q(cur_rid), (int)q->method_len, q->method, log_q(pathc), status,
              (double)(now_us() - t0) / 1000.0);
    cur_rid[0] = 0;
    return keep;
}
