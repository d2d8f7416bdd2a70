/*
 * coblk-demo: the main job's first half. Creates a raw image, opens it as a
 * node graph (raw over file, O_DIRECT when the filesystem allows it), writes
 * patterned data with many concurrent callback-style requests, flushes,
 * reads everything back through coroutines and verifies it, and prints what
 * it did. Usage: coblk-demo DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>

#define IMAGE_SIZE (64LL << 20)
#define REQ_SIZE 65536
#define DEPTH 32

typedef struct Writer Writer;

typedef struct Slot {
    Writer *w;
    uint8_t *buf;
    IOVector qiov;
    bool busy;
} Slot;

struct Writer {
    BlockBackend *blk;
    Slot slots[DEPTH];
    int64_t next;
    int in_flight;
    int errors;
};

static void fill(uint8_t *buf, int64_t offset)
{
    for (int i = 0; i < REQ_SIZE; i += 8) {
        uint64_t v = (uint64_t)(offset + i) * 0x9e3779b97f4a7c15ULL;

        memcpy(buf + i, &v, 8);
    }
}

static void write_cb(void *opaque, int ret)
{
    Slot *slot = opaque;

    if (ret < 0) {
        slot->w->errors++;
    }
    slot->busy = false;
    slot->w->in_flight--;
}

/* Issues the next write from a free slot (completions come in any order). */
static void write_next(Writer *w)
{
    Slot *slot = NULL;

    for (int i = 0; i < DEPTH && !slot; i++) {
        slot = w->slots[i].busy ? NULL : &w->slots[i];
    }
    fill(slot->buf, w->next);
    iovector_init_buf(&slot->qiov, slot->buf, REQ_SIZE);
    slot->busy = true;
    w->in_flight++;
    blk_aio_pwritev(w->blk, w->next, &slot->qiov, 0, write_cb, slot);
    w->next += REQ_SIZE;
}

typedef struct Verify {
    BlockBackend *blk;
    int64_t start;
    int64_t step;
    int bad;
    int done;
} Verify;

static void coroutine_fn verify_co(void *opaque)
{
    Verify *v = opaque;
    uint8_t *buf;
    uint8_t *want = malloc(REQ_SIZE);
    IOVector qiov;

    if (posix_memalign((void **)&buf, 4096, REQ_SIZE)) {
        abort();
    }
    for (int64_t off = v->start; off < IMAGE_SIZE; off += v->step) {
        iovector_init_buf(&qiov, buf, REQ_SIZE);
        if (blk_co_preadv(v->blk, off, REQ_SIZE, &qiov, 0) < 0) {
            v->bad++;
            continue;
        }
        fill(want, off);
        v->bad += memcmp(buf, want, REQ_SIZE) != 0;
    }
    free(want);
    free(buf);
    v->done = 1;
}

int main(int argc, char **argv)
{
    char path[4096];
    Error *err = NULL;
    BlockOpts *o;
    Writer w = { 0 };
    Verify v[8];
    BlockBackend *blk;
    int64_t t0;
    int64_t t1;
    int bad = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    snprintf(path, sizeof(path), "%s/coblk-demo.raw", argv[1]);
    o = bopts_new();
    bopts_set(o, "size", "64M");
    if (bdrv_create("raw", path, o, &err) < 0) {
        goto fail;
    }
    printf("created %s (raw, 64 MiB)\n", path);

    o = bopts_new();
    bopts_set(o, "driver", "raw");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    bopts_set(o, "file.cache.direct", "on");
    bopts_set(o, "node-name", "demo0");
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        /* No O_DIRECT here (tmpfs on old kernels): buffered then. */
        error_free(err);
        err = NULL;
        o = bopts_new();
        bopts_set(o, "driver", "raw");
        bopts_set(o, "node-name", "demo0");
        blk = blk_new_open(path, o, BDRV_O_RDWR, &err);
        if (!blk) {
            goto fail;
        }
    }
    printf("graph: %s (%s) -> %s (%s)%s\n", bdrv_get_node_name(blk_bs(blk)),
           bdrv_get_format_name(blk_bs(blk)), bdrv_get_node_name(bdrv_file_bs(blk_bs(blk))),
           bdrv_get_format_name(bdrv_file_bs(blk_bs(blk))),
           (bdrv_file_bs(blk_bs(blk))->open_flags & BDRV_O_NOCACHE) ? ", O_DIRECT" : "");

    w.blk = blk;
    for (int i = 0; i < DEPTH; i++) {
        w.slots[i].w = &w;
        if (posix_memalign((void **)&w.slots[i].buf, 4096, REQ_SIZE)) {
            return 1;
        }
    }
    t0 = aio_clock_ns();
    while (w.next < IMAGE_SIZE || w.in_flight) {
        while (w.in_flight < DEPTH && w.next < IMAGE_SIZE) {
            write_next(&w);
        }
        aio_poll(blk_get_aio_context(blk), true);
    }
    if (blk_flush(blk) < 0) {
        w.errors++;
    }
    t1 = aio_clock_ns();
    printf("wrote 64 MiB in 64 KiB requests, %d in flight, with blk_aio_pwritev + flush: "
           "%.0f MiB/s, %d errors\n", DEPTH, 64.0 / ((double)(t1 - t0) / 1e9), w.errors);

    t0 = aio_clock_ns();
    for (int i = 0; i < 8; i++) {
        v[i] = (Verify){ .blk = blk, .start = (int64_t)i * REQ_SIZE, .step = 8 * REQ_SIZE };
        aio_co_enter(blk_get_aio_context(blk), coroutine_create(verify_co, &v[i]));
    }
    for (int i = 0; i < 8; i++) {
        while (!v[i].done) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        bad += v[i].bad;
    }
    t1 = aio_clock_ns();
    printf("read back and verified 64 MiB with 8 coroutines: %.0f MiB/s, %d bad chunks\n",
           64.0 / ((double)(t1 - t0) / 1e9), bad);
    char *stats = blk_stats_to_json(blk);
    printf("stats: %.160s...\n", stats);
    free(stats);
    blk_unref(blk);
    for (int i = 0; i < DEPTH; i++) {
        free(w.slots[i].buf);
    }
    remove(path);
    return (w.errors || bad) ? 1 : 0;

fail:
    fprintf(stderr, "coblk-demo: %s\n", error_get_pretty(err));
    error_free(err);
    return 1;
}
