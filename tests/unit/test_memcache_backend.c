/* Unit tests for the memcache backends (src/api/memcache_backend.c,
 * src/api/memcache_memcached.c): memcached key encoding (distinct, printable,
 * hashed past 250 bytes, app prefix kept), server lists, and the memcached
 * backend against a real memcached started here when one is installed. */
#include "api/memcache_backend.h"
#include "core/util.h"
#include "test.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

static mc_key key(const char *app, const char *ns, const char *k, size_t klen)
{
    mc_key m = { app, strlen(app), ns, strlen(ns), (const uint8_t *)k, klen };
    return m;
}

TEST(keys_are_distinct_and_printable)
{
    char a[MCD_KEY_MAX + 1], b[MCD_KEY_MAX + 1];
    mc_key k1 = key("dev~app", "a:b", "c", 1), k2 = key("dev~app", "a", "b:c", 3);
    size_t l1 = mcd_key(&k1, a), l2 = mcd_key(&k2, b);
    CHECK(l1 != l2 || memcmp(a, b, l1));                     /* ns/key split cannot collide */
    mc_key k3 = key("dev~ap", "p", "x", 1), k4 = key("dev~app", "", "x", 1);
    mcd_key(&k3, a); mcd_key(&k4, b);
    CHECK(strcmp(a, b));                                     /* app/ns split cannot collide */
    mc_key k5 = key("dev~app", "", "sp ace\n\x01%", 9);
    size_t l5 = mcd_key(&k5, a);
    for (size_t i = 0; i < l5; i++) CHECK(a[i] > 0x20 && a[i] < 0x7f);
    CHECK_INT(mcd_key_orig_len(a, l5), 9);
    char p[MCD_KEY_MAX + 1];
    size_t pl = mcd_app_prefix("dev~app", 7, p);
    CHECK(!strncmp(a, p, pl));
    CHECK_INT(mcd_key_orig_len("junk", 4), -1);
}

TEST(long_keys_are_hashed_with_the_app_prefix)
{
    char k[250], a[MCD_KEY_MAX + 1], b[MCD_KEY_MAX + 1], p[MCD_KEY_MAX + 1];
    memset(k, '\x01', sizeof k);                             /* escapes to 750 bytes */
    mc_key k1 = key("dev~app", "ns", k, sizeof k);
    size_t l1 = mcd_key(&k1, a);
    CHECK(l1 <= MCD_KEY_MAX);
    CHECK_INT(strlen(a), l1);
    CHECK_INT(mcd_key_orig_len(a, l1), 250);
    size_t pl = mcd_app_prefix("dev~app", 7, p);
    CHECK(!strncmp(a, p, pl));
    k[249] = '\x02';
    mc_key k2 = key("dev~app", "ns", k, sizeof k);
    mcd_key(&k2, b);
    CHECK(strcmp(a, b));
    char app[200];
    memset(app, 'a', sizeof app - 1);
    app[sizeof app - 1] = 0;
    mc_key k3 = key(app, "", "x", 1);
    size_t l3 = mcd_key(&k3, a);
    CHECK(l3 <= MCD_KEY_MAX);
    CHECK_INT(mcd_key_orig_len(a, l3), 1);
}

TEST(server_lists)
{
    char err[256];
    CHECK_INT(mc_servers_check("127.0.0.1:11211,localhost:2,[::1]:3,host", err, sizeof err), 0);
    CHECK_INT(mc_servers_check("", err, sizeof err), -1);
    CHECK_INT(mc_servers_check("a:1,,b:2", err, sizeof err), -1);
    CHECK_INT(mc_servers_check("a:x", err, sizeof err), -1);
    CHECK(strstr(err, "\"a:x\"") != NULL);
    CHECK_INT(mc_servers_check("a:70000", err, sizeof err), -1);
    CHECK_INT(mc_servers_check("[::1", err, sizeof err), -1);
    CHECK(mc_backend_memcached("a:", err, sizeof err) == NULL);
}

typedef struct { char v[64]; int n; uint32_t flags; uint64_t cas; } seen;

static void grab(void *arg, const mc_view *v)
{
    seen *s = arg;
    snprintf(s->v, sizeof s->v, "%.*s", (int)v->value_len, (const char *)v->value);
    s->flags = v->flags;
    s->cas = v->cas;
    s->n++;
}

/* The same script on any backend. */
static void script(mc_backend *b)
{
    int64_t now = wall_us() / 1000;
    mc_key k = key("dev~u", "ns", "k", 1), other = key("dev~v", "ns", "k", 1);
    seen s = {0};
    CHECK_INT(b->ops->set(b, &k, "12", 2, 7, MC_SET, 0, 0, 0, now), MC_STORED);
    CHECK_INT(b->ops->set(b, &k, "x", 1, 7, MC_ADD, 0, 0, 0, now), MC_NOT_STORED);
    b->ops->get(b, &k, 1, 0, now, grab, &s);
    CHECK_INT(s.n, 1);
    CHECK_STR(s.v, "12");
    CHECK_INT(s.flags, 7);
    CHECK_INT(b->ops->set(b, &k, "13", 2, 7, MC_CAS, s.cas + 1000, 1, 0, now), MC_EXISTS);
    CHECK_INT(b->ops->set(b, &k, "13", 2, 7, MC_CAS, s.cas, 1, 0, now), MC_STORED);
    uint64_t nv = 0;
    CHECK_INT(b->ops->incr(b, &k, 0, 5, 0, 0, 0, now, &nv), MC_INCR_OK);
    CHECK_INT(nv, 18);
    CHECK_INT(b->ops->incr(b, &k, 0, 1ull << 40, 0, 0, 0, now, &nv), MC_INCR_OK);   /* 64-bit delta */
    CHECK(nv == (1ull << 40) + 18);
    CHECK_INT(b->ops->incr(b, &k, 1, UINT64_MAX, 0, 0, 0, now, &nv), MC_INCR_OK);
    CHECK_INT(nv, 0);                                                                 /* floors at 0 */
    s.n = 0;
    b->ops->get(b, &other, 1, 0, now, grab, &s);
    CHECK_INT(s.n, 0);                                                               /* apps apart */
    CHECK_INT(b->ops->del(b, &k, 30, now), 1);
    CHECK_INT(b->ops->del(b, &k, 0, now), 0);                                        /* held: gone */
    CHECK_INT(b->ops->set(b, &k, "a", 1, 0, MC_ADD, 0, 0, 0, now), MC_NOT_STORED);
    CHECK_INT(b->ops->incr(b, &k, 0, 1, 1, 9, 0, now, &nv), MC_INCR_OK);           /* initial over a hold */
    CHECK_INT(nv, 10);
    mc_stats st;
    b->ops->stats(b, "dev~u", 5, now, &st);
    CHECK_INT(st.items, 1);
    CHECK_INT(st.bytes, 1 + 2);
    CHECK_INT(b->ops->flush_app(b, "dev~u", 5), 0);
    b->ops->stats(b, "dev~u", 5, now, &st);
    CHECK_INT(st.items, 0);
}

TEST(embedded_backend)
{
    mc_backend *b = mc_backend_embedded(1 << 20, 1);
    CHECK(mc_backend_store(b) != NULL);
    script(b);
    mc_backend_free(b);
}

TEST(memcached_backend)
{
    if (access("/usr/bin/memcached", X_OK) != 0) { printf("  (no memcached: skipped)\n"); return; }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    int port = ntohs(sa.sin_port);
    close(fd);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/usr/bin/memcached", "memcached", "-l", "127.0.0.1", "-p", ps, "-U", "0", "-I", "2m",
              "-u", "root", (char *)NULL);
        _exit(127);
    }
    char spec[64], err[256];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    mc_backend *b = mc_backend_memcached(spec, err, sizeof err);
    CHECK(b != NULL);
    /* wait until it answers */
    mc_key k = key("dev~u", "", "ping", 4);
    for (int i = 0; i < 100 && b->ops->set(b, &k, "1", 1, 0, MC_SET, 0, 0, 0, wall_us() / 1000) != MC_STORED; i++)
        usleep(20000);
    b->ops->del(b, &k, 0, wall_us() / 1000);
    script(b);
    mc_backend_free(b);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    RUN(keys_are_distinct_and_printable);
    RUN(long_keys_are_hashed_with_the_app_prefix);
    RUN(server_lists);
    RUN(embedded_backend);
    RUN(memcached_backend);
    return test_report();
}
