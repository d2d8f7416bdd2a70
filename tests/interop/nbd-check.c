/*
 * nbd-check: drives libcoblk's nbd client against a real NBD server for
 * tests/interop/nbd-client.sh.
 *
 *   nbd-check URL [OPTIONS]
 *
 * OPTIONS are extra keyval options of the node ("file.connections=4").
 * Opens URL (raw over the nbd protocol, discard=unmap), which must be a
 * 64 MiB export, and then: 32 writes in flight (64 KiB of byte 0x40+i at
 * i * 128 KiB), a FUA write of 0x5a at 5 MiB (1 MiB), write-zeroes that
 * may unmap at 0 (64 KiB) and that may not at 128 KiB (64 KiB), a trim at
 * 8 MiB (1 MiB), a flush; reads everything back (32 reads in flight) and
 * checks block status: the FUA range is data, the never written range at
 * 32 MiB reads as zero. The script then checks the server's copy with
 * qemu-io. Exit status 0 when every step succeeded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define N 32
#define LEN (64 * KiB)

static int failures;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "nbd-check: " __VA_ARGS__);    \
            fputc('\n', stderr);                           \
            failures++;                                    \
        }                                                  \
    } while (0)

typedef struct Batch {
    int pending;
    int err;
} Batch;

static void done_cb(void *opaque, int ret)
{
    Batch *b = opaque;

    if (ret < 0) {
        b->err = ret;
    }
    b->pending--;
}

static void wait_batch(BlockBackend *blk, Batch *b)
{
    while (b->pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
}

static uint8_t expected(int64_t off)
{
    int64_t i = off / (128 * KiB);

    if (off < 2 * 128 * KiB && off % (128 * KiB) < LEN) {
        return 0; /* both zeroed ranges */
    }
    if (i < N && off % (128 * KiB) < LEN) {
        return (uint8_t)(0x40 + i);
    }
    if (off >= 5 * MiB && off < 6 * MiB) {
        return 0x5a;
    }
    return 0;
}

static void aio_writes(BlockBackend *blk, uint8_t *buf)
{
    IOVector q[N];
    Batch b = { N, 0 };

    for (int i = 0; i < N; i++) {
        memset(buf + (size_t)i * LEN, 0x40 + i, LEN);
        iovector_init_buf(&q[i], buf + (size_t)i * LEN, LEN);
        blk_aio_pwritev(blk, (int64_t)i * 128 * KiB, &q[i], 0, done_cb, &b);
    }
    wait_batch(blk, &b);
    CHECK(b.err == 0, "parallel writes failed: %d", b.err);
}

static void aio_reads_verify(BlockBackend *blk, uint8_t *buf)
{
    IOVector q[N];
    Batch b = { N, 0 };

    for (int i = 0; i < N; i++) {
        iovector_init_buf(&q[i], buf + (size_t)i * 256 * KiB, 256 * KiB);
        blk_aio_preadv(blk, (int64_t)i * 256 * KiB, &q[i], 0, done_cb, &b);
    }
    wait_batch(blk, &b);
    CHECK(b.err == 0, "parallel reads failed: %d", b.err);
    for (int64_t off = 0; off < (int64_t)N * 256 * KiB; off++) {
        if (buf[off] != expected(off)) {
            CHECK(0, "byte at %lld is 0x%02x, expected 0x%02x", (long long)off, buf[off],
                  expected(off));
            break;
        }
    }
}

typedef struct StatusCo {
    BlockDriverState *bs;
    int64_t off;
    int ret;
    int64_t pnum;
    bool done;
} StatusCo;

static void coroutine_fn status_entry(void *opaque)
{
    StatusCo *s = opaque;
    int64_t map;
    BlockDriverState *file;

    s->ret = bdrv_co_block_status(s->bs, s->off, MiB, &s->pnum, &map, &file);
    s->done = true;
}

static int status(BlockBackend *blk, int64_t off)
{
    StatusCo s = { .bs = bdrv_file_bs(blk_bs(blk)), .off = off };

    aio_co_enter(blk_get_aio_context(blk), coroutine_create(status_entry, &s));
    while (!s.done) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    return s.pnum > 0 ? s.ret : -1;
}

int main(int argc, char **argv)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    uint8_t *buf = malloc(8 * MiB);
    int st;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: nbd-check URL [OPTIONS]\n");
        return 2;
    }
    if (argc == 3 && bopts_parse_keyval(o, argv[2], NULL, &err) < 0) {
        fprintf(stderr, "nbd-check: %s\n", error_get_pretty(err));
        return 2;
    }
    bopts_set(o, "driver", "raw");
    bopts_set(o, "discard", "unmap");
    blk = blk_new_open(argv[1], o, BDRV_O_RDWR, &err);
    if (!blk) {
        fprintf(stderr, "nbd-check: %s\n", error_get_pretty(err));
        error_free(err);
        free(buf);
        return 1; /* the expected failures of nbd-tls.sh end here: no leak under ASan */
    }
    CHECK(blk_getlength(blk) == 64 * MiB, "export size %lld", (long long)blk_getlength(blk));
    aio_writes(blk, buf);
    memset(buf, 0x5a, MiB);
    CHECK(blk_pwrite(blk, 5 * MiB, MiB, buf, BDRV_REQ_FUA) == 0, "FUA write failed");
    CHECK(blk_pwrite_zeroes(blk, 0, LEN, BDRV_REQ_MAY_UNMAP) == 0, "write zeroes failed");
    CHECK(blk_pwrite_zeroes(blk, 128 * KiB, LEN, 0) == 0, "write zeroes (no hole) failed");
    CHECK(blk_pdiscard(blk, 8 * MiB, MiB) == 0, "trim failed");
    CHECK(blk_flush(blk) == 0, "flush failed");
    aio_reads_verify(blk, buf);
    st = status(blk, 5 * MiB);
    CHECK(st >= 0 && (st & BDRV_BLOCK_DATA) && !(st & BDRV_BLOCK_ZERO),
          "block status at 5 MiB: 0x%x", st);
    st = status(blk, 32 * MiB);
    CHECK(st >= 0 && (st & BDRV_BLOCK_ZERO), "block status at 32 MiB: 0x%x", st);
    blk_unref(blk);
    free(buf);
    if (!failures) {
        printf("nbd-check: ok\n");
    }
    return failures ? 1 : 0;
}
