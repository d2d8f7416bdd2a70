/*
 * libFuzzer target for the image format parsers: the input is an image
 * file, served from memory by a test-only protocol driver ("fuzzmem",
 * registered with bdrv_register()).
 *
 * The format is taken from $COBLK_FUZZ_FORMAT (or from the program name's
 * suffix, "fuzz-image-vdi"); empty or "probe" means the format is guessed.
 * For each input:
 *  1. the format's probe scores the bytes;
 *  2. read-only, untrusted open (BDRV_O_UNTRUSTED: only sibling files may be
 *     followed, and the image "lives" in a directory that does not exist, so
 *     no host file is ever opened), then info (bdrv_get_info,
 *     bdrv_get_specific_info, uuid, geometry, comment, snapshots), the block
 *     status map of the whole chain, a read of every allocated range, and a
 *     check without repair;
 *  3. if that open succeeded: a read-write open of a private copy, a few
 *     writes, a write-zeroes and a discard chosen from the input's bytes, a
 *     flush, a check with repair (-r all), and a re-read.
 * Every step may fail with an error; none may crash, leak, hang, or use more
 * than the caps below.
 *
 * Caps: inputs larger than FUZZ_MAX_INPUT are ignored; the in-memory file
 * may grow to FUZZ_MEM_CAP bytes (writes beyond fail with ENOSPC); the map
 * stops after FUZZ_MAP_STEPS extents and the reads after FUZZ_READ_CAP bytes.
 *
 * Run: COBLK_FUZZ_FORMAT=vdi ./fuzz-image -max_len=65536 -rss_limit_mb=1024 corpus/vdi
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

#include "block/block-int.h"

#define FUZZ_MAX_INPUT (4 << 20)
#define FUZZ_MEM_CAP (64 << 20)
#define FUZZ_MAP_STEPS 4096
#define FUZZ_READ_CAP (8 << 20)
#define FUZZ_CHUNK (1 << 20)
/* Where the image "lives": siblings resolve here, and it does not exist. */
#define FUZZ_IMAGE_PATH "/nonexistent-coblk-fuzz-dir/image"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------------------------------------------------------------------- */
/* fuzzmem: the image file, in memory */

typedef struct FuzzMem {
    uint8_t *buf;
    int64_t len;
    int64_t cap;       /* bytes allocated (grows by doubling) */
    bool writable;
} FuzzMem;

static FuzzMem mem;

static int fuzzmem_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    bopts_del(options, "filename");
    snprintf(bs->filename, sizeof(bs->filename), "%s", FUZZ_IMAGE_PATH);
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    return 0;
}

static int coroutine_fn fuzzmem_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    int64_t n = offset < mem.len ? mem.len - offset : 0;

    if (n > bytes) {
        n = bytes;
    }
    if (n > 0) {
        iovector_from_buf(qiov, qiov_offset, mem.buf + offset, (size_t)n);
    }
    if (n < bytes) {
        iovector_memset(qiov, qiov_offset + (size_t)n, 0, (size_t)(bytes - n));
    }
    return 0;
}

/* Makes [0, end) addressable; fails past FUZZ_MEM_CAP. */
static int fuzzmem_grow(int64_t end)
{
    uint8_t *p;

    if (!mem.writable || end > FUZZ_MEM_CAP) {
        return mem.writable ? -ENOSPC : -EPERM;
    }
    if (end <= mem.len) {
        return 0;
    }
    if (end > mem.cap) {
        int64_t cap = mem.cap * 2 > end ? mem.cap * 2 : end;

        cap = cap < FUZZ_MEM_CAP ? cap : FUZZ_MEM_CAP;
        p = realloc(mem.buf, (size_t)cap);
        if (!p) {
            return -ENOMEM;
        }
        mem.buf = p;
        mem.cap = cap;
    }
    memset(mem.buf + mem.len, 0, (size_t)(end - mem.len));
    mem.len = end;
    return 0;
}

static int coroutine_fn fuzzmem_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    int ret = fuzzmem_grow(offset + bytes);

    if (ret == 0) {
        iovector_to_buf(qiov, qiov_offset, mem.buf + offset, (size_t)bytes);
    }
    return ret;
}

static int coroutine_fn fuzzmem_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags)
{
    int ret = fuzzmem_grow(offset + bytes);

    if (ret == 0) {
        memset(mem.buf + offset, 0, (size_t)bytes);
    }
    return ret;
}

static int coroutine_fn fuzzmem_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return mem.writable ? 0 : -EPERM;
}

static int coroutine_fn fuzzmem_flush(BlockDriverState *bs)
{
    return 0;
}

static int coroutine_fn fuzzmem_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, BdrvRequestFlags flags,
                                         Error **errp)
{
    int ret = offset > mem.len ? fuzzmem_grow(offset) : mem.writable ? 0 : -EPERM;

    if (ret < 0) {
        error_setg(errp, "fuzzmem: cannot resize to %lld", (long long)offset);
        return ret;
    }
    mem.len = offset;
    return 0;
}

static int64_t coroutine_fn fuzzmem_getlength(BlockDriverState *bs)
{
    return mem.len;
}

static int coroutine_fn fuzzmem_block_status(BlockDriverState *bs, bool want_zero,
                                             int64_t offset, int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
}

static const BlockDriver fuzzmem_driver = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "fuzzmem",
    .protocol_name = "fuzzmem",
    .is_protocol = true,
    .bdrv_open = fuzzmem_open,
    .co_preadv = fuzzmem_preadv,
    .co_pwritev = fuzzmem_pwritev,
    .co_pwrite_zeroes = fuzzmem_pwrite_zeroes,
    .co_pdiscard = fuzzmem_pdiscard,
    .co_flush_to_disk = fuzzmem_flush,
    .co_truncate = fuzzmem_truncate,
    .co_getlength = fuzzmem_getlength,
    .co_block_status = fuzzmem_block_status,
};

/* ---------------------------------------------------------------------- */
/* The steps */

static const char *format; /* NULL: probe */
static uint8_t *chunk;
static bool verbose; /* $COBLK_FUZZ_VERBOSE: say why opens fail (corpus work) */

static BlockDriverState *open_image(int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockDriverState *bs;

    bopts_set(o, "file.driver", "fuzzmem");
    if (format) {
        bopts_set(o, "driver", format);
    }
    bs = bdrv_open(NULL, o, flags | BDRV_O_UNTRUSTED, &err);
    if (!bs && !err) {
        abort(); /* a failure must say why */
    }
    if (verbose) {
        fprintf(stderr, "fuzz-image: %s open: %s\n", flags & BDRV_O_RDWR ? "rw" : "ro",
                bs ? "ok" : error_get_pretty(err));
    }
    error_free(err);
    return bs;
}

typedef struct MapRun {
    BlockDriverState *bs;
    BlockBackend *blk;
    int64_t len;
} MapRun;

/* Walks the chain's block status; reads each range that is not known zero. */
static int64_t coroutine_fn map_and_read_co(void *opaque)
{
    MapRun *m = opaque;
    int64_t off = 0, read = 0;

    for (int step = 0; step < FUZZ_MAP_STEPS && off < m->len; step++) {
        int64_t pnum = 0, map = 0;
        BlockDriverState *file = NULL;
        int depth = 0;
        int ret = bdrv_co_block_status_above(m->bs, NULL, off, m->len - off, &pnum, &map,
                                             &file, &depth);

        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0 || pnum > m->len - off) {
            abort(); /* the contract: progress, and within the node */
        }
        if (!(ret & BDRV_BLOCK_ZERO)) {
            for (int64_t o = off; o < off + pnum && read < FUZZ_READ_CAP; o += FUZZ_CHUNK) {
                int64_t n = off + pnum - o < FUZZ_CHUNK ? off + pnum - o : FUZZ_CHUNK;
                IOVector qiov;

                iovector_init_buf(&qiov, chunk, (size_t)n);
                blk_co_preadv(m->blk, o, n, &qiov, 0);
                read += n;
            }
        }
        off += pnum;
    }
    return 0;
}

static void quiet(void *opaque, const char *msg)
{
}

static void inspect(BlockDriverState *bs)
{
    BlockDriverInfo bdi;
    BdrvCheckResult res = { .report = quiet };
    BlockSnapshotInfo *sn = NULL;
    BlockGeometry geo;
    uint8_t uuid[16];
    char *s, *comment = NULL;
    Error *err = NULL;

    bdrv_get_info(bs, &bdi);
    s = bdrv_get_specific_info(bs, &err);
    free(s);
    error_free(err);
    bdrv_get_uuid(bs, BLOCK_UUID_IMAGE, uuid);
    bdrv_get_geometry(bs, &geo);
    if (bdrv_get_comment(bs, &comment) == 0) {
        free(comment);
    }
    if (bdrv_snapshot_list(bs, &sn) >= 0) {
        free(sn);
    }
    bdrv_get_allocated_file_size(bs);
    bdrv_check(bs, &res, BDRV_FIX_NONE);
}

static void map_and_read(BlockDriverState *bs)
{
    MapRun m = { .bs = bs, .len = bdrv_getlength(bs) };

    if (m.len <= 0) {
        return;
    }
    m.blk = blk_new_with_bs(bs, NULL);
    if (!m.blk) {
        return;
    }
    bdrv_run_co(bdrv_get_aio_context(bs), map_and_read_co, &m);
    blk_unref(m.blk);
}

/* A few guest writes at places chosen by the input, then check -r all. */
static void write_and_repair(const uint8_t *data, size_t size)
{
    BlockDriverState *bs = open_image(BDRV_O_RDWR | BDRV_O_UNMAP);
    BlockBackend *blk;
    BdrvCheckResult res = { .report = quiet };
    int64_t len;
    uint64_t h = 1469598103934665603ULL;

    if (!bs) {
        return;
    }
    for (size_t i = 0; i < size && i < 4096; i++) {
        h = (h ^ data[i]) * 1099511628211ULL;
    }
    blk = blk_new_with_bs(bs, NULL);
    len = bdrv_getlength(bs);
    if (blk && len > 0) {
        int64_t at[3] = { 0, (int64_t)(h % (uint64_t)len) & ~511LL, len > 4096 ? len - 4096 : 0 };

        memset(chunk, 0xa5, 65536);
        for (int i = 0; i < 3; i++) {
            int64_t n = len - at[i] < 4096 ? len - at[i] : 4096;

            blk_pwrite(blk, at[i], n, chunk, 0);
        }
        blk_pwrite_zeroes(blk, at[1], len - at[1] < 65536 ? len - at[1] : 65536,
                          BDRV_REQ_MAY_UNMAP);
        blk_pdiscard(blk, at[0], len < 65536 ? len : 65536);
        blk_flush(blk);
        bdrv_check(bs, &res, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
        blk_pread(blk, 0, len < 65536 ? len : 65536, chunk, 0);
    }
    if (blk) {
        blk_unref(blk);
    }
    bdrv_unref(bs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *f = getenv("COBLK_FUZZ_FORMAT");
    const char *prog = strrchr((*argv)[0], '/');
    Error *err = NULL;

    prog = prog ? prog + 1 : (*argv)[0];
    if ((!f || !*f) && !strncmp(prog, "fuzz-image-", 11)) {
        f = prog + 11;
    }
    format = f && *f && strcmp(f, "probe") ? f : NULL;
    if (format && !bdrv_find_format(format)) {
        fprintf(stderr, "fuzz-image: format '%s' is not built in\n", format);
        exit(77);
    }
    if (bdrv_register(&fuzzmem_driver, &err) < 0) {
        fprintf(stderr, "fuzz-image: %s\n", error_get_pretty(err));
        exit(1);
    }
    chunk = malloc(FUZZ_CHUNK);
    verbose = getenv("COBLK_FUZZ_VERBOSE") != NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    BlockDriverState *bs;

    if (size > FUZZ_MAX_INPUT) {
        return 0;
    }
    if (format) {
        const BlockDriver *drv = bdrv_find_format(format);

        if (drv->probe) {
            drv->probe(data, (int)size, "fuzz.img");
        }
    } else {
        bdrv_probe_format(data, (int)size, "fuzz.img");
    }

    mem = (FuzzMem){ .buf = malloc(size ? size : 1), .len = (int64_t)size,
                     .cap = size ? (int64_t)size : 1 };
    memcpy(mem.buf, data, size);
    bs = open_image(0);
    if (bs) {
        inspect(bs);
        map_and_read(bs);
        bdrv_unref(bs);
        mem.writable = true;
        write_and_repair(data, size);
    }
    free(mem.buf);
    mem = (FuzzMem){ 0 };
    return 0;
}
