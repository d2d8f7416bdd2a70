/*
 * coblk-demo: the main job's first half. Creates a raw image, opens it as a
 * node graph (raw over file, O_DIRECT when the filesystem allows it), writes
 * patterned data with many concurrent callback-style requests, flushes,
 * reads everything back through coroutines and verifies it, and prints what
 * it did. Then, when the qcow2 driver is built, a qcow2 overlay with the raw
 * image as its backing file: every other 64 KiB chunk is rewritten through
 * the overlay (copy-on-write allocation), every chunk is read back through
 * the chain and verified, and the overlay is checked (coblk's check, and
 * Debian's qemu-img check when present). Usage: coblk-demo DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

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

/* The second pattern, written through the qcow2 overlay. */
static void fill2(uint8_t *buf, int64_t offset)
{
    fill(buf, offset ^ 0x5a5a5a5a);
}

/*
 * qcow2 over the raw image: allocating writes to every other chunk, then a
 * verified read of the whole chain, then check.
 * Returns the number of problems.
 */
static int demo_qcow2(const char *dir, const char *raw_path)
{
    char path[4200], cmd[8600];
    uint8_t *buf = NULL, *want = malloc(REQ_SIZE);
    BdrvCheckResult res = { 0 };
    Error *err = NULL;
    BlockBackend *blk;
    BlockOpts *o;
    int bad = 0, ret;
    int64_t t0, t1;

    if (!bdrv_find_format("qcow2")) {
        printf("qcow2 driver not built: skipping the overlay\n");
        free(want);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/coblk-demo.qcow2", dir);
    o = bopts_new();
    bopts_set(o, "size", "64M");
    bopts_set(o, "backing_file", raw_path);
    bopts_set(o, "backing_fmt", "raw");
    if (bdrv_create("qcow2", path, o, &err) < 0) {
        goto fail;
    }
    blk = blk_new_open(path, NULL, BDRV_O_RDWR, &err);
    if (!blk) {
        goto fail;
    }
    printf("graph: %s (%s) -> %s (%s), backing %s (%s)\n", bdrv_get_node_name(blk_bs(blk)),
           bdrv_get_format_name(blk_bs(blk)), bdrv_get_node_name(bdrv_file_bs(blk_bs(blk))),
           bdrv_get_format_name(bdrv_file_bs(blk_bs(blk))),
           bdrv_get_node_name(bdrv_backing_bs(blk_bs(blk))),
           bdrv_get_format_name(bdrv_backing_bs(blk_bs(blk))));
    if (posix_memalign((void **)&buf, 4096, REQ_SIZE)) {
        abort();
    }
    t0 = aio_clock_ns();
    for (int64_t off = 0; off < IMAGE_SIZE; off += 2 * REQ_SIZE) {
        fill2(buf, off);
        bad += blk_pwrite(blk, off, REQ_SIZE, buf, 0) < 0;
    }
    bad += blk_flush(blk) < 0;
    t1 = aio_clock_ns();
    printf("qcow2: allocated 32 MiB (every other 64 KiB chunk) over the raw backing file: "
           "%.0f MiB/s, %d errors\n", 32.0 / ((double)(t1 - t0) / 1e9), bad);
    t0 = aio_clock_ns();
    for (int64_t off = 0; off < IMAGE_SIZE; off += REQ_SIZE) {
        if (blk_pread(blk, off, REQ_SIZE, buf, 0) < 0) {
            bad++;
            continue;
        }
        ((off / REQ_SIZE) % 2 ? fill : fill2)(want, off);
        bad += memcmp(buf, want, REQ_SIZE) != 0;
    }
    t1 = aio_clock_ns();
    printf("qcow2: read back and verified 64 MiB through the chain: %.0f MiB/s, %d bad chunks\n",
           64.0 / ((double)(t1 - t0) / 1e9), bad);
    blk_unref(blk);
    blk = blk_new_open(path, NULL, 0, &err);
    if (!blk) {
        goto fail;
    }
    ret = bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);
    if (ret == 0) {
        printf("coblk check: %d corruptions, %d leaks, %lld/%lld clusters allocated\n",
               res.corruptions, res.leaks, (long long)res.allocated_clusters,
               (long long)res.total_clusters);
        bad += res.corruptions + res.leaks + res.check_errors;
    } else {
        printf("coblk check: not available for qcow2 (%d)\n", ret);
    }
    blk_unref(blk);
    fflush(stdout);
    snprintf(cmd, sizeof(cmd), "command -v qemu-img >/dev/null && "
             "printf 'qemu-img check: ' && qemu-img check -q '%s' && echo clean", path);
    if (system(cmd) != 0 && system("command -v qemu-img >/dev/null") == 0) {
        bad++;
    }
    remove(path);
    free(buf);
    free(want);
    return bad;

fail:
    fprintf(stderr, "coblk-demo: qcow2: %s\n", error_get_pretty(err));
    error_free(err);
    free(buf);
    free(want);
    return 1;
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
    bad += demo_qcow2(argv[1], path);
    remove(path);
    return (w.errors || bad) ? 1 : 0;

fail:
    fprintf(stderr, "coblk-demo: %s\n", error_get_pretty(err));
    error_free(err);
    return 1;
}
