/*
 * Unit tests: the NBD server (nbd/) in-process. Misbehaving clients run in
 * a thread with blocking sockets while the test polls the server's
 * AioContext; after each one a well-behaved client must still be served
 * and the data must be intact. The coblk nbd client driver talks to the
 * same server in-process (its handshake polls the shared context) with
 * many requests in flight.
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

static char img[4096];
static char sock_path[108];
static BlockBackend *blk;
static NbdServer *srv;
static AioContext *ctx;

/* Serves blk as "exp" on sock_path. */
static void start_server(void)
{
    NbdServerOpts so = { .max_connections = 4, .handshake_timeout_ns = 300 * 1000 * 1000 };
    NbdExportOpts eo = { .name = "exp", .description = "test export", .multi_conn = -1,
                         .allocation_depth = true };
    Error *err = NULL;

    srv = nbd_server_new(ctx, &so, &err);
    assert_non_null(srv);
    assert_int_equal(nbd_server_add_export(srv, blk, &eo, &err), 0);
    assert_int_equal(nbd_server_listen_unix(srv, sock_path, &err), 0);
}

static int setup(void **state)
{
    char opts[8192];

    drv_test_path(img, sizeof(img), "nbdsrv");
    snprintf(sock_path, sizeof(sock_path), "/tmp/coblk-nbdtest-%d.sock", (int)getpid());
    drv_test_make_file(img, IMG_SIZE, 0x31);
    snprintf(opts, sizeof(opts), "driver=raw,discard=unmap,file.driver=file,file.filename=%s", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    ctx = blk_get_aio_context(blk);
    start_server();
    return 0;
}

static int teardown(void **state)
{
    nbd_server_free(srv);
    blk_unref(blk);
    unlink(img);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* A raw client in a thread: blocking socket, 5 s receive timeout.          */

typedef const char *ClientFn(void);

typedef struct ClientRun {
    ClientFn *fn;
    const char *result;
    atomic_bool done;
} ClientRun;

static void *client_thread(void *opaque)
{
    ClientRun *r = opaque;

    r->result = r->fn();
    atomic_store(&r->done, true);
    aio_notify(ctx);
    return NULL;
}

/* Runs fn in a thread while this thread serves; fails the test with fn's message. */
static void run_client(ClientFn *fn)
{
    ClientRun r = { .fn = fn };
    pthread_t th;

    assert_int_equal(pthread_create(&th, NULL, client_thread, &r), 0);
    while (!atomic_load(&r.done)) {
        aio_poll(ctx, true);
    }
    pthread_join(th, NULL);
    /* let the server finish closing the connection */
    for (int i = 0; i < 100 && nbd_server_client_count(srv); i++) {
        aio_poll(ctx, false);
        usleep(1000);
    }
    if (r.result) {
        fail_msg("%s", r.result);
    }
}

static int cl_connect(void)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 5 };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sun.sun_path, sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static bool cl_read(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);

        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

static bool cl_write(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* The server closed the connection: EOF or reset (not a timeout). */
static bool cl_closed(int fd)
{
    uint8_t b[256];
    ssize_t n;

    do {
        n = recv(fd, b, sizeof(b), 0);
    } while (n > 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static bool cl_greet(int fd)
{
    uint8_t g[18], f[4];

    if (!cl_read(fd, g, sizeof(g)) || ld_be64(g) != NBD_INIT_MAGIC ||
        ld_be64(g + 8) != NBD_OPTS_MAGIC) {
        return false;
    }
    st_be32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    return cl_write(fd, f, 4);
}

static bool cl_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];

    st_be64(h, NBD_OPTS_MAGIC);
    st_be32(h + 8, opt);
    st_be32(h + 12, len);
    return cl_write(fd, h, 16) && (!len || cl_write(fd, data, len));
}

/* Reads one option reply; returns its type (0 on failure), payload dropped. */
static uint32_t cl_reply(int fd)
{
    uint8_t h[20], b[4096];
    uint32_t len;

    if (!cl_read(fd, h, 20) || ld_be64(h) != NBD_REP_MAGIC) {
        return 0;
    }
    len = ld_be32(h + 16);
    if (len > sizeof(b) || !cl_read(fd, b, len)) {
        return 0;
    }
    return ld_be32(h + 12);
}

static bool cl_go_named(int fd, const char *name)
{
    uint8_t d[64];
    uint32_t n = (uint32_t)strlen(name), t;

    st_be32(d, n);
    memcpy(d + 4, name, n);
    st_be16(d + 4 + n, 0);
    if (!cl_opt(fd, NBD_OPT_GO, d, 6 + n)) {
        return false;
    }
    while ((t = cl_reply(fd)) == NBD_REP_INFO) {
    }
    return t == NBD_REP_ACK;
}

/* Connects and negotiates export "exp" with simple replies. */
static int cl_open(void)
{
    int fd = cl_connect();

    if (fd < 0 || !cl_greet(fd) || !cl_go_named(fd, "exp")) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static bool cl_req(int fd, uint16_t type, uint16_t flags, uint64_t cookie, uint64_t off,
                   uint32_t len)
{
    uint8_t b[NBD_REQUEST_SIZE];
    NbdRequest q = { NBD_REQUEST_MAGIC, flags, type, cookie, off, len };

    nbd_encode_request(b, &q);
    return cl_write(fd, b, sizeof(b));
}

/* Reads a simple reply for cookie; returns its error, or -1 if none came. */
static int64_t cl_simple(int fd, uint64_t cookie)
{
    uint8_t r[NBD_SIMPLE_REPLY_SIZE];

    if (!cl_read(fd, r, sizeof(r)) || ld_be32(r) != NBD_SIMPLE_REPLY_MAGIC ||
        ld_be64(r + 8) != cookie) {
        return -1;
    }
    return ld_be32(r + 4);
}

/* A read of 4 KiB at off matches the image file. */
static bool cl_read_ok(int fd, uint64_t off)
{
    uint8_t got[4096], want[4096];
    int ifd = open(img, O_RDONLY);
    bool ok = ifd >= 0 && pread(ifd, want, sizeof(want), (off_t)off) == sizeof(want);

    if (ifd >= 0) {
        close(ifd);
    }
    return ok && cl_req(fd, NBD_CMD_READ, 0, 99, off, 4096) && cl_simple(fd, 99) == 0 &&
           cl_read(fd, got, 4096) && !memcmp(got, want, 4096);
}

/* A fresh, well-behaved client is served. */
static const char *good_client(void)
{
    int fd = cl_open();
    bool ok = fd >= 0 && cl_read_ok(fd, 8192) && cl_req(fd, NBD_CMD_DISC, 0, 1, 0, 0);

    if (fd >= 0) {
        close(fd);
    }
    return ok ? NULL : "a well-behaved client was not served";
}

/* ---------------------------------------------------------------------- */
/* Misbehaving clients                                                      */

static const char *oversized_option(void)
{
    int fd = cl_connect();
    uint8_t h[16];
    bool ok = fd >= 0 && cl_greet(fd);

    st_be64(h, NBD_OPTS_MAGIC);
    st_be32(h + 8, NBD_OPT_GO);
    st_be32(h + 12, 0xfffffff0u); /* CVE-2017-15119: 4 GB option */
    ok = ok && cl_write(fd, h, 16) && cl_closed(fd);
    close(fd);
    return ok ? NULL : "a 4 GB option did not disconnect";
}

static const char *too_many_options(void)
{
    int fd = cl_connect();
    bool ok = fd >= 0 && cl_greet(fd);

    for (unsigned i = 0; ok && i < NBD_MAX_OPTIONS; i++) {
        ok = cl_opt(fd, NBD_OPT_LIST, NULL, 0) && cl_reply(fd) == NBD_REP_SERVER &&
             cl_reply(fd) == NBD_REP_ACK;
    }
    ok = ok && cl_opt(fd, NBD_OPT_LIST, NULL, 0) && cl_closed(fd);
    close(fd);
    return ok ? NULL : "the 33rd option did not disconnect";
}

static const char *bad_option_magic(void)
{
    int fd = cl_connect();
    uint8_t h[16] = "IHAVEOPX";
    bool ok = fd >= 0 && cl_greet(fd) && cl_write(fd, h, 16) && cl_closed(fd);

    close(fd);
    return ok ? NULL : "a bad option magic did not disconnect";
}

static const char *bad_client_flags(void)
{
    int fd = cl_connect();
    uint8_t g[18], f[4];
    bool ok = fd >= 0 && cl_read(fd, g, 18);

    st_be32(f, 0x80000001u);
    ok = ok && cl_write(fd, f, 4) && cl_closed(fd);
    close(fd);
    return ok ? NULL : "unknown client flags did not disconnect";
}

static const char *bad_go_options(void)
{
    int fd = cl_connect();
    uint8_t *d = calloc(1, 8192);
    bool ok = fd >= 0 && cl_greet(fd);

    /* a 4097-byte name, a count that does not match, an unknown export */
    st_be32(d, 4097);
    memset(d + 4, 'a', 4097);
    ok = ok && cl_opt(fd, NBD_OPT_GO, d, 4 + 4097 + 2) && cl_reply(fd) == NBD_REP_ERR_INVALID;
    st_be32(d, 3);
    memcpy(d + 4, "exp", 3);
    st_be16(d + 7, 5);
    ok = ok && cl_opt(fd, NBD_OPT_GO, d, 9) && cl_reply(fd) == NBD_REP_ERR_INVALID;
    memcpy(d + 4, "xyz", 3);
    st_be16(d + 7, 0);
    ok = ok && cl_opt(fd, NBD_OPT_GO, d, 9) && cl_reply(fd) == NBD_REP_ERR_UNKNOWN;
    /* SET_META_CONTEXT before structured replies, then an unknown option */
    ok = ok && cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, 4) && cl_reply(fd) == NBD_REP_ERR_INVALID;
    ok = ok && cl_opt(fd, 99, NULL, 0) && cl_reply(fd) == NBD_REP_ERR_UNSUP;
    /* the connection still works */
    ok = ok && cl_go_named(fd, "exp") && cl_read_ok(fd, 0);
    /* EXPORT_NAME of an unknown export has no error reply: disconnect */
    close(fd);
    fd = cl_connect();
    ok = ok && fd >= 0 && cl_greet(fd) && cl_opt(fd, NBD_OPT_EXPORT_NAME, "nope", 4) &&
         cl_closed(fd);
    close(fd);
    free(d);
    return ok ? NULL : "bad GO/INFO options were not refused as the spec says";
}

static const char *bad_requests(void)
{
    int fd = cl_open();
    bool ok = fd >= 0;

    /* past the end, unknown command, unknown flag, zero length, > 32 MiB read */
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 1, IMG_SIZE - 512, 1024) && cl_simple(fd, 1) == 22;
    ok = ok && cl_req(fd, 42, 0, 2, 0, 512) && cl_simple(fd, 2) == 22;
    ok = ok && cl_req(fd, NBD_CMD_READ, 0x100, 3, 0, 512) && cl_simple(fd, 3) == 22;
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 4, 0, 0) && cl_simple(fd, 4) == 22;
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 5, 0, 32 * MiB + 1) && cl_simple(fd, 5) == 75;
    ok = ok && cl_req(fd, NBD_CMD_BLOCK_STATUS, 0, 6, 0, 512) && cl_simple(fd, 6) == 22;
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 7, UINT64_MAX - 100, 512) && cl_simple(fd, 7) == 22;
    /* a refused write's payload is skipped: the stream stays in sync */
    if (ok) {
        uint8_t pay[1024];

        memset(pay, 0xee, sizeof(pay));
        ok = cl_req(fd, NBD_CMD_WRITE, 0, 8, IMG_SIZE - 512, 1024) && cl_write(fd, pay, 1024) &&
             cl_simple(fd, 8) == 28;
    }
    ok = ok && cl_read_ok(fd, IMG_SIZE - 4096);
    /* a write above 32 MiB disconnects */
    ok = ok && cl_req(fd, NBD_CMD_WRITE, 0, 9, 0, 32 * MiB + 1) && cl_closed(fd);
    close(fd);
    return ok ? NULL : "bad requests were not refused as expected";
}

/* Ten 16 MiB reads at once: the server holds at most 128 MiB for a client, yet all finish. */
static const char *many_big_reads(void)
{
    int fd = cl_open();
    uint8_t *buf = malloc(IMG_SIZE);
    bool ok = fd >= 0 && buf;

    for (uint64_t i = 0; ok && i < 10; i++) {
        ok = cl_req(fd, NBD_CMD_READ, 0, i, 0, IMG_SIZE);
    }
    for (uint64_t i = 0; ok && i < 10; i++) {
        uint8_t r[NBD_SIMPLE_REPLY_SIZE];

        /* replies may come in any order */
        ok = cl_read(fd, r, sizeof(r)) && ld_be32(r) == NBD_SIMPLE_REPLY_MAGIC &&
             ld_be32(r + 4) == 0 && ld_be64(r + 8) < 10 && cl_read(fd, buf, IMG_SIZE) &&
             buf[4096] == (uint8_t)(0x31 + 4096 * 7 + 1);
    }
    close(fd);
    free(buf);
    return ok ? NULL : "ten 16 MiB reads in flight did not all complete";
}

static const char *bad_request_magic(void)
{
    int fd = cl_open();
    uint8_t b[NBD_REQUEST_SIZE] = { 0x25, 0x60, 0x95, 0x14 };
    bool ok = fd >= 0 && cl_write(fd, b, sizeof(b)) && cl_closed(fd);

    close(fd);
    return ok ? NULL : "a bad request magic did not disconnect";
}

static const char *abrupt_disconnect(void)
{
    int fd = cl_open();
    uint8_t pay[1000] = { 0 };
    bool ok = fd >= 0 && cl_req(fd, NBD_CMD_WRITE, 0, 1, 0, MiB) && cl_write(fd, pay, 1000);

    /* half a write, then gone; also reads in flight whose replies cannot be sent */
    close(fd);
    fd = cl_open();
    for (int i = 0; ok && i < 16; i++) {
        ok = cl_req(fd, NBD_CMD_READ, 0, (uint64_t)i, (uint64_t)i * MiB / 2, MiB / 2);
    }
    close(fd);
    return ok ? NULL : "could not send the abrupt requests";
}

static const char *handshake_timeout(void)
{
    int fd = cl_connect();
    uint8_t g[18];
    bool ok = fd >= 0 && cl_read(fd, g, 18) && cl_closed(fd);

    close(fd);
    return ok ? NULL : "a silent client was not dropped by the handshake timeout";
}

static const char *connection_cap(void)
{
    int fds[5];
    uint8_t g[18];
    bool ok = true;

    for (int i = 0; i < 4; i++) {
        fds[i] = cl_connect();
        ok = ok && fds[i] >= 0 && cl_read(fds[i], g, 18);
    }
    fds[4] = cl_connect();
    ok = ok && fds[4] >= 0 && cl_closed(fds[4]);
    for (int i = 0; i < 5; i++) {
        close(fds[i]);
    }
    return ok ? NULL : "a connection above the cap was not closed";
}

static void test_nbd_server_malformed_clients(void **state)
{
    ClientFn *bad[] = { oversized_option, too_many_options, bad_option_magic,
                        bad_client_flags, bad_go_options, bad_requests, many_big_reads,
                        bad_request_magic,
                        abrupt_disconnect, handshake_timeout, connection_cap };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_client(bad[i]);
        run_client(good_client);
    }
    /* the data is intact: nothing was written */
    {
        uint8_t *want = malloc(IMG_SIZE), *got = malloc(IMG_SIZE);
        int ifd = open(img, O_RDONLY);

        assert_int_equal(pread(ifd, got, IMG_SIZE, 0), IMG_SIZE);
        close(ifd);
        for (int64_t i = 0; i < IMG_SIZE; i++) {
            want[i] = (uint8_t)(0x31 + i * 7 + i / 4096);
        }
        assert_memory_equal(got, want, IMG_SIZE);
        free(want);
        free(got);
    }
}

/* Reads one structured chunk header; returns its type, or -1. */
static int cl_chunk(int fd, uint16_t *flags, uint32_t *len)
{
    uint8_t h[NBD_CHUNK_HEADER_SIZE];

    if (!cl_read(fd, h, sizeof(h)) || ld_be32(h) != NBD_STRUCTURED_REPLY_MAGIC) {
        return -1;
    }
    *flags = ld_be16(h + 4);
    *len = ld_be32(h + 16);
    return ld_be16(h + 6);
}

/* A structured read over data, a zeroed 64 KiB block and data: data, hole, data chunks. */
static const char *structured_read(void)
{
    int fd = cl_connect();
    uint8_t *buf = malloc(65536 + 8);
    uint16_t flags;
    uint32_t len;
    bool ok = fd >= 0 && cl_greet(fd) && cl_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0) &&
              cl_reply(fd) == NBD_REP_ACK && cl_go_named(fd, "exp");

    ok = ok && cl_req(fd, NBD_CMD_WRITE_ZEROES, 0, 1, 65536, 65536) && cl_simple(fd, 1) == 0;
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 2, 0, 3 * 65536);
    ok = ok && cl_chunk(fd, &flags, &len) == NBD_REPLY_TYPE_OFFSET_DATA && !flags &&
         len == 8 + 65536 && cl_read(fd, buf, len) && ld_be64(buf) == 0;
    ok = ok && cl_chunk(fd, &flags, &len) == NBD_REPLY_TYPE_OFFSET_HOLE && !flags &&
         len == 12 && cl_read(fd, buf, len) && ld_be64(buf) == 65536 &&
         ld_be32(buf + 8) == 65536;
    ok = ok && cl_chunk(fd, &flags, &len) == NBD_REPLY_TYPE_OFFSET_DATA &&
         flags == NBD_REPLY_FLAG_DONE && len == 8 + 65536 && cl_read(fd, buf, len) &&
         ld_be64(buf) == 2 * 65536;
    /* with DF: one data chunk holding the zeroes */
    ok = ok && cl_req(fd, NBD_CMD_READ, NBD_CMD_FLAG_DF, 3, 65536, 65536) &&
         cl_chunk(fd, &flags, &len) == NBD_REPLY_TYPE_OFFSET_DATA &&
         flags == NBD_REPLY_FLAG_DONE && len == 8 + 65536 && cl_read(fd, buf, len) &&
         buf[8] == 0 && !memcmp(buf + 8, buf + 9, 65535);
    /* an error on a structured read is an error chunk */
    ok = ok && cl_req(fd, NBD_CMD_READ, 0, 4, IMG_SIZE, 512) &&
         cl_chunk(fd, &flags, &len) == NBD_REPLY_TYPE_ERROR && flags == NBD_REPLY_FLAG_DONE &&
         len >= 6 && len < 1000 && cl_read(fd, buf, len) && ld_be32(buf) == NBD_EINVAL;
    close(fd);
    free(buf);
    return ok ? NULL : "structured read chunks are not data/hole/data";
}

static void test_nbd_server_structured_read(void **state)
{
    run_client(structured_read);
}

/* Server shutdown with a client in handshake and one with requests in flight. */
static atomic_bool clients_ready;

static const char *clients_at_shutdown(void)
{
    int idle = cl_connect(), busy = cl_open();
    uint8_t g[18];
    bool ok = idle >= 0 && busy >= 0 && cl_read(idle, g, 18);

    for (int i = 0; ok && i < 8; i++) {
        ok = cl_req(busy, NBD_CMD_READ, 0, (uint64_t)i, (uint64_t)i * MiB, MiB);
    }
    atomic_store(&clients_ready, true);
    aio_notify(ctx);
    /* Both are disconnected by the shutdown; replies may arrive first. */
    ok = ok && cl_closed(idle) && cl_closed(busy);
    close(idle);
    close(busy);
    return ok ? NULL : "clients were not disconnected at server shutdown";
}

static void test_nbd_server_shutdown_with_clients(void **state)
{
    ClientRun r = { .fn = clients_at_shutdown };
    pthread_t th;

    assert_int_equal(pthread_create(&th, NULL, client_thread, &r), 0);
    while (!atomic_load(&clients_ready) || nbd_server_client_count(srv) < 2) {
        aio_poll(ctx, true);
    }
    nbd_server_free(srv); /* CVE-2024-7409 class: orderly close of every client */
    srv = NULL;
    while (!atomic_load(&r.done)) {
        aio_poll(ctx, true);
    }
    pthread_join(th, NULL);
    if (r.result) {
        fail_msg("%s", r.result);
    }
}

/* ---------------------------------------------------------------------- */
/* The coblk client against the coblk server                              */

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

static BlockBackend *open_client_opts(const char *connections, const char *reconnect)
{
    char url[256];
    Error *err = NULL;
    BlockOpts *o = bopts_new();
    BlockBackend *c;

    snprintf(url, sizeof(url), "nbd+unix:///exp?socket=%s", sock_path);
    bopts_set(o, "driver", "raw");
    bopts_set(o, "discard", "unmap");
    bopts_set(o, "file.connections", connections);
    bopts_set(o, "file.reconnect-delay", reconnect);
    c = blk_new_open(url, o, BDRV_O_RDWR, &err);
    if (!c) {
        fail_msg("open %s: %s", url, error_get_pretty(err));
    }
    return c;
}

static BlockBackend *open_client(const char *connections)
{
    return open_client_opts(connections, "0");
}

/*
 * The server restarts under two clients: the one with reconnect-delay
 * reconnects and its next requests succeed; the other's requests fail.
 */
static void test_nbd_server_client_reconnect(void **state)
{
    BlockBackend *re = open_client_opts("2", "1"), *plain = open_client("1");
    uint8_t buf[4096], got[4096];
    int64_t t0;

    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(blk_pwrite(re, 0, 4096, buf, 0), 0);
    assert_int_equal(blk_pread(plain, 0, 4096, got, 0), 0);
    nbd_server_free(srv);
    start_server();
    memset(buf, 0xcd, sizeof(buf));
    assert_int_equal(blk_pwrite(re, 8192, 4096, buf, BDRV_REQ_FUA), 0);
    assert_int_equal(blk_pread(re, 8192, 4096, got, 0), 0);
    assert_memory_equal(got, buf, 4096);
    assert_true(blk_pread(plain, 0, 4096, got, 0) < 0);
    blk_unref(plain);
    /* the server stays away: requests fail once the 1 s delay has passed */
    nbd_server_free(srv);
    srv = NULL;
    t0 = aio_clock_ns();
    assert_true(blk_pread(re, 0, 4096, got, 0) < 0);
    assert_true(aio_clock_ns() - t0 >= 900LL * 1000 * 1000);
    assert_true(aio_clock_ns() - t0 < 5LL * 1000 * 1000 * 1000);
    blk_unref(re);
    start_server(); /* for teardown */
}

static void test_nbd_server_coblk_client(void **state)
{
    enum { N = 48, LEN = 64 * 1024 };
    BlockBackend *c = open_client("3");
    uint8_t *bufs = malloc((size_t)N * LEN), *got = malloc(LEN);
    IOVector qiov[N];
    AioDone d = { 0, N };
    int ifd;

    assert_int_equal(blk_getlength(c), IMG_SIZE);
    /* three sockets (the export allows multi-conn); many writes in flight on them */
    assert_int_equal(nbd_server_client_count(srv), 3);
    for (int i = 0; i < N; i++) {
        drv_test_pattern(bufs + (size_t)i * LEN, LEN, (uint8_t)(i + 1));
        iovector_init_buf(&qiov[i], bufs + (size_t)i * LEN, LEN);
        blk_aio_pwritev(c, (int64_t)i * LEN * 3, &qiov[i], i % 2 ? BDRV_REQ_FUA : 0, aio_cb,
                        &d);
    }
    while (d.pending) {
        aio_poll(ctx, true);
    }
    assert_int_equal(d.ret, 0);
    assert_int_equal(blk_flush(c), 0);
    /* acknowledged and flushed writes are in the file */
    ifd = open(img, O_RDONLY);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pread(ifd, got, LEN, (off_t)i * LEN * 3), LEN);
        assert_memory_equal(got, bufs + (size_t)i * LEN, LEN);
        assert_int_equal(blk_pread(c, (int64_t)i * LEN * 3, LEN, got, 0), 0);
        assert_memory_equal(got, bufs + (size_t)i * LEN, LEN);
    }
    /* write zeroes (with and without NO_HOLE), trim, an unaligned read */
    assert_int_equal(blk_pwrite_zeroes(c, 0, LEN, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(blk_pwrite_zeroes(c, LEN * 3, LEN, 0), 0);
    assert_int_equal(blk_pread(c, 0, LEN, got, 0), 0);
    assert_true(iovector_is_zero(&(IOVector){ .iov = &(struct iovec){ got, LEN }, .niov = 1,
                                              .nalloc = -1, .size = LEN }, 0, LEN));
    assert_int_equal(pread(ifd, got, LEN, LEN * 3), LEN);
    for (int i = 0; i < LEN; i++) {
        assert_int_equal(got[i], 0);
    }
    assert_int_equal(blk_pdiscard(c, 8 * MiB, MiB), 0);
    assert_int_equal(blk_pread(c, LEN * 6 + 3, 1000, got, 0), 0);
    assert_memory_equal(got, bufs + 2 * LEN + 3, 1000);
    /* beyond the end: refused by the block layer or the server */
    assert_true(blk_pread(c, IMG_SIZE - 512, 1024, got, 0) < 0);
    close(ifd);
    blk_unref(c);
    free(bufs);
    free(got);
    run_client(good_client);
}

/* Block status through the coblk client: a written range is data, a hole is zero. */
typedef struct StatusCo {
    BlockDriverState *bs;
    int ret[2];
    int64_t pnum[2];
    bool done;
} StatusCo;

static void coroutine_fn status_co(void *opaque)
{
    StatusCo *s = opaque;
    int64_t map;
    BlockDriverState *file;

    s->ret[0] = bdrv_co_block_status(s->bs, 0, MiB, &s->pnum[0], &map, &file);
    s->ret[1] = bdrv_co_block_status(s->bs, 12 * MiB, MiB, &s->pnum[1], &map, &file);
    s->done = true;
}

static void test_nbd_server_block_status(void **state)
{
    BlockBackend *c = open_client("1");
    uint8_t *buf = calloc(1, MiB);
    StatusCo s = { 0 };

    /* punch a hole at 12 MiB (zeroes with unmap), keep data at 0 */
    memset(buf, 0x77, MiB);
    assert_int_equal(blk_pwrite(c, 0, MiB, buf, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(c, 12 * MiB, MiB, BDRV_REQ_MAY_UNMAP), 0);
    s.bs = bdrv_file_bs(blk_bs(c));
    aio_co_enter(ctx, coroutine_create(status_co, &s));
    while (!s.done) {
        aio_poll(ctx, true);
    }
    assert_true(s.ret[0] >= 0 && (s.ret[0] & BDRV_BLOCK_DATA));
    assert_false(s.ret[0] & BDRV_BLOCK_ZERO);
    assert_int_equal(s.pnum[0], MiB);
    assert_true(s.ret[1] >= 0 && (s.ret[1] & BDRV_BLOCK_ZERO));
    assert_true(s.pnum[1] > 0 && s.pnum[1] <= MiB);
    blk_unref(c);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nbd_server_malformed_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_server_coblk_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_server_block_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_server_shutdown_with_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_server_structured_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nbd_server_client_reconnect, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
