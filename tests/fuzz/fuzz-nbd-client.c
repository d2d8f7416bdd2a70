/*
 * libFuzzer target for the NBD client (drivers/protocol/nbd): the input is
 * everything a server sends on one connection (greeting, option replies,
 * then transmission replies). A thread of the harness plays the server on
 * a Unix socket: it accepts the client, sends the input, shuts its sending
 * side down and drops what the client sends. The client opens the export
 * (handshake parsing), then reads 4 KiB at 0, asks the block status of the
 * first MiB, writes 4 KiB, flushes and reads 8 KiB at 4 KiB (reply
 * parsing; cookies are predictable: slot | generation << 16). Every step may
 * fail; none may crash, leak or hang.
 *
 * Seeds: tests/fuzz/corpus/nbd-client (make-corpus.sh).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <coblk/block-driver.h>

#include "block/block-int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char sock_dir[64], sock_path[128];
static int listen_fd = -1;

typedef struct Peer {
    const uint8_t *data;
    size_t size;
} Peer;

static void *server_thread(void *opaque)
{
    Peer *p = opaque;
    struct pollfd pfd = { .fd = listen_fd, .events = POLLIN };
    char sink[65536];
    size_t sent = 0;
    int fd;

    /* A client that never connects (its open failed first) ends the wait. */
    if (poll(&pfd, 1, 2000) != 1 || (fd = accept(listen_fd, NULL, NULL)) < 0) {
        return NULL;
    }
    while (sent < p->size) {
        ssize_t n = send(fd, p->data + sent, p->size - sent, MSG_NOSIGNAL);

        if (n <= 0) {
            break;
        }
        sent += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, sink, sizeof(sink)) > 0) {
    }
    close(fd);
    return NULL;
}

static void cleanup(void)
{
    unlink(sock_path);
    rmdir(sock_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };

    snprintf(sock_dir, sizeof(sock_dir), "/tmp/coblk-fuzz-nbd.XXXXXX");
    if (!mkdtemp(sock_dir)) {
        perror("fuzz-nbd-client: mkdtemp");
        exit(1);
    }
    snprintf(sock_path, sizeof(sock_path), "%s/s", sock_dir);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(listen_fd, 1) < 0) {
        perror("fuzz-nbd-client: socket");
        exit(1);
    }
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

typedef struct StatusArg {
    BlockDriverState *bs;
} StatusArg;

static int64_t coroutine_fn status_co(void *opaque)
{
    StatusArg *a = opaque;
    int64_t pnum = 0, map = 0;
    BlockDriverState *file = NULL;

    return bdrv_co_block_status(a->bs, 0, 1 << 20, &pnum, &map, &file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[8192];
    Peer peer = { data, size };
    pthread_t th;
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    if (pthread_create(&th, NULL, server_thread, &peer) != 0) {
        abort();
    }
    bopts_set(o, "driver", "nbd");
    bopts_set(o, "server.type", "unix");
    bopts_set(o, "server.path", sock_path);
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (blk) {
        StatusArg a = { blk_bs(blk) };
        int64_t len = blk_getlength(blk);

        if (len >= 12288) {
            blk_pread(blk, 0, 4096, buf, 0);
            bdrv_run_co(blk_get_aio_context(blk), status_co, &a);
            memset(buf, 0x5a, 4096);
            blk_pwrite(blk, 0, 4096, buf, 0);
            blk_flush(blk);
            blk_pread(blk, 4096, 8192, buf, 0);
        }
        blk_unref(blk);
    } else if (!err) {
        abort(); /* a failure must say why */
    }
    if (getenv("COBLK_FUZZ_VERBOSE")) {
        fprintf(stderr, "fuzz-nbd-client: open: %s\n", blk ? "ok" : error_get_pretty(err));
    }
    error_free(err);
    /* The client is gone: the thread's send fails or its read ends. */
    pthread_join(th, NULL);
    return 0;
}
