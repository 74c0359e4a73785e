/* server.c - the Python runtime's HTTP/1.1 server on a Unix socket.
 *
 * Leader/followers: the worker threads take turns waiting in epoll_wait over
 * the listening socket, a signalfd (SIGTERM/SIGINT: drain and exit) and every
 * idle connection (each armed EPOLLONESHOT, so exactly one thread owns a
 * connection at a time). The leader accepts connections and reads bytes
 * until some connection holds a whole request (head parsed by src/http/http.h
 * and Content-Length bytes of body); it then hands leadership to a follower
 * and runs that request itself (wsgi_handle), so a request costs no thread
 * hand-off. After the response it serves the next pipelined request already
 * buffered, or re-arms the connection, or closes it, and queues up to lead
 * again. Requests on one connection are answered in order; different
 * connections run concurrently on up to --threads workers (one when the app
 * is not threadsafe). No thread holds the GIL while waiting or writing. */
#include "runtime/pyrt.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "core/log.h"
#include "core/util.h"

#define SEND_STALL_MS 60000     /* a peer that reads nothing for this long is dropped */

static struct {
    const pyrt_opts *o;
    int lfd, ep, sfd;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a follower waits here to lead */
    int leader;                 /* a thread is in epoll_wait */
    int pending;                /* requests running */
} srv;

static char tag_listen, tag_signal;

static void conn_free(pyrt_conn *c)
{
    close(c->fd);
    buf_free(&c->in);
    free(c);
}

static void send_error(pyrt_conn *c, int status)
{
    char msg[256];
    const char *reason = http_reason(status);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     status, reason, strlen(reason) + 1, reason);
    struct iovec iov = {msg, (size_t)n};
    conn_send(c, &iov, 1);
}

int conn_send(pyrt_conn *c, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr mh = {0};
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd p = {c->fd, POLLOUT, 0};
                int r = poll(&p, 1, SEND_STALL_MS);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) return -1;
                continue;
            }
            return -1;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) { left -= iov->iov_len; iov++; n--; }
        if (n > 0) { iov->iov_base = (char *)iov->iov_base + left; iov->iov_len -= left; }
    }
    return 0;
}

/* Is a whole request at the front of c->in? 1 yes (c->req, c->need set),
 * 0 not yet, -1 malformed (an error response has been sent: close). */
static int frame(pyrt_conn *c)
{
    size_t have = buf_unread(&c->in);
    if (!have) return 0;
    int rc = http_parse_request(buf_rp(&c->in), have, &c->req, NULL);
    if (rc == HTTP_INCOMPLETE) return 0;
    if (rc < 0) {
        int status = -rc;
        log_info("pyrt", "app=%s msg=\"bad request from the router\" status=%d", log_q(srv.o->app_id), status);
        send_error(c, status);
        return -1;
    }
    if (c->req.chunked) {                  /* the router always sends Content-Length */
        send_error(c, 411);
        return -1;
    }
    int64_t cl = c->req.content_length < 0 ? 0 : c->req.content_length;
    if (cl > (int64_t)PYRT_MAX_BODY) {
        send_error(c, 413);
        return -1;
    }
    c->need = c->req.head_len + (size_t)cl;
    if (have >= c->need) return 1;
    if (c->req.expect_continue && have == c->req.head_len) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        struct iovec iov = {(void *)cont, sizeof cont - 1};
        conn_send(c, &iov, 1);
    }
    buf_reserve(&c->in, c->need - have);
    return 0;
}

static void rearm(pyrt_conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = c};
    if (epoll_ctl(srv.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        log_warn("pyrt", "app=%s msg=\"cannot re-arm a connection\" err=%s", log_q(srv.o->app_id), log_q(strerror(errno)));
        conn_free(c);
    }
}

static void finish_request(void)
{
    pthread_mutex_lock(&srv.mu);
    srv.pending--;
    pthread_mutex_unlock(&srv.mu);
}

/* Read what the connection has; 1 when a whole request is buffered (the
 * caller now owns it), 0 when it went back to epoll or was closed. */
static int on_readable(pyrt_conn *c)
{
    int eof = 0;
    for (;;) {
        buf_reserve(&c->in, 16384);
        ssize_t r = read(c->fd, buf_wp(&c->in), buf_room(&c->in));
        if (r > 0) { c->in.len += (size_t)r; if ((size_t)r < 16384) break; continue; }
        if (r == 0) { eof = 1; break; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        eof = 1;
        break;
    }
    int rc = frame(c);
    if (rc > 0) return 1;
    if (rc < 0 || eof) conn_free(c);
    else rearm(c);
    return 0;
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("pyrt", "app=%s msg=\"accept failed\" err=%s", log_q(srv.o->app_id), log_q(strerror(errno)));
            return;
        }
        pyrt_conn *c = xcalloc(1, sizeof *c);
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = c};
        if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, fd, &ev) < 0) conn_free(c);
    }
}

static void drain_and_exit(int signo);

/* Lead until some connection holds a whole request; return it. */
static pyrt_conn *lead(void)
{
    for (;;) {
        struct epoll_event ev;
        int n = epoll_wait(srv.ep, &ev, 1, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("pyrt", "app=%s msg=\"epoll_wait failed\" err=%s", log_q(srv.o->app_id), log_q(strerror(errno)));
            _exit(PYRT_EXIT_START);
        }
        if (n == 0) continue;
        void *p = ev.data.ptr;
        if (p == &tag_listen) { on_accept(); continue; }
        if (p == &tag_signal) {
            struct signalfd_siginfo si;
            if (read(srv.sfd, &si, sizeof si) == (ssize_t)sizeof si) drain_and_exit((int)si.ssi_signo);
            continue;
        }
        if (on_readable(p)) return p;
    }
}

static void *worker_main(void *arg)
{
    int slot = (int)(intptr_t)arg;
    void *w = wsgi_worker_init(slot);
    for (;;) {
        pthread_mutex_lock(&srv.mu);
        while (srv.leader) pthread_cond_wait(&srv.cv, &srv.mu);
        srv.leader = 1;
        pthread_mutex_unlock(&srv.mu);

        pyrt_conn *c = lead();

        pthread_mutex_lock(&srv.mu);             /* a follower leads while we work */
        srv.leader = 0;
        srv.pending++;
        pthread_cond_signal(&srv.cv);
        pthread_mutex_unlock(&srv.mu);

        for (;;) {
            int keep = wsgi_handle(w, c);
            buf_consume(&c->in, c->need);
            c->need = 0;
            if (!keep) { conn_free(c); break; }
            int rc = frame(c);
            if (rc > 0) continue;                  /* pipelined: answer in order */
            if (rc < 0) { conn_free(c); break; }
            buf_compact(&c->in);
            if (!buf_unread(&c->in) && c->in.cap > 65536) buf_free(&c->in);
            rearm(c);
            break;
        }
        finish_request();
    }
    return NULL;
}

static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        set_err(err, errlen, "socket path %s is longer than %zu bytes", path, sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            set_err(err, errlen, "%s exists and is not a socket", path);
            return -1;
        }
        unlink(path);                       /* a stale socket from a previous run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { set_err(err, errlen, "cannot create a Unix socket: %s", strerror(errno)); return -1; }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1024) < 0) {
        set_err(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Stop accepting, let running requests finish (up to 30 s), exit 0. Runs
 * in the leader, so no new request starts meanwhile. */
static void drain_and_exit(int signo)
{
    log_info("pyrt", "app=%s msg=\"stopping\" signal=%d", log_q(srv.o->app_id), signo);
    close(srv.lfd);
    unlink(srv.o->socket_path);
    int64_t end = now_ms() + 30000;
    pthread_mutex_lock(&srv.mu);
    while (srv.pending > 0 && now_ms() < end) {
        pthread_mutex_unlock(&srv.mu);
        usleep(20000);
        pthread_mutex_lock(&srv.mu);
    }
    int left = srv.pending;
    pthread_mutex_unlock(&srv.mu);
    if (left) log_warn("pyrt", "app=%s msg=\"exiting with requests still running\" requests=%d", log_q(srv.o->app_id), left);
    _exit(0);
}

int server_run(const pyrt_opts *o, char *err, size_t errlen)
{
    srv.o = o;
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.cv, NULL);

    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    pthread_sigmask(SIG_BLOCK, &ss, NULL);  /* main() blocked them before any thread started */
    srv.sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    if (srv.sfd < 0) { set_err(err, errlen, "cannot create a signalfd: %s", strerror(errno)); return -1; }

    srv.ep = epoll_create1(EPOLL_CLOEXEC);
    if (srv.ep < 0) { set_err(err, errlen, "cannot create an epoll instance: %s", strerror(errno)); return -1; }
    srv.lfd = listen_unix(o->socket_path, err, errlen);
    if (srv.lfd < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
    struct epoll_event evs = {.events = EPOLLIN, .data.ptr = &tag_signal};
    if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.lfd, &ev) < 0 || epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.sfd, &evs) < 0) {
        set_err(err, errlen, "cannot watch the listening socket: %s", strerror(errno));
        return -1;
    }
    int nworkers = o->threadsafe ? o->threads : 1;
    log_info("pyrt", "app=%s msg=\"listening\" socket=%s workers=%d threadsafe=%d",
             log_q(o->app_id), log_q(o->socket_path), nworkers, o->threadsafe);
    for (int i = 1; i < nworkers; i++) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &at, worker_main, (void *)(intptr_t)i);
        pthread_attr_destroy(&at);
        if (rc) { set_err(err, errlen, "cannot start worker thread %d: %s", i, strerror(rc)); return -1; }
    }
    worker_main((void *)(intptr_t)0);          /* the main thread is worker 0 */
    return 0;
}
