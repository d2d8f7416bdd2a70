/*
 * Unit tests: NBD over TLS in-process (nbd/tls.c). A server with PSK
 * credentials in require mode and the coblk client driver share one
 * AioContext, so both TLS handshakes run as coroutines that yield on the
 * socket. Also: the handshake timeout bounds a TLS handshake that stalls, a
 * wrong key or a plaintext client is refused, and bad credential files and
 * inconsistent server options fail with errors naming the problem.
 * (Interop with GnuTLS's and OpenSSL's peers: tests/interop/nbd-tls.sh.)
 */
#include "drv-test-util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <coblk/nbd.h>

#include "block/bytes.h"
#include "nbd/nbd-proto.h"

#define MiB (1024 * 1024)
#define IMG_SIZE (16 * MiB)
#define KEY_ALICE "alice:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
#define KEY_WRONG "alice:00112233445566778899aabbccddeeff\n"

static char img[4096], psk[4096], wrong_psk[4096], bad_psk[4096];
static char sock_path[108];
static BlockBackend *blk;
static NbdServer *srv;
static NbdTlsCreds *creds;
static AioContext *ctx;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Serves blk as "exp" on sock_path, TLS required with the PSK credentials. */
static void start_server(const char *authz)
{
    NbdServerOpts so = { .max_connections = 8, .handshake_timeout_ns = 300 * 1000 * 1000,
                         .tls_mode = NBD_TLS_REQUIRE, .tls_creds = creds, .tls_authz = authz };
    NbdExportOpts eo = { .name = "exp", .multi_conn = -1 };
    Error *err = NULL;

    srv = nbd_server_new(ctx, &so, &err);
    assert_non_null(srv);
    assert_int_equal(nbd_server_add_export(srv, blk, &eo, &err), 0);
    assert_int_equal(nbd_server_listen_unix(srv, sock_path, &err), 0);
}

static int setup(void **state)
{
    char opts[8192];
    Error *err = NULL;

    drv_test_path(img, sizeof(img), "nbdtls");
    drv_test_path(psk, sizeof(psk), "nbdtls-keys.psk");
    drv_test_path(wrong_psk, sizeof(wrong_psk), "nbdtls-wrong.psk");
    drv_test_path(bad_psk, sizeof(bad_psk), "nbdtls-bad.psk");
    snprintf(sock_path, sizeof(sock_path), "/tmp/coblk-nbdtls-%d.sock", (int)getpid());
    write_file(psk, "bob:ffeeddccbbaa99887766554433221100\n" KEY_ALICE);
    write_file(wrong_psk, KEY_WRONG);
    drv_test_make_file(img, IMG_SIZE, 0x31);
    snprintf(opts, sizeof(opts), "driver=raw,file.driver=file,file.filename=%s", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    ctx = blk_get_aio_context(blk);
    creds = nbd_tls_creds_new_psk(psk, true, NULL, &err);
    assert_non_null(creds);
    start_server(NULL);
    return 0;
}

static int teardown(void **state)
{
    nbd_server_free(srv);
    nbd_tls_creds_free(creds);
    blk_unref(blk);
    unlink(img);
    unlink(psk);
    unlink(wrong_psk);
    unlink(bad_psk);
    return 0;
}

/* Opens exp through the coblk client (psk_file NULL: plaintext; reconnect: seconds). */
static BlockBackend *open_client(const char *psk_file, const char *user, const char *reconnect,
                                 char *errmsg, size_t errlen)
{
    char url[256];
    Error *err = NULL;
    BlockOpts *o = bopts_new();
    BlockBackend *c;

    snprintf(url, sizeof(url), "nbd+unix:///exp?socket=%s", sock_path);
    bopts_set(o, "driver", "raw");
    bopts_set(o, "file.connections", "2");
    if (psk_file) {
        bopts_set(o, "file.tls-psk-file", psk_file);
    }
    if (user) {
        bopts_set(o, "file.tls-username", user);
    }
    if (reconnect) {
        bopts_set(o, "file.reconnect-delay", reconnect);
    }
    c = blk_new_open(url, o, BDRV_O_RDWR, &err);
    if (!c) {
        snprintf(errmsg, errlen, "%s", error_get_pretty(err));
        error_free(err);
    }
    return c;
}

typedef struct AioDone {
    int ret;
    int pending;
} AioDone;

static void aio_cb(void *opaque, int ret)
{
    AioDone *d = opaque;

    if (ret < 0) {
        d->ret = ret;
    }
    d->pending--;
}

/* Many writes in flight over two TLS connections, a flush, a 4 MiB read (many records). */
static void test_nbd_tls_psk_client(void **state)
{
    enum { N = 32, LEN = 64 * 1024 };
    char msg[1024] = "";
    BlockBackend *c = open_client(psk, "alice", NULL, msg, sizeof(msg));
    uint8_t *bufs = malloc((size_t)N * LEN), *big = malloc(4 * MiB);
    IOVector qiov[N];
    AioDone d = { 0, N };
    int ifd;

    if (!c) {
        fail_msg("TLS client: %s", msg);
    }
    assert_int_equal(nbd_server_client_count(srv), 2);
    for (int i = 0; i < N; i++) {
        drv_test_pattern(bufs + (size_t)i * LEN, LEN, (uint8_t)(i + 7));
        iovector_init_buf(&qiov[i], bufs + (size_t)i * LEN, LEN);
        blk_aio_pwritev(c, (int64_t)i * LEN, &qiov[i], i % 3 ? 0 : BDRV_REQ_FUA, aio_cb, &d);
    }
    while (d.pending) {
        aio_poll(ctx, true);
    }
    assert_int_equal(d.ret, 0);
    assert_int_equal(blk_flush(c), 0);
    assert_int_equal(blk_pread(c, 0, 4 * MiB, big, 0), 0);
    assert_memory_equal(big, bufs, (size_t)N * LEN);
    /* the bytes reached the file */
    ifd = open(img, O_RDONLY);
    assert_int_equal(pread(ifd, big, (size_t)N * LEN, 0), (ssize_t)N * LEN);
    assert_memory_equal(big, bufs, (size_t)N * LEN);
    close(ifd);
    blk_unref(c);
    free(bufs);
    free(big);
}

/* The first user of the file is bob: with no username, bob's key is used. */
static void test_nbd_tls_default_user(void **state)
{
    char msg[1024] = "";
    BlockBackend *c = open_client(psk, NULL, NULL, msg, sizeof(msg));
    uint8_t b[512];

    if (!c) {
        fail_msg("TLS client (first user): %s", msg);
    }
    assert_int_equal(blk_pread(c, 0, sizeof(b), b, 0), 0);
    blk_unref(c);
}

static void test_nbd_tls_refused(void **state)
{
    char msg[1024] = "";

    assert_null(open_client(NULL, NULL, NULL, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "requires TLS"));
    assert_null(open_client(wrong_psk, NULL, NULL, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "tls: handshake failed"));
    assert_null(open_client(psk, "carol", NULL, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "no key for user 'carol'"));
    /* the server is still fine */
    test_nbd_tls_default_user(state);
}

/* ---------------------------------------------------------------------- */
/* A raw client in a thread that stalls inside the TLS handshake.           */

typedef struct Stall {
    bool partial;           /* send half a TLS record header, then stall */
    const char *result;
    atomic_bool done;
} Stall;

static bool cl_read(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);

        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

static const char *stall_client(bool partial)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 5 };
    uint8_t g[18], f[4], h[16], r[NBD_OPT_REPLY_SIZE], b[64];
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    int64_t t0;
    ssize_t n;

    strcpy(sun.sun_path, sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        return "cannot connect";
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    st_be32(f, NBD_FLAG_C_FIXED_NEWSTYLE);
    st_be64(h, NBD_OPTS_MAGIC);
    st_be32(h + 8, NBD_OPT_STARTTLS);
    st_be32(h + 12, 0);
    if (!cl_read(fd, g, sizeof(g)) || send(fd, f, 4, 0) != 4 || send(fd, h, 16, 0) != 16 ||
        !cl_read(fd, r, sizeof(r)) || ld_be32(r + 12) != NBD_REP_ACK) {
        close(fd);
        return "STARTTLS was not acknowledged";
    }
    if (partial && send(fd, "\x16\x03", 2, 0) != 2) {
        close(fd);
        return "cannot send a partial record";
    }
    t0 = aio_clock_ns();
    do {
        n = recv(fd, b, sizeof(b), 0);
    } while (n > 0);
    close(fd);
    if (n < 0 && errno != ECONNRESET) {
        return "a client stalled in the TLS handshake was not dropped";
    }
    return aio_clock_ns() - t0 < 3LL * 1000 * 1000 * 1000 ? NULL : "dropped too late";
}

static void *stall_thread(void *opaque)
{
    Stall *s = opaque;

    s->result = stall_client(s->partial);
    atomic_store(&s->done, true);
    aio_notify(ctx);
    return NULL;
}

static void test_nbd_tls_handshake_timeout(void **state)
{
    for (int partial = 0; partial < 2; partial++) {
        Stall s = { .partial = partial };
        pthread_t th;

        assert_int_equal(pthread_create(&th, NULL, stall_thread, &s), 0);
        while (!atomic_load(&s.done)) {
            aio_poll(ctx, true);
        }
        pthread_join(th, NULL);
        if (s.result) {
            fail_msg("%s (partial=%d)", s.result, partial);
        }
    }
    for (int i = 0; i < 100 && nbd_server_client_count(srv); i++) {
        aio_poll(ctx, false);
        usleep(1000);
    }
    assert_int_equal(nbd_server_client_count(srv), 0);
    test_nbd_tls_default_user(state);
}

/* ---------------------------------------------------------------------- */
/* Credential files and server options                                      */

static void expect_psk_error(const char *text, const char *want)
{
    Error *err = NULL;

    write_file(bad_psk, text);
    assert_null(nbd_tls_creds_new_psk(bad_psk, true, NULL, &err));
    if (!strstr(error_get_pretty(err), want)) {
        fail_msg("'%s': got '%s', want '%s'", text, error_get_pretty(err), want);
    }
    error_free(err);
}

static void test_nbd_tls_bad_creds(void **state)
{
    NbdServerOpts so = { .tls_mode = NBD_TLS_REQUIRE };
    NbdTlsCreds *client;
    char big[70000];
    Error *err = NULL;

    expect_psk_error("", "has no keys");
    expect_psk_error("alice\n", "line 1 is not 'username:hexkey'");
    expect_psk_error(KEY_ALICE "bob:12345\n", "line 2");             /* odd digit count */
    expect_psk_error(KEY_ALICE "bob:zz\n", "line 2");                /* not hex */
    expect_psk_error(":0011\n", "line 1");                           /* no username */
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_psk_error(big, "larger than 65536 bytes");
    assert_null(nbd_tls_creds_new_psk("/nonexistent/keys.psk", true, NULL, &err));
    assert_non_null(strstr(error_get_pretty(err), "/nonexistent/keys.psk"));
    error_free(err);
    err = NULL;
    assert_null(nbd_tls_creds_new_x509("/nonexistent", true, false, &err));
    assert_non_null(strstr(error_get_pretty(err), "/nonexistent/ca-cert.pem"));
    error_free(err);
    err = NULL;

    /* server options: TLS without credentials, client credentials, authz without identity */
    assert_null(nbd_server_new(ctx, &so, &err));
    assert_non_null(strstr(error_get_pretty(err), "without credentials"));
    error_free(err);
    err = NULL;
    client = nbd_tls_creds_new_psk(psk, false, NULL, &err);
    assert_non_null(client);
    so.tls_creds = client;
    assert_null(nbd_server_new(ctx, &so, &err));
    assert_non_null(strstr(error_get_pretty(err), "for a client"));
    error_free(err);
    err = NULL;
    nbd_tls_creds_free(client);
    so.tls_creds = creds;
    so.tls_mode = NBD_TLS_OFF;
    so.tls_authz = "alice";
    assert_null(nbd_server_new(ctx, &so, &err));
    assert_non_null(strstr(error_get_pretty(err), "tls-authz"));
    error_free(err);
}

/* tls_authz with PSK: only the named user gets in. */
static void test_nbd_tls_authz(void **state)
{
    char msg[1024] = "";
    BlockBackend *c;

    nbd_server_free(srv);
    start_server("alice");
    c = open_client(psk, "alice", NULL, msg, sizeof(msg));
    if (!c) {
        fail_msg("alice refused: %s", msg);
    }
    blk_unref(c);
    assert_null(open_client(psk, "bob", NULL, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "closed the connection after the TLS handshake"));
}

/* A lost TLS connection is re-established with a new TLS handshake. */
static void test_nbd_tls_reconnect(void **state)
{
    char msg[1024] = "";
    BlockBackend *c = open_client(psk, "alice", "1", msg, sizeof(msg));
    uint8_t buf[4096], got[4096];

    if (!c) {
        fail_msg("TLS client: %s", msg);
    }
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(blk_pwrite(c, 0, 4096, buf, 0), 0);
    nbd_server_free(srv);
    start_server(NULL);
    memset(buf, 0xcd, sizeof(buf));
    assert_int_equal(blk_pwrite(c, 8192, 4096, buf, BDRV_REQ_FUA), 0);
    assert_int_equal(blk_pread(c, 8192, 4096, got, 0), 0);
    assert_memory_equal(got, buf, 4096);
    blk_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nbd_tls_psk_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_tls_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_tls_handshake_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_tls_bad_creds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_tls_authz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_tls_reconnect, setup, teardown),
    };

    if (!nbd_tls_available()) {
        printf("built without GnuTLS: skipping\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
