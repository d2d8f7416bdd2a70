/*
 * libFuzzer target for the NBD server: the input is everything a client
 * sends on one connection (client flags, options, then transmission
 * requests with their data). It is written into one end of a socketpair
 * whose other end the server serves (nbd_server_add_client); the harness
 * reads and drops the server's output, shuts its side down after the last
 * byte and polls until the server has dropped the client. Two exports over
 * a 64 MiB null-co node (read-zeroes): "" read-write and "ro" read-only with
 * qemu:allocation-depth. Any crash, leak, sanitizer report or hang is a
 * finding; protocol errors must just end the connection.
 *
 * Seeds: tests/fuzz/corpus/nbd-server (make-corpus.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <coblk/block.h>
#include <coblk/nbd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static AioContext *ctx;
static NbdServer *srv;
static BlockBackend *blk;
static uint8_t sink[1 << 16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    NbdServerOpts so = { .handshake_timeout_ns = 2000000000LL, .max_requests = 16 };
    NbdExportOpts rw = { .name = "", .multi_conn = -1 };
    NbdExportOpts ro = { .name = "ro", .description = "read-only", .read_only = true,
                         .allocation_depth = true, .multi_conn = -1 };
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    bopts_set(o, "driver", "null-co");
    bopts_set(o, "size", "67108864");
    bopts_set(o, "read-zeroes", "on");
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fprintf(stderr, "fuzz-nbd-server: %s\n", error_get_pretty(err));
        exit(1);
    }
    ctx = blk_get_aio_context(blk);
    srv = nbd_server_new(ctx, &so, &err);
    if (!srv || nbd_server_add_export(srv, blk, &rw, &err) < 0 ||
        nbd_server_add_export(srv, blk, &ro, &err) < 0) {
        fprintf(stderr, "fuzz-nbd-server: %s\n", error_get_pretty(err));
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    size_t sent = 0;
    bool shut = false;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        abort();
    }
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (nbd_server_add_client(srv, sv[0], NULL) < 0) {
        close(sv[1]);
        return 0;
    }
    /* The server drops the client at the end of the stream, or earlier. */
    for (long spins = 0; nbd_server_client_count(srv) > 0; spins++) {
        ssize_t n;
        bool progress = false;

        if (spins > 10000000) {
            abort(); /* the server neither finished nor dropped the client */
        }
        if (sent < size) {
            n = write(sv[1], data + sent, size - sent);
            if (n > 0) {
                sent += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                sent = size; /* the server closed its side */
            }
        }
        if (sent == size && !shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        while ((n = read(sv[1], sink, sizeof(sink))) > 0) {
            progress = true;
        }
        progress |= aio_poll(ctx, false);
        if (!progress) {
            aio_poll(ctx, true);
        }
    }
    close(sv[1]);
    return 0;
}
