/*
 * Unit tests: the vdi format driver (drivers/format/vdi/): create options,
 * read/write/allocation across blocks, concurrent allocating writes, block
 * status, UUIDs, geometry, comment, discard and zero writes that release
 * blocks, compact, refusals (static compact, long comment, bad options), and
 * allocating writes whose data write fails (blkdebug below the vdi node), and
 * new blocks reusing the leaked slot such a failure leaves; writes of a block
 * being allocated join the allocation (write at once, complete with it).
 * qemu-img interop and corrupt images are in tests/interop/vdi-*.sh.
 */
#include "drv-test-util.h"

#include <fcntl.h>
#include <unistd.h>

#include <coblk/image.h>

#include "block/block-int.h"
#include "drivers/format/vdi/vdi-int.h"

#define MiB (1024 * 1024)
/* Where coblk puts the data of a new image: the first 1 MiB boundary after the map. */
#define DATA_OFF MiB

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vdi");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

static int create(const char *optstr, char *errmsg, size_t errlen)
{
    return drv_test_create("vdi", img, optstr, errmsg, errlen);
}

static BlockBackend *open_vdi(int flags)
{
    return drv_test_open_image("vdi", img, flags);
}

static int64_t file_size_of(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static int64_t file_size(void)
{
    return file_size_of(img);
}

/* A little-endian 32-bit header field of the image file. */
static uint32_t header_u32(off_t off)
{
    uint8_t b[4];

    drv_test_pread(img, off, b, sizeof(b));
    return ld_le32(b);
}

static void test_vdi_create_and_rw(void **state)
{
    uint8_t *want = malloc(3 * MiB), *buf = malloc(3 * MiB);
    BlockDriverInfo bdi;
    BlockBackend *blk;

    assert_int_equal(create("size=5M", NULL, 0), 0);
    /* Header and one sector of map, then a hole up to the 1 MiB-aligned data. */
    assert_int_equal(file_size(), DATA_OFF);
    assert_int_equal(header_u32(VDI_OFF_DATA), DATA_OFF);
    blk = open_vdi(BDRV_O_RDWR);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "vdi");
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, MiB);

    /* Unallocated reads are zero; a write across two blocks allocates both. */
    assert_int_equal(blk_pread(blk, 0, 3 * MiB, buf, 0), 0);
    memset(want, 0, 3 * MiB);
    assert_memory_equal(buf, want, 3 * MiB);
    drv_test_pattern(want + MiB - 1000, 5000, 9);
    assert_int_equal(blk_pwrite(blk, MiB - 1000, 5000, want + MiB - 1000, 0), 0);
    /* Grown ahead of the next slots (up to the last block) while open; trimmed at close. */
    assert_int_equal(file_size(), DATA_OFF + 5 * MiB);
    assert_int_equal(blk_pread(blk, 0, 3 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 3 * MiB);
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);

    blk = open_vdi(0);
    assert_int_equal(blk_pread(blk, 0, 3 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 3 * MiB);
    assert_true(blk_pwrite(blk, 0, 512, buf, 0) < 0); /* read-only */
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_vdi_create_options(void **state)
{
    char msg[1024];
    BlockBackend *blk;

    assert_true(create("size=1M,foo=1", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "foo"));
    assert_true(create("size=1M,static=maybe", msg, sizeof(msg)) < 0);
    assert_true(create("size=1P", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "exceeds the maximum"));

    assert_int_equal(create("size=3M,static=on", NULL, 0), 0);
    assert_int_equal(file_size(), DATA_OFF + 3 * MiB);
    blk = open_vdi(BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 3 * MiB);
    blk_unref(blk);

    /* The create options are listed for -o help. */
    const BlockCreateOptDesc *d = bdrv_create_opts("vdi");
    assert_non_null(d);
    assert_string_equal(d[0].name, "size");
    assert_string_equal(d[1].name, "static");
    assert_null(d[2].name);
}

typedef struct ConcReq {
    int *pending;
    int ret;
    IOVector qiov;
} ConcReq;

static void conc_done(void *opaque, int ret)
{
    ConcReq *r = opaque;

    r->ret = ret;
    (*r->pending)--;
}

/* Sixteen writes in flight into the same unallocated blocks allocate each block once. */
static void test_vdi_concurrent_alloc(void **state)
{
    enum { N = 16, LEN = 256 * 1024 };
    uint8_t *want = malloc(4 * MiB), *buf = malloc(4 * MiB);
    ConcReq reqs[N];
    BdrvCheckResult res = { 0 };
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    drv_test_pattern(want, 4 * MiB, 3);
    for (int i = 0; i < N; i++) {
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + (size_t)i * LEN, LEN);
        blk_aio_pwritev(blk, (int64_t)i * LEN, &reqs[i].qiov, 0, conc_done, &reqs[i]);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    assert_int_equal(file_size(), DATA_OFF + 4 * MiB);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_int_equal(res.allocated_clusters, 4);
    blk_unref(blk);
    free(want);
    free(buf);
}

typedef struct StatusQuery {
    BlockDriverState *bs;
    int64_t offset, bytes, pnum, map;
    BlockDriverState *file;
    int ret;
} StatusQuery;

static void coroutine_fn status_co(void *opaque)
{
    StatusQuery *q = opaque;

    q->ret = bdrv_co_block_status(q->bs, q->offset, q->bytes, &q->pnum, &q->map, &q->file);
}

static int status(BlockBackend *blk, int64_t offset, int64_t bytes, StatusQuery *q)
{
    *q = (StatusQuery){ .bs = blk_bs(blk), .offset = offset, .bytes = bytes };
    drv_test_run_co(blk_get_aio_context(blk), status_co, q);
    return q->ret;
}

static void test_vdi_block_status(void **state)
{
    uint8_t buf[4096];
    BlockBackend *blk;
    StatusQuery q;
    int ret;

    assert_int_equal(create("size=8M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 2 * MiB, 4096, buf, 0), 0); /* slot 0 */
    assert_int_equal(blk_pwrite(blk, 3 * MiB, 4096, buf, 0), 0); /* slot 1 */

    ret = status(blk, 0, 8 * MiB, &q);
    assert_true(ret >= 0 && !(ret & BDRV_BLOCK_DATA));
    assert_true(ret & BDRV_BLOCK_ZERO);
    assert_int_equal(q.pnum, 2 * MiB);
    ret = status(blk, 2 * MiB + 512, 6 * MiB - 512, &q);
    assert_true(ret & BDRV_BLOCK_DATA);
    assert_true(ret & BDRV_BLOCK_OFFSET_VALID);
    assert_int_equal(q.map, DATA_OFF + 512);
    assert_int_equal(q.pnum, 2 * MiB - 512); /* two contiguous slots */
    assert_ptr_equal(q.file, bdrv_file_bs(blk_bs(blk)));
    blk_unref(blk);
}

static void test_vdi_uuid_geometry_comment(void **state)
{
    static const uint8_t u[16] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                   0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe };
    uint8_t got[16], img_uuid[16], mod1[16], mod2[16], raw[16];
    BlockGeometry geo = { 1024, 16, 63 }, g;
    char long_comment[300], *c;
    Error *err = NULL;
    BlockBackend *blk;
    int fd;

    assert_int_equal(create("size=2M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, img_uuid), 0);
    assert_int_equal(img_uuid[6] >> 4, 4); /* a random (version 4) UUID */
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, got), 0);
    memset(raw, 0, 16);
    assert_memory_equal(got, raw, 16);

    /* The first write renews the modification UUID. */
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_MODIFICATION, mod1), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, long_comment, 0), 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_MODIFICATION, mod2), 0);
    assert_memory_not_equal(mod1, mod2, 16);

    assert_int_equal(bdrv_set_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u, NULL), 0);
    assert_int_equal(bdrv_set_geometry(blk_bs(blk), &geo, NULL), 0);
    assert_int_equal(bdrv_set_comment(blk_bs(blk), "hello vdi", NULL), 0);
    memset(long_comment, 'x', sizeof(long_comment) - 1);
    long_comment[sizeof(long_comment) - 1] = '\0';
    assert_true(bdrv_set_comment(blk_bs(blk), long_comment, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "too long"));
    error_free(err);
    blk_unref(blk);

    /* On disk: VirtualBox's layout, first three fields little-endian. */
    fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, raw, 16, 392 + 32), 16);
    close(fd);
    assert_int_equal(raw[0], 0x67);
    assert_int_equal(raw[3], 0x01);
    assert_int_equal(raw[4], 0xab);
    assert_int_equal(raw[8], 0x10);

    blk = open_vdi(0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, got), 0);
    assert_memory_equal(got, u, 16);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, got), 0);
    assert_memory_equal(got, img_uuid, 16);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &g), 0);
    assert_int_equal(g.cylinders, 1024);
    assert_int_equal(g.heads, 16);
    assert_int_equal(g.sectors, 63);
    assert_int_equal(bdrv_get_comment(blk_bs(blk), &c), 0);
    assert_string_equal(c, "hello vdi");
    free(c);
    blk_unref(blk);
}

static void test_vdi_discard_and_zeroes(void **state)
{
    uint8_t *want = calloc(1, 4 * MiB), *buf = malloc(4 * MiB);
    BdrvCheckResult res = { 0 };
    BlockBackend *blk;

    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 4 * MiB, 1);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    assert_int_equal(file_size(), DATA_OFF + 4 * MiB);

    /* A partial block stays; whole blocks are released and the file shrinks. */
    assert_int_equal(blk_pdiscard(blk, 4096, 8192), 0);
    assert_int_equal(file_size(), DATA_OFF + 4 * MiB);
    assert_int_equal(blk_pdiscard(blk, MiB / 2, 2 * MiB), 0);
    assert_int_equal(file_size(), DATA_OFF + 3 * MiB);
    memset(want + MiB, 0, MiB);

    /* Zero writes with MAY_UNMAP release whole blocks; partial ones write zeroes. */
    assert_int_equal(blk_pwrite_zeroes(blk, 3 * MiB, MiB, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);
    memset(want + 3 * MiB, 0, MiB);
    assert_int_equal(blk_pwrite_zeroes(blk, 100 * 1024, 4096, 0), 0);
    memset(want + 100 * 1024, 0, 4096);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);

    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);

    /* Written again after release: a new slot at the end. */
    assert_int_equal(blk_pwrite(blk, MiB, 4 * 4096, want, 0), 0);
    memcpy(want + MiB, want, 4 * 4096);
    assert_int_equal(file_size(), DATA_OFF + 4 * MiB); /* grown ahead */
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 3 * MiB); /* trimmed at close */

    blk = open_vdi(0);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    blk_unref(blk);
    free(want);
    free(buf);
}

/* qemu-img check's exit status on path (77: no qemu-img). */
static int qemu_check(const char *path)
{
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") != 0) {
        return 77;
    }
    return drv_test_sh("qemu-img check -q -f vdi '%s'", path);
}

/*
 * A power cut while the file is grown ahead (before the trim at close): the
 * file is longer than its last slot. qemu-img check and ours accept it; the
 * next allocation reuses the tail, zeroing what the write does not cover
 * (the tail may hold data of slots whose entries never reached the map),
 * and the close trims it.
 */
static void test_vdi_crash_after_grow(void **state)
{
    uint8_t *want = calloc(1, 8 * MiB), *buf = malloc(8 * MiB), junk[4096];
    char copy[4200];
    BdrvCheckResult res = { 0 };
    BlockBackend *blk;
    int fd, st;

    snprintf(copy, sizeof(copy), "%s.cut", img);
    assert_int_equal(create("size=8M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    drv_test_pattern(want + 512, 65536, 3);
    assert_int_equal(blk_pwrite(blk, 512, 65536, want + 512, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    /* Data of a second block, never flushed: its entry stays in memory. */
    drv_test_pattern(buf, MiB, 4);
    assert_int_equal(blk_pwrite(blk, 5 * MiB, MiB, buf, 0), 0);
    assert_int_equal(drv_test_sh("cp --sparse=always '%s' '%s'", img, copy), 0);
    blk_unref(blk);

    /* The cut image: grown to its last block, one slot counted and mapped. */
    assert_int_equal(file_size_of(copy), DATA_OFF + 8 * MiB);
    st = qemu_check(copy);
    assert_true(st == 0 || st == 77);
    /* Junk where the next slot goes (the unflushed block's data is there already). */
    fd = open(copy, O_WRONLY);
    assert_true(fd >= 0);
    memset(junk, 0xa5, sizeof(junk));
    assert_int_equal(pwrite(fd, junk, sizeof(junk), DATA_OFF + MiB + MiB - 4096), 4096);
    close(fd);

    blk = drv_test_open_image("vdi", copy, BDRV_O_RDWR);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    drv_test_pattern(want + 3 * MiB + 4096, 8192, 5);
    assert_int_equal(blk_pwrite(blk, 3 * MiB + 4096, 8192, want + 3 * MiB + 4096, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
    blk_unref(blk);
    assert_int_equal(file_size_of(copy), DATA_OFF + 2 * MiB); /* trimmed to the second slot */
    st = qemu_check(copy);
    assert_true(st == 0 || st == 77);
    blk = drv_test_open_image("vdi", copy, 0);
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
    blk_unref(blk);
    unlink(copy);
    free(want);
    free(buf);
}

static void test_vdi_compact(void **state)
{
    uint8_t *want = calloc(1, 5 * MiB), *buf = malloc(5 * MiB);
    Error *err = NULL;
    BlockBackend *blk;

    assert_int_equal(create("size=5M", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    drv_test_pattern(want, 5 * MiB, 2);
    memset(want + MiB, 0, MiB);          /* block 1 written as zeroes */
    memset(want + 3 * MiB, 0, MiB);      /* block 3 too */
    assert_int_equal(blk_pwrite(blk, 0, 5 * MiB, want, 0), 0);
    assert_int_equal(file_size(), DATA_OFF + 5 * MiB);
    assert_int_equal(bdrv_compact(blk_bs(blk), NULL, NULL, &err), 0);
    assert_int_equal(file_size(), DATA_OFF + 3 * MiB);
    assert_int_equal(blk_pread(blk, 0, 5 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 5 * MiB);
    blk_unref(blk);

    /* A static image cannot be compacted. */
    assert_int_equal(create("size=1M,static=on", NULL, 0), 0);
    blk = open_vdi(BDRV_O_RDWR);
    assert_int_equal(bdrv_compact(blk_bs(blk), NULL, NULL, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "static"));
    error_free(err);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_vdi_probe(void **state)
{
    uint8_t buf[4096];
    BlockBackend *blk;
    Error *err = NULL;

    assert_int_equal(create("size=1M", NULL, 0), 0);
    blk = blk_new_open(img, NULL, 0, &err);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "vdi");
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* A failed data write into a new block (blkdebug below the vdi node) */

/* Slot n's first sector in a 4 MiB image (data from DATA_OFF). */
#define SLOT_SECTOR(n) ((DATA_OFF + (int64_t)(n) * MiB) / 512)

/* Opens img over blkdebug, failing (EIO, once) the first write touching sector. */
/* Opens img read-write over blkdebug (extra: more options, may be ""). */
static BlockBackend *open_dbg(const char *extra)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=vdi,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s%s", img, extra);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

static BlockBackend *open_failing(int64_t sector)
{
    char extra[256];

    snprintf(extra, sizeof(extra), ",file.inject-error.0.event=none,"
             "file.inject-error.0.iotype=write,file.inject-error.0.sector=%lld,"
             "file.inject-error.0.once=on", (long long)sector);
    return open_dbg(extra);
}

typedef struct AioDone {
    bool done;
    int ret;
} AioDone;

static void aio_done_cb(void *opaque, int ret)
{
    AioDone *d = opaque;

    d->ret = ret;
    d->done = true;
}

static void wait_suspended(BlockBackend *blk, const char *tag)
{
    for (int i = 0; i < 1000 && !bdrv_debug_is_suspended(blk_bs(blk), tag); i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
    assert_true(bdrv_debug_is_suspended(blk_bs(blk), tag));
}

/*
 * Starts a guest write and holds it at the blkdebug breakpoint tag2 on its
 * first write to the file: the "pwritev" event fires for the vdi node's
 * request first (held at tag1 and resumed), then for the file's.
 */
static void start_held_write(BlockBackend *blk, int64_t offset, IOVector *qiov, AioDone *d,
                             const char *tag1, const char *tag2)
{
    BlockDriverState *bs = blk_bs(blk);

    assert_int_equal(bdrv_debug_breakpoint(bs, "pwritev", tag1), 0);
    assert_non_null(blk_aio_pwritev(blk, offset, qiov, 0, aio_done_cb, d));
    wait_suspended(blk, tag1);
    assert_int_equal(bdrv_debug_breakpoint(bs, "pwritev", tag2), 0);
    assert_int_equal(bdrv_debug_resume(bs, tag1), 0);
    wait_suspended(blk, tag2);
}

static void wait_done(BlockBackend *blk, AioDone *d)
{
    while (!d->done) {
        aio_poll(blk_get_aio_context(blk), true);
    }
}

/* The block's guest bytes [0, 1 MiB) hold want at [at, at + len) and zeroes elsewhere. */
static void assert_block(BlockBackend *blk, int64_t block, int64_t at, const uint8_t *want,
                         int64_t len)
{
    uint8_t *buf = malloc(MiB), *exp = calloc(1, MiB);

    if (len) {
        memcpy(exp + at, want, (size_t)len);
    }
    assert_int_equal(blk_pread(blk, block * MiB, MiB, buf, 0), 0);
    assert_memory_equal(buf, exp, MiB);
    free(buf);
    free(exp);
}

/* qemu-img check finds nothing wrong with path (or is not installed). */
static void assert_qemu_clean(const char *path)
{
    int st = qemu_check(path);

    if (st != 77) {
        assert_int_equal(st, 0);
    }
}

static void assert_check(BlockBackend *blk, int leaks, int64_t allocated)
{
    BdrvCheckResult res = { 0 };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.leaks, leaks);
    assert_int_equal(res.allocated_clusters, allocated);
}

/*
 * The data write into a new block fails: the write returns the error, the
 * block stays unallocated (reads zeroes, block status without DATA, not
 * counted), its slot goes to the next new block, and the image checks clean
 * with us and qemu-img; the block can be written again.
 */
static void test_vdi_failed_alloc_write(void **state)
{
    uint8_t a[4096], b[4096], c[8192];
    BlockBackend *blk;
    StatusQuery q;
    int ret;

    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    memset(c, 0xc3, sizeof(c));
    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_failing(SLOT_SECTOR(1) + 8); /* block 2's write lands in slot 1 at 4 KiB */
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0);              /* block 0: slot 0 */
    assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 4096, b, 0), -EIO);
    assert_block(blk, 2, 0, NULL, 0);
    ret = status(blk, 2 * MiB, MiB, &q);
    assert_true(ret >= 0 && !(ret & BDRV_BLOCK_DATA));
    assert_check(blk, 0, 1);
    /* Slot 1 again, for block 3: zeroed where the write does not reach. */
    assert_int_equal(blk_pwrite(blk, 3 * MiB + 512, sizeof(c), c, 0), 0);
    assert_block(blk, 3, 512, c, sizeof(c));
    ret = status(blk, 3 * MiB, MiB, &q);
    assert_true(ret & BDRV_BLOCK_DATA);
    assert_int_equal(q.map, SLOT_SECTOR(1) * 512);
    assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 4096, b, 0), 0); /* once=on: passes */
    assert_int_equal(blk_flush(blk), 0);
    assert_check(blk, 0, 3);
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 3 * MiB);
    assert_qemu_clean(img);
    blk = open_vdi(0);
    assert_block(blk, 0, 0, a, sizeof(a));
    assert_block(blk, 2, 4096, b, sizeof(b));
    assert_block(blk, 3, 512, c, sizeof(c));
    blk_unref(blk);
}

/*
 * Starts a second write of a block whose allocating write is held: it joins
 * the allocation, so its own data write reaches the file (held there at c2)
 * while the first is still held; it does not complete before the first.
 */
static void start_joiner(BlockBackend *blk, int64_t offset, IOVector *qiov, AioDone *d)
{
    start_held_write(blk, offset, qiov, d, "c1", "c2");
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "c2"), 0);
    for (int i = 0; i < 100; i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
    assert_false(d->done);
}

/*
 * Writes into a block being allocated join the allocation: their data is
 * written into its slot at once (in parallel with the first write) and
 * they complete once the block's entry is published.
 */
static void test_vdi_alloc_joiner(void **state)
{
    uint8_t a[4096], c[4096], d2[4096];
    AioDone da = { 0 }, dc = { 0 }, dd = { 0 };
    IOVector qa, qc, qd;
    BlockBackend *blk;

    memset(a, 0xa1, sizeof(a));
    memset(c, 0xc3, sizeof(c));
    memset(d2, 0xd4, sizeof(d2));
    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_dbg("");
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0); /* slot 0; the header written */
    iovector_init_buf(&qa, a, sizeof(a));
    iovector_init_buf(&qc, c, sizeof(c));
    iovector_init_buf(&qd, d2, sizeof(d2));
    start_held_write(blk, MiB + 512 * 1024, &qa, &da, "a1", "a2"); /* block 1, held */
    start_joiner(blk, MiB + 64 * 1024, &qc, &dc);
    start_joiner(blk, 2 * MiB - 4096, &qd, &dd);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a2"), 0);
    wait_done(blk, &da);
    wait_done(blk, &dc);
    wait_done(blk, &dd);
    assert_int_equal(da.ret, 0);
    assert_int_equal(dc.ret, 0);
    assert_int_equal(dd.ret, 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_check(blk, 0, 2);
    blk_unref(blk);
    blk = open_vdi(0);
    assert_block(blk, 0, 0, a, sizeof(a));
    assert_int_equal(blk_pread(blk, MiB + 512 * 1024, 4096, c, 0), 0);
    assert_memory_equal(c, a, sizeof(a));
    assert_int_equal(blk_pread(blk, MiB + 64 * 1024, 4096, c, 0), 0);
    memset(a, 0xc3, sizeof(a));
    assert_memory_equal(c, a, sizeof(a));
    assert_int_equal(blk_pread(blk, 2 * MiB - 4096, 4096, c, 0), 0);
    assert_memory_equal(c, d2, sizeof(d2));
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);
    assert_qemu_clean(img);
}

/*
 * The entry is published once the first write's data is written, while a
 * joiner is still held in its own data write: the first write's bytes read
 * back at once, the joiner completes when its write does, and the first
 * write (which waits for its joiners) with it.
 */
static void test_vdi_alloc_publish_before_joiner(void **state)
{
    uint8_t a[4096], c[4096], buf[4096];
    AioDone da = { 0 }, dc = { 0 };
    IOVector qa, qc;
    BlockBackend *blk;
    BDRVVdiState *s;

    memset(a, 0xa5, sizeof(a));
    memset(c, 0xc6, sizeof(c));
    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_dbg("");
    s = blk_bs(blk)->opaque;
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0); /* slot 0; the header written */
    iovector_init_buf(&qa, a, sizeof(a));
    iovector_init_buf(&qc, c, sizeof(c));
    start_held_write(blk, MiB + 512 * 1024, &qa, &da, "a1", "a2"); /* block 1, held */
    start_held_write(blk, MiB + 64 * 1024, &qc, &dc, "c1", "c2");  /* its joiner, held */
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a2"), 0);
    for (int i = 0; i < 5000 && vdi_entry(s, 1) == VDI_FREE; i++) { /* at most ~5 s */
        if (!aio_poll(blk_get_aio_context(blk), false)) {
            usleep(1000);
        }
    }
    assert_int_not_equal(vdi_entry(s, 1), VDI_FREE); /* not waiting for the joiner */
    assert_false(dc.done);
    assert_false(da.done);
    assert_int_equal(blk_pread(blk, MiB + 512 * 1024, 4096, buf, 0), 0);
    assert_memory_equal(buf, a, sizeof(a));
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "c2"), 0);
    wait_done(blk, &dc);
    wait_done(blk, &da);
    assert_int_equal(dc.ret, 0);
    assert_int_equal(da.ret, 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_check(blk, 0, 2);
    blk_unref(blk);
    blk = open_vdi(0);
    assert_int_equal(blk_pread(blk, MiB + 64 * 1024, 4096, buf, 0), 0);
    assert_memory_equal(buf, c, sizeof(c));
    assert_int_equal(blk_pread(blk, MiB + 512 * 1024, 4096, buf, 0), 0);
    assert_memory_equal(buf, a, sizeof(a));
    blk_unref(blk);
}

/*
 * The allocating write fails: its joiner (whose data went into the slot)
 * fails with it, the block stays unallocated, and the next write of it
 * allocates the slot again, zeroed (the joiner's data is gone).
 */
static void test_vdi_failed_alloc_joiner(void **state)
{
    uint8_t a[4096], b[4096], c[4096];
    AioDone da = { 0 }, dc = { 0 };
    IOVector qa, qc;
    BlockBackend *blk;

    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    memset(c, 0xc3, sizeof(c));
    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_failing(SLOT_SECTOR(1));
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0); /* slot 0; the header written */
    iovector_init_buf(&qa, b, sizeof(b));
    iovector_init_buf(&qc, c, sizeof(c));
    start_held_write(blk, MiB, &qa, &da, "a1", "a2");   /* block 1 -> slot 1, held */
    start_joiner(blk, MiB + 64 * 1024, &qc, &dc);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a2"), 0);
    wait_done(blk, &da);
    wait_done(blk, &dc);
    assert_int_equal(da.ret, -EIO);
    assert_int_equal(dc.ret, -EIO);
    assert_block(blk, 1, 0, NULL, 0);
    assert_check(blk, 0, 1);
    assert_int_equal(blk_pwrite(blk, MiB + 128 * 1024, 4096, b, 0), 0); /* slot 1 again */
    assert_block(blk, 1, 128 * 1024, b, sizeof(b));
    assert_check(blk, 0, 2);
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);
    assert_qemu_clean(img);
}

/*
 * The failed write's slot is not the last one any more (another block got
 * the next slot meanwhile): the block stays unallocated, the slot is a leak
 * that check reports and check -r reclaims (moving the last slot into it).
 */
static void test_vdi_failed_alloc_leak(void **state)
{
    uint8_t a[4096], b[4096], c[4096];
    BdrvCheckResult res = { 0 };
    AioDone da = { 0 }, dc = { 0 };
    IOVector qa, qc;
    BlockBackend *blk;

    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    memset(c, 0xc3, sizeof(c));
    assert_int_equal(create("size=4M", NULL, 0), 0);
    blk = open_failing(SLOT_SECTOR(1));
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0);
    iovector_init_buf(&qa, b, sizeof(b));
    iovector_init_buf(&qc, c, sizeof(c));
    start_held_write(blk, MiB, &qa, &da, "a1", "a2");   /* block 1 -> slot 1, held */
    assert_non_null(blk_aio_pwritev(blk, 2 * MiB, &qc, 0, aio_done_cb, &dc)); /* slot 2 */
    wait_done(blk, &dc);
    assert_int_equal(dc.ret, 0);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a2"), 0);
    wait_done(blk, &da);
    assert_int_equal(da.ret, -EIO);
    assert_block(blk, 1, 0, NULL, 0);
    assert_block(blk, 2, 0, c, sizeof(c));
    assert_check(blk, 1, 2);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_LEAKS), 0);
    assert_int_equal(res.leaks_fixed, 1);
    assert_check(blk, 0, 2);
    assert_block(blk, 0, 0, a, sizeof(a));
    assert_block(blk, 2, 0, c, sizeof(c));
    blk_unref(blk);
    assert_int_equal(file_size(), DATA_OFF + 2 * MiB);
    assert_qemu_clean(img);
}

/*
 * Leaves slot 1 leaked: block 0 in slot 0, block 2 in slot 2, block 1's
 * allocating write failed in slot 1 after block 2 took the next slot; then
 * fills slot 1 with stale bytes, as a torn write could have.
 */
static BlockBackend *open_with_leak(void)
{
    uint8_t a[4096], b[4096], c[4096], *junk = malloc(MiB);
    AioDone da = { 0 }, dc = { 0 };
    IOVector qa, qc;
    BlockBackend *blk;
    int fd;

    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    memset(c, 0xc3, sizeof(c));
    assert_int_equal(create("size=8M", NULL, 0), 0);
    blk = open_failing(SLOT_SECTOR(1));
    assert_int_equal(blk_pwrite(blk, 0, 4096, a, 0), 0);
    iovector_init_buf(&qa, b, sizeof(b));
    iovector_init_buf(&qc, c, sizeof(c));
    start_held_write(blk, MiB, &qa, &da, "a1", "a2");
    assert_non_null(blk_aio_pwritev(blk, 2 * MiB, &qc, 0, aio_done_cb, &dc));
    wait_done(blk, &dc);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a2"), 0);
    wait_done(blk, &da);
    assert_int_equal(da.ret, -EIO);
    assert_int_equal(dc.ret, 0);
    assert_int_equal(blk_flush(blk), 0);
    memset(junk, 0x5a, MiB);
    fd = open(img, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, MiB, SLOT_SECTOR(1) * 512), MiB);
    close(fd);
    free(junk);
    return blk;
}

/*
 * The next new block takes the leaked slot (zeroed first) rather than
 * growing the data: no leak is left, the file is no larger, qemu-img check
 * is clean. In the same session and after a reopen (the count comes from
 * the map then).
 */
static void test_vdi_leaked_slot_reused(void **state)
{
    uint8_t a[4096], c[4096], d[8192];
    BlockBackend *blk;
    StatusQuery q;

    memset(a, 0xa1, sizeof(a));
    memset(c, 0xc3, sizeof(c));
    memset(d, 0xd4, sizeof(d));
    for (int reopen = 0; reopen < 2; reopen++) {
        blk = open_with_leak();
        if (reopen) {
            blk_unref(blk);
            blk = open_vdi(BDRV_O_RDWR);
        }
        assert_check(blk, 1, 2);
        assert_int_equal(blk_pwrite(blk, 3 * MiB + 512, sizeof(d), d, 0), 0);
        assert_true(status(blk, 3 * MiB, MiB, &q) & BDRV_BLOCK_DATA);
        assert_int_equal(q.map, SLOT_SECTOR(1) * 512);
        assert_block(blk, 3, 512, d, sizeof(d));
        assert_check(blk, 0, 3);
        assert_int_equal(blk_pwrite(blk, 4 * MiB, 4096, a, 0), 0); /* a new slot: 3 */
        assert_true(status(blk, 4 * MiB, MiB, &q) & BDRV_BLOCK_DATA);
        assert_int_equal(q.map, SLOT_SECTOR(3) * 512);
        blk_unref(blk);
        assert_int_equal(file_size(), DATA_OFF + 4 * MiB);
        assert_qemu_clean(img);
        blk = open_vdi(0);
        assert_block(blk, 0, 0, a, sizeof(a));
        assert_block(blk, 1, 0, NULL, 0);
        assert_block(blk, 2, 0, c, sizeof(c));
        assert_block(blk, 3, 512, d, sizeof(d));
        assert_block(blk, 4, 0, a, sizeof(a));
        assert_check(blk, 0, 4);
        blk_unref(blk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vdi_create_and_rw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_create_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_concurrent_alloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_block_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_uuid_geometry_comment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_discard_and_zeroes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_compact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_crash_after_grow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_failed_alloc_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_alloc_joiner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_alloc_publish_before_joiner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_failed_alloc_joiner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_failed_alloc_leak, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vdi_leaked_slot_reused, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
