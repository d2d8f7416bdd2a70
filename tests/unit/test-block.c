/*
 * Unit tests: the graph (open, options, probing, node names, children,
 * backing chains, reopen, context moves) and BlockBackend (coroutine, plain
 * and callback APIs, drain, AIOCB cancellation).
 *
 * Backing chains use "testfmt", a tiny format defined here: sector 0 holds
 * "TESTFMT1", the backing file name at byte 16 and the backing format at
 * byte 272; guest data is stored 1:1 from byte 512 of the file, and a range
 * is "allocated" when its first byte in the file is non-zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <coblk/block-driver.h>

#include "drivers/protocol/file-int.h"

#define TF_HDR 512

/* ---------------------------------------------------------------------- */
/* testfmt */

static int testfmt_probe(const uint8_t *buf, int len, const char *filename)
{
    return len >= 8 && !memcmp(buf, "TESTFMT1", 8) ? 100 : 0;
}

static int testfmt_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    uint8_t hdr[TF_HDR];
    BlockBackend *blk;
    int ret;

    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY, false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    /* Open runs in plain code: use the plain-code reader of the child. */
    blk = blk_new_with_bs(bs->file->bs, errp);
    ret = blk_pread(blk, 0, TF_HDR, hdr, 0);
    blk_unref(blk);
    if (ret < 0) {
        error_setg_errno(errp, ret, "cannot read header");
        return ret;
    }
    if (memcmp(hdr, "TESTFMT1", 8)) {
        error_setg(errp, "bad magic");
        return -EINVAL;
    }
    hdr[271] = 0;
    hdr[303] = 0;
    snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", (char *)hdr + 16);
    snprintf(bs->backing_format, sizeof(bs->backing_format), "%.31s", (char *)hdr + 272);
    return 0;
}

static int64_t coroutine_fn testfmt_getlength(BlockDriverState *bs)
{
    int64_t len = bdrv_co_getlength(bs->file->bs);

    return len < TF_HDR ? 0 : len - TF_HDR;
}

/* The stored byte at guest offset: non-zero means "allocated here". */
static int coroutine_fn testfmt_first_byte(BlockDriverState *bs, int64_t offset)
{
    uint8_t first;
    IOVector one;
    int ret;

    iovector_init_buf(&one, &first, 1);
    ret = bdrv_co_preadv(bs->file, TF_HDR + offset, 1, &one, 0);
    return ret < 0 ? ret : first;
}

static int coroutine_fn testfmt_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    int first = testfmt_first_byte(bs, offset);

    if (first < 0) {
        return first;
    }
    if (first == 0 && bs->backing) {
        return bdrv_co_preadv_part(bs->backing, offset, bytes, qiov, qiov_offset, 0);
    }
    return bdrv_co_preadv_part(bs->file, TF_HDR + offset, bytes, qiov, qiov_offset, 0);
}

static int coroutine_fn testfmt_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    return bdrv_co_pwritev_part(bs->file, TF_HDR + offset, bytes, qiov, qiov_offset, 0);
}

static int coroutine_fn testfmt_block_status(BlockDriverState *bs, bool want_zero,
                                             int64_t offset, int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    int first = testfmt_first_byte(bs, offset);

    if (first < 0) {
        return first;
    }
    *pnum = 1;
    if (!first) {
        return 0;
    }
    *map = TF_HDR + offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
}

static const BlockDriver bdrv_testfmt = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "testfmt",
    .is_format = true,
    .supports_backing = true,
    .probe = testfmt_probe,
    .bdrv_open = testfmt_open,
    .co_getlength = testfmt_getlength,
    .co_preadv = testfmt_preadv,
    .co_pwritev = testfmt_pwritev,
    .co_block_status = testfmt_block_status,
};

/* ---------------------------------------------------------------------- */
/* flaky: a 64 KiB RAM protocol whose requests fail while flaky_errno != 0 */

static uint8_t flaky_ram[65536];
static int flaky_errno;
static int flaky_writes;           /* write calls the driver saw */
static int64_t flaky_write_bytes[16];
static int flaky_flushes;

static int flaky_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    char *fn = NULL;

    bopts_take_str(options, "filename", &fn, NULL);
    free(fn);
    return 0;
}

static int64_t coroutine_fn flaky_getlength(BlockDriverState *bs)
{
    return sizeof(flaky_ram);
}

static int coroutine_fn flaky_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    if (flaky_errno) {
        return -flaky_errno;
    }
    iovector_from_buf(qiov, qiov_offset, flaky_ram + offset, (size_t)bytes);
    return 0;
}

static int coroutine_fn flaky_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    if (flaky_errno) {
        return -flaky_errno;
    }
    flaky_write_bytes[flaky_writes++ % 16] = bytes;
    iovector_to_buf(qiov, qiov_offset, flaky_ram + offset, (size_t)bytes);
    return 0;
}

static int coroutine_fn flaky_flush(BlockDriverState *bs)
{
    flaky_flushes++;
    return flaky_errno ? -flaky_errno : 0;
}

/* With cache.direct=on the node reports a limit the request layer rejects. */
static bool flaky_bad_direct_limits;

static void flaky_refresh_limits(BlockDriverState *bs, Error **errp)
{
    if (flaky_bad_direct_limits && (bs->open_flags & BDRV_O_NOCACHE)) {
        bs->bl.request_alignment = 3;
    }
}

static int flaky_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                Error **errp)
{
    return 0;
}

static const BlockDriver bdrv_flaky = {
    .struct_size = sizeof(BlockDriver),
    .refresh_limits = flaky_refresh_limits,
    .reopen_prepare = flaky_reopen_prepare,
    .format_name = "flaky",
    .protocol_name = "flaky",
    .is_protocol = true,
    .bdrv_open = flaky_open,
    .co_getlength = flaky_getlength,
    .co_preadv = flaky_preadv,
    .co_pwritev = flaky_pwritev,
    .co_flush_to_disk = flaky_flush,
};

/* ---------------------------------------------------------------------- */
/* Helpers */

static char dir[2048];

static const char *path_of(const char *name)
{
    static char p[8][8192];
    static int i;

    i = (i + 1) % 8;
    snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
    return p[i];
}

static void make_file(const char *name, const void *data, size_t len, size_t size)
{
    int fd = open(path_of(name), O_CREAT | O_TRUNC | O_WRONLY, 0644);

    assert_true(fd >= 0);
    if (len) {
        assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
    }
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

/* A testfmt image with the given backing name/format and one data byte. */
static void make_testfmt(const char *name, const char *backing, const char *fmt,
                         int64_t data_at, uint8_t data)
{
    uint8_t img[TF_HDR + 4096] = { 0 };

    memcpy(img, "TESTFMT1", 8);
    if (backing) {
        snprintf((char *)img + 16, 256, "%s", backing);
    }
    if (fmt) {
        snprintf((char *)img + 272, 32, "%s", fmt);
    }
    if (data_at >= 0) {
        img[TF_HDR + data_at] = data;
    }
    make_file(name, img, sizeof(img), sizeof(img));
}

static BlockOpts *kv(const char *s)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    if (bopts_parse_keyval(o, s, NULL, &err) < 0) {
        fail_msg("keyval '%s': %s", s, error_get_pretty(err));
    }
    return o;
}

/* Opens and expects failure; returns the message (static storage). */
static const char *open_error(const char *filename, const char *opts, int flags)
{
    static char msg[1024];
    Error *err = NULL;
    BlockDriverState *bs = bdrv_open(filename, opts ? kv(opts) : NULL, flags, &err);

    assert_null(bs);
    assert_non_null(err);
    snprintf(msg, sizeof(msg), "%s", error_get_pretty(err));
    error_free(err);
    return msg;
}

static BlockDriverState *open_ok(const char *filename, const char *opts, int flags)
{
    Error *err = NULL;
    BlockDriverState *bs = bdrv_open(filename, opts ? kv(opts) : NULL, flags, &err);

    if (!bs) {
        fail_msg("open %s / %s: %s", filename ? filename : "-", opts ? opts : "-",
                 error_get_pretty(err));
    }
    return bs;
}

static int setup(void **state)
{
    const char *base = getenv("COBLK_TEST_DIR");
    static bool registered;

    snprintf(dir, sizeof(dir), "%s/test-block.XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    if (!registered) {
        assert_int_equal(bdrv_register(&bdrv_testfmt, NULL), 0);
        assert_int_equal(bdrv_register(&bdrv_flaky, NULL), 0);
        registered = true;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[4200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

/* ---------------------------------------------------------------------- */
/* Open and options */

static void test_block_open_null_by_url_and_options(void **state)
{
    BlockDriverState *a = open_ok("null-co://", NULL, BDRV_O_PROTOCOL);
    BlockDriverState *b = open_ok(NULL, "driver=null-co,size=1M,node-name=n1", 0);

    assert_string_equal(bdrv_get_format_name(a), "null-co");
    assert_int_equal(bdrv_getlength(a), 1LL << 30);
    assert_int_equal(bdrv_getlength(b), 1 << 20);
    assert_ptr_equal(bdrv_find_node("n1"), b);
    bdrv_unref(a);
    bdrv_unref(b);
    assert_null(bdrv_find_node("n1"));
}

static void test_block_open_option_errors_name_the_option(void **state)
{
    assert_string_equal(open_error(NULL, "driver=nope", 0), "Unknown driver 'nope'");
    assert_non_null(strstr(open_error(NULL, "driver=null-co,bogus=1", 0),
                           "Unknown option 'bogus'"));
    assert_non_null(strstr(open_error(NULL, "driver=null-co,read-only=maybe", 0),
                           "'read-only'"));
    assert_non_null(strstr(open_error(NULL, "driver=null-co,node-name=9x", 0),
                           "Invalid node-name: '9x'"));
    assert_non_null(strstr(open_error(NULL, "driver=null-co,detect-zeroes=unmap", 0),
                           "detect-zeroes to unmap"));
    assert_non_null(strstr(open_error(NULL, "driver=null-co,detect-zeroes=sometimes", 0),
                           "'detect-zeroes'"));
}

static void test_block_open_duplicate_node_name(void **state)
{
    BlockDriverState *a = open_ok(NULL, "driver=null-co,node-name=dup", 0);

    assert_non_null(strstr(open_error(NULL, "driver=null-co,node-name=dup", 0),
                           "Duplicate nodes with node-name='dup'"));
    bdrv_unref(a);
}

static void test_block_open_json_filename(void **state)
{
    BlockDriverState *bs = open_ok("json:{\"driver\": \"null-co\", \"size\": \"4096\", "
                                   "\"node-name\": \"js\"}",
                                   NULL, 0);

    assert_int_equal(bdrv_getlength(bs), 4096);
    assert_string_equal(bdrv_get_node_name(bs), "js");
    bdrv_unref(bs);
}

static void test_block_open_probes_raw_and_formats(void **state)
{
    BlockDriverState *bs;
    uint8_t data[4096];

    memset(data, 0xab, sizeof(data));
    make_file("plain.img", data, sizeof(data), sizeof(data));
    bs = open_ok(path_of("plain.img"), NULL, 0);
    assert_string_equal(bdrv_get_format_name(bs), "raw");
    assert_true(bs->probed);
    assert_string_equal(bdrv_get_format_name(bdrv_file_bs(bs)), "file");
    bdrv_unref(bs);

    make_testfmt("t.img", NULL, NULL, -1, 0);
    bs = open_ok(path_of("t.img"), NULL, 0);
    assert_string_equal(bdrv_get_format_name(bs), "testfmt");
    bdrv_unref(bs);
}

static void test_block_open_nonexistent_file(void **state)
{
    const char *msg = open_error(path_of("missing.img"), NULL, 0);

    assert_non_null(strstr(msg, "missing.img"));
    assert_non_null(strstr(msg, "No such file or directory"));
}

static void test_block_open_file_reference(void **state)
{
    BlockDriverState *file;
    BlockDriverState *bs;
    uint8_t data[512] = { 1 };

    make_file("ref.img", data, sizeof(data), sizeof(data));
    file = open_ok(path_of("ref.img"), "node-name=proto", BDRV_O_PROTOCOL);
    bs = open_ok(NULL, "driver=raw,file=proto", 0);
    assert_ptr_equal(bdrv_file_bs(bs), file);
    assert_int_equal(file->refcnt, 2);
    bdrv_unref(bs);
    assert_int_equal(file->refcnt, 1);
    bdrv_unref(file);
    assert_non_null(strstr(open_error(NULL, "driver=raw,file=nosuchnode", 0), "nosuchnode"));
}

/* ---------------------------------------------------------------------- */
/* Backing chains */

static void test_block_backing_reads_fall_through(void **state)
{
    BlockBackend *blk;
    Error *err = NULL;
    uint8_t buf[4];

    make_testfmt("base.img", NULL, NULL, 0, 0x11);
    make_testfmt("mid.img", "base.img", "testfmt", 1, 0x22);
    make_testfmt("top.img", "mid.img", NULL, 2, 0x33);
    blk = blk_new_open(path_of("top.img"), NULL, 0, &err);
    assert_non_null(blk);
    /* testfmt decides per request by its first byte: read byte by byte. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(blk_pread(blk, i, 1, buf + i, 0), 0);
    }
    assert_int_equal(buf[0], 0x11);
    assert_int_equal(buf[1], 0x22);
    assert_int_equal(buf[2], 0x33);
    assert_int_equal(buf[3], 0);
    assert_string_equal(blk_bs(blk)->auto_backing_file, path_of("mid.img"));
    assert_true(bdrv_is_read_only(bdrv_backing_bs(blk_bs(blk))));
    blk_unref(blk);
}

static void test_block_backing_loop_refused(void **state)
{
    make_testfmt("loop-a.img", "loop-b.img", NULL, -1, 0);
    make_testfmt("loop-b.img", "loop-a.img", NULL, -1, 0);
    assert_non_null(strstr(open_error(path_of("loop-a.img"), NULL, 0), "backing chain loop"));
}

static void test_block_backing_json_name_refused(void **state)
{
    make_testfmt("evil.img", "json:{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}", NULL,
                 -1, 0);
    assert_non_null(strstr(open_error(path_of("evil.img"), NULL, 0), "json:"));
}

/* The file node under format node bs: its aio= engine (test hook into file.c). */
static AioEngineType file_engine_of(BlockDriverState *bs)
{
    BlockDriverState *f = bdrv_file_bs(bs);
    BDRVFileState *s;

    assert_non_null(f);
    assert_string_equal(bdrv_get_format_name(f), "file");
    s = f->opaque;
    assert_non_null(s->engine);
    if (s->aio_type != AIO_ENGINE_AUTO) {
        assert_int_equal(aio_engine_type(s->engine), s->aio_type);
    }
    return s->aio_type;
}

/* qemu-img -i threads / -t unsafe: every file of the chain, opened from the
 * names in the headers, uses the engine and cache mode of the top. */
static void test_block_backing_inherits_aio_and_cache(void **state)
{
    int flags = BDRV_O_NO_FLUSH;
    BlockDriverState *bs, *b;
    BlockBackend *blk;
    Error *err = NULL;
    uint8_t buf[4];
    int depth = 0;

    make_testfmt("inh-base.img", NULL, NULL, 0, 0x11);
    make_testfmt("inh-mid.img", "inh-base.img", "testfmt", 1, 0x22);
    make_testfmt("inh-top.img", "inh-mid.img", NULL, 2, 0x33);
    assert_int_equal(bdrv_parse_aio("threads", &flags), 0);
    assert_int_equal(bdrv_parse_aio("bogus", &flags), -EINVAL);
    assert_int_equal(flags & BDRV_O_AIO_MASK, BDRV_O_AIO_THREADS);
    blk = blk_new_open(path_of("inh-top.img"), NULL, flags, &err);
    assert_non_null(blk);
    for (b = blk_bs(blk); b; b = bdrv_backing_bs(b), depth++) {
        assert_int_equal(file_engine_of(b), AIO_ENGINE_THREADS);
        assert_true(b->open_flags & BDRV_O_NO_FLUSH);
        assert_true(bdrv_file_bs(b)->open_flags & BDRV_O_NO_FLUSH);
    }
    assert_int_equal(depth, 3);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(blk_pread(blk, i, 1, buf + i, 0), 0);
    }
    assert_memory_equal(buf, "\x11\x22\x33\x00", 4);
    blk_unref(blk);

    /* An option set on the backing node wins over the inherited one, and
     * the image header still names the file. */
    bs = open_ok(path_of("inh-top.img"),
                 "backing.cache.no-flush=off,backing.file.aio=threads", BDRV_O_NO_FLUSH);
    b = bdrv_backing_bs(bs);
    assert_true(bs->open_flags & BDRV_O_NO_FLUSH);
    assert_false(b->open_flags & BDRV_O_NO_FLUSH);
    assert_false(bdrv_backing_bs(b)->open_flags & BDRV_O_NO_FLUSH);
    assert_string_equal(bdrv_get_filename(b), path_of("inh-mid.img"));
    assert_int_equal(file_engine_of(b), AIO_ENGINE_THREADS);
    assert_int_not_equal(file_engine_of(bs), AIO_ENGINE_THREADS);
    bdrv_unref(bs);
    /* Tuning options for a backing file the image does not have. */
    assert_non_null(strstr(open_error(path_of("inh-base.img"), "backing.cache.no-flush=on", 0),
                           "has no backing file"));
}

static void test_block_backing_untrusted_only_siblings(void **state)
{
    BlockDriverState *bs;

    make_testfmt("sib-base.img", NULL, NULL, -1, 0);
    make_testfmt("sib.img", "sib-base.img", NULL, -1, 0);
    make_testfmt("escape.img", "../escape-base.img", NULL, -1, 0);
    bs = open_ok(path_of("sib.img"), NULL, BDRV_O_UNTRUSTED);
    assert_non_null(bdrv_backing_bs(bs));
    bdrv_unref(bs);
    assert_non_null(strstr(open_error(path_of("escape.img"), NULL, BDRV_O_UNTRUSTED),
                           "not a sibling"));
    /* The same through the option, as tools pass it; a child cannot clear it. */
    assert_non_null(strstr(open_error(path_of("escape.img"), "untrusted=on", 0),
                           "not a sibling"));
    assert_non_null(strstr(open_error(path_of("sib.img"), "file.untrusted=off",
                                      BDRV_O_UNTRUSTED),
                           "untrusted=off is not allowed"));
}

static void test_block_backing_depth_limit(void **state)
{
    char name[64];
    char prev[64];

    make_testfmt("d0.img", NULL, NULL, -1, 0);
    for (int i = 1; i <= BDRV_MAX_BACKING_DEPTH + 1; i++) {
        snprintf(name, sizeof(name), "d%d.img", i);
        snprintf(prev, sizeof(prev), "d%d.img", i - 1);
        make_testfmt(name, prev, "testfmt", -1, 0);
    }
    const char *msg = open_error(path_of(name), NULL, 0);

    if (!strstr(msg, "deeper than")) {
        fail_msg("unexpected error: %.300s", msg);
    }
}

static void test_block_backing_disabled_by_option(void **state)
{
    BlockDriverState *bs;

    make_testfmt("nb-base.img", NULL, NULL, -1, 0);
    make_testfmt("nb.img", "nb-base.img", NULL, -1, 0);
    bs = open_ok(path_of("nb.img"), "backing=", 0);
    assert_null(bdrv_backing_bs(bs));
    bdrv_unref(bs);
    bs = open_ok(path_of("nb.img"), NULL, BDRV_O_NO_BACKING);
    assert_null(bdrv_backing_bs(bs));
    bdrv_unref(bs);
}

typedef struct StatusArgs {
    BlockDriverState *bs;
    int64_t offset;
    int64_t pnum;
    int depth;
    int ret;
    bool done;
} StatusArgs;

static void coroutine_fn status_co(void *opaque)
{
    StatusArgs *a = opaque;
    BlockDriverState *file = NULL;
    int64_t map = 0;

    a->ret = bdrv_co_block_status_above(a->bs, NULL, a->offset, 1, &a->pnum, &map, &file,
                                        &a->depth);
    a->done = true;
}

static StatusArgs status_of(BlockDriverState *bs, int64_t offset)
{
    StatusArgs a = { .bs = bs, .offset = offset, .depth = -1 };

    aio_co_enter(bdrv_get_aio_context(bs), coroutine_create(status_co, &a));
    while (!a.done) {
        aio_poll(bdrv_get_aio_context(bs), true);
    }
    return a;
}

static void test_block_status_above_chain(void **state)
{
    BlockDriverState *bs;
    StatusArgs a;

    make_testfmt("sa-base.img", NULL, NULL, 5, 0x55);
    make_testfmt("sa-top.img", "sa-base.img", NULL, 7, 0x77);
    bs = open_ok(path_of("sa-top.img"), NULL, 0);
    a = status_of(bs, 7); /* allocated in the top layer */
    assert_true(a.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(a.depth, 1);
    a = status_of(bs, 5); /* allocated one layer down */
    assert_true(a.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(a.depth, 2);
    a = status_of(bs, 6); /* nowhere */
    assert_false(a.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(a.depth, 0);
    bdrv_unref(bs);
}

/* ---------------------------------------------------------------------- */
/* Reopen and contexts */

static void test_block_reopen_read_only_and_back(void **state)
{
    uint8_t data[4096] = { 0 };
    BlockBackend *blk;
    Error *err = NULL;
    uint8_t buf[16];

    make_file("ro.img", data, sizeof(data), sizeof(data));
    blk = blk_new_open(path_of("ro.img"), kv("driver=raw"), BDRV_O_RDWR, &err);
    assert_non_null(blk);
    assert_int_equal(blk_pwrite(blk, 0, 4, "abcd", 0), 0);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, &err), 0);
    assert_true(blk_is_read_only(blk));
    assert_int_equal(blk_pwrite(blk, 0, 4, "wxyz", 0), -EPERM);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, &err), 0);
    assert_int_equal(blk_pwrite(blk, 4, 4, "efgh", 0), 0);
    assert_int_equal(blk_pread(blk, 0, 8, buf, 0), 0);
    assert_memory_equal(buf, "abcdefgh", 8);
    assert_int_equal(bdrv_reopen(blk_bs(blk), kv("bogus=1"), &err), -EINVAL);
    assert_non_null(strstr(error_get_pretty(err), "Unknown option 'bogus'"));
    error_free(err);
    blk_unref(blk);
}

/* A reopen whose new limits are invalid fails and leaves the old mode in place. */
static void test_block_reopen_bad_limits_restores_old_mode(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky,filename=x"), BDRV_O_RDWR, NULL);
    Error *err = NULL;
    uint8_t buf[3];

    assert_non_null(blk);
    flaky_bad_direct_limits = true;
    assert_true(bdrv_reopen(blk_bs(blk), kv("cache.direct=on"), &err) < 0);
    flaky_bad_direct_limits = false;
    assert_non_null(err);
    error_free(err);
    assert_false(blk_bs(blk)->open_flags & BDRV_O_NOCACHE);
    assert_false(blk_is_read_only(blk));
    /* The old limits are back: a 3-byte write at an odd offset works. */
    assert_int_equal(blk_pwrite(blk, 5, 3, "xyz", 0), 0);
    assert_int_equal(blk_pread(blk, 5, 3, buf, 0), 0);
    assert_memory_equal(buf, "xyz", 3);
    blk_unref(blk);
}

static void test_block_move_to_iothread_and_back(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M,read-zeroes=on"), 0,
                                     NULL);
    IOThread *t = iothread_new("blk", NULL);
    AioContext *main_ctx = blk_get_aio_context(blk);
    AioContext *io_ctx = iothread_get_aio_context(t);
    Error *err = NULL;

    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), io_ctx, &err), 0);
    assert_ptr_equal(blk_get_aio_context(blk), io_ctx);
    assert_ptr_equal(bdrv_get_aio_context(blk_bs(blk)), io_ctx);
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), main_ctx, &err), 0);
    assert_ptr_equal(blk_get_aio_context(blk), main_ctx);
    iothread_join(t);
    blk_unref(blk);
}

/* A read that the IOThread has in flight while this thread moves the node back. */
typedef struct SlowRead {
    BlockBackend *blk;
    uint8_t buf[512];
    atomic_int state; /* 0: queued, 1: running in the IOThread, 2: done */
    int ret;
} SlowRead;

static void coroutine_fn slow_read_co(void *opaque)
{
    SlowRead *r = opaque;
    IOVector qiov;

    atomic_store(&r->state, 1);
    iovector_init_buf(&qiov, r->buf, sizeof(r->buf));
    r->ret = blk_co_preadv(r->blk, 0, sizeof(r->buf), &qiov, 0);
    atomic_store(&r->state, 2);
}

/*
 * Draining a node that an IOThread runs, from another thread, while a request
 * is in flight there: the drain waits for the request without polling the
 * IOThread's context (two threads in one loop; and the caller would take that
 * loop for its own, so its later notifications to it, such as the stop of
 * iothread_join(), would be skipped and the join would hang).
 */
static void test_block_move_back_waits_for_iothread_request(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M,read-zeroes=on,"
                                              "latency-ns=200000000"), 0, NULL);
    IOThread *t = iothread_new("blk", NULL);
    AioContext *main_ctx = blk_get_aio_context(blk);
    AioContext *io_ctx = iothread_get_aio_context(t);
    SlowRead r = { .blk = blk };

    assert_ptr_equal(aio_context_current(), main_ctx);
    memset(r.buf, 0xaa, sizeof(r.buf));
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), io_ctx, NULL), 0);
    aio_co_schedule(io_ctx, coroutine_create(slow_read_co, &r));
    /* Wait until the read is in flight (it takes 200 ms, so it still is below). */
    while (atomic_load(&r.state) != 2 &&
           !(atomic_load(&r.state) == 1 && bdrv_get_in_flight(blk_bs(blk)) > 0)) {
        usleep(100);
    }
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), main_ctx, NULL), 0);
    assert_int_equal(atomic_load(&r.state), 2);
    assert_int_equal(r.ret, 0);
    assert_int_equal(r.buf[0], 0);
    assert_ptr_equal(aio_context_current(), main_ctx);
    iothread_join(t); /* hung when the drain had polled io_ctx from here */
    blk_unref(blk);
}

/* An aio request submitted inside an IOThread, and a cancel asked from there. */
typedef struct IoThreadAio {
    BlockBackend *blk;
    uint8_t buf[4096];
    IOVector qiov;
    BlockAIOCB *_Atomic acb;
    atomic_int calls;
    atomic_int ret;
} IoThreadAio;

static void iothread_aio_cb(void *opaque, int ret)
{
    IoThreadAio *a = opaque;

    atomic_store(&a->ret, ret);
    atomic_fetch_add(&a->calls, 1);
}

static void iothread_aio_submit_bh(void *opaque)
{
    IoThreadAio *a = opaque;

    iovector_init_buf(&a->qiov, a->buf, sizeof(a->buf));
    atomic_store(&a->acb, blk_aio_preadv(a->blk, 0, &a->qiov, 0, iothread_aio_cb, a));
}

static void iothread_aio_cancel_bh(void *opaque)
{
    blk_aio_cancel_async(atomic_load(&((IoThreadAio *)opaque)->acb));
}

/*
 * blk_aio_cancel() waits by running blk's loop, so only blk's own thread may
 * call it: from another thread it stops with a message instead of running an
 * IOThread's loop (which hung before). The supported way, cancel_async in a
 * bottom half of that context, delivers the callback exactly once.
 */
static void test_block_aio_cancel_from_foreign_thread(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M,read-zeroes=on,"
                                              "latency-ns=100000000"), 0, NULL);
    IOThread *t = iothread_new("aio", NULL);
    AioContext *main_ctx = blk_get_aio_context(blk);
    AioContext *io_ctx = iothread_get_aio_context(t);
    IoThreadAio a = { .blk = blk };
    pid_t pid;
    int status;

    memset(a.buf, 0xaa, sizeof(a.buf));
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), io_ctx, NULL), 0);
    aio_bh_schedule_oneshot(io_ctx, iothread_aio_submit_bh, &a);
    while (!atomic_load(&a.acb)) {
        usleep(100);
    }
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The IOThread does not exist in the child; the check comes first. */
        freopen("/dev/null", "w", stderr);
        blk_aio_cancel(atomic_load(&a.acb));
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);

    aio_bh_schedule_oneshot(io_ctx, iothread_aio_cancel_bh, &a);
    while (!atomic_load(&a.calls)) {
        usleep(100);
    }
    usleep(20000);
    assert_int_equal(atomic_load(&a.calls), 1);
    assert_int_equal(atomic_load(&a.ret), 0); /* already in flight: its real result */
    assert_int_equal(a.buf[0], 0);
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), main_ctx, NULL), 0);
    iothread_join(t);
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* BlockBackend callback API */

typedef struct Done {
    int calls;
    int ret;
} Done;

static void done_cb(void *opaque, int ret)
{
    Done *d = opaque;

    d->calls++;
    d->ret = ret;
}

static void test_block_aio_completes_once_later(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M,read-zeroes=on"), 0,
                                     NULL);
    uint8_t buf[4096];
    IOVector qiov;
    Done d = { 0 };

    memset(buf, 0xff, sizeof(buf));
    iovector_init_buf(&qiov, buf, sizeof(buf));
    blk_aio_preadv(blk, 0, &qiov, 0, done_cb, &d);
    assert_int_equal(d.calls, 0); /* never inside the submitting call */
    while (!d.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(d.ret, 0);
    assert_int_equal(buf[100], 0);
    for (int i = 0; i < 10; i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
    assert_int_equal(d.calls, 1);
    blk_unref(blk);
}

static void test_block_aio_errors_come_through_callback(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M"), 0, NULL);
    uint8_t buf[512];
    IOVector qiov;
    Done d = { 0 };

    iovector_init_buf(&qiov, buf, sizeof(buf));
    blk_aio_pwritev(blk, 0, &qiov, 0, done_cb, &d); /* read-only node */
    while (!d.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(d.ret, -EPERM);
    d.calls = 0;
    blk_aio_readv_sectors(blk, -5, &qiov, 1, done_cb, &d);
    while (!d.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(d.ret, -EINVAL);
    blk_unref(blk);
}

static void test_block_aio_cancel_queued_behind_drain(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=null-co,size=1M,read-zeroes=on"), 0,
                                     NULL);
    uint8_t buf[512];
    IOVector qiov;
    Done a = { 0 };
    Done b = { 0 };
    BlockAIOCB *acb;

    iovector_init_buf(&qiov, buf, sizeof(buf));
    bdrv_drained_begin(blk_bs(blk));
    acb = blk_aio_preadv(blk, 0, &qiov, 0, done_cb, &a);
    blk_aio_preadv(blk, 512, &qiov, 0, done_cb, &b);
    blk_aio_cancel(acb); /* waits for the callback */
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.ret, -ECANCELED);
    assert_int_equal(b.calls, 0); /* still held by the drain */
    bdrv_drained_end(blk_bs(blk));
    while (!b.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(b.ret, 0);
    blk_unref(blk);
}

static void test_block_aio_cancel_in_flight_gets_real_result(void **state)
{
    BlockBackend *blk = blk_new_open(
        NULL, kv("driver=null-co,size=1M,read-zeroes=on,latency-ns=2000000"), 0, NULL);
    uint8_t buf[512];
    IOVector qiov;
    Done d = { 0 };
    BlockAIOCB *acb;

    iovector_init_buf(&qiov, buf, sizeof(buf));
    acb = blk_aio_preadv(blk, 0, &qiov, 0, done_cb, &d);
    blk_aio_cancel(acb);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.ret, 0);
    blk_unref(blk);
}

static void test_block_drain_waits_for_in_flight(void **state)
{
    BlockBackend *blk = blk_new_open(
        NULL, kv("driver=null-co,size=1M,read-zeroes=on,latency-ns=1000000"), 0, NULL);
    uint8_t buf[8][512];
    IOVector qiov[8];
    Done d[8] = { { 0 } };

    for (int i = 0; i < 8; i++) {
        iovector_init_buf(&qiov[i], buf[i], 512);
        blk_aio_preadv(blk, i * 512, &qiov[i], 0, done_cb, &d[i]);
    }
    bdrv_drained_begin(blk_bs(blk));
    assert_int_equal(bdrv_get_in_flight(blk_bs(blk)), 0);
    bdrv_drained_end(blk_bs(blk));
    blk_unref(blk); /* also waits for the completion callbacks */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].ret, 0);
    }
}

/* ---------------------------------------------------------------------- */
/* Statistics and error policy */

static void test_block_stats_count_requests(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky,read-only=off"), BDRV_O_RDWR,
                                     NULL);
    BlockAcctStats st;
    uint8_t buf[4096] = { 0 };
    char *json;

    flaky_errno = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(blk_pwrite(blk, i * 4096, 4096, buf, 0), 0);
    }
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    flaky_errno = EIO;
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), -EIO);
    flaky_errno = 0;
    blk_get_stats(blk, &st);
    assert_int_equal(st.nr_ops[BLOCK_ACCT_WRITE], 3);
    assert_int_equal(st.nr_bytes[BLOCK_ACCT_WRITE], 3 * 4096);
    assert_int_equal(st.nr_ops[BLOCK_ACCT_READ], 1);
    assert_int_equal(st.failed_ops[BLOCK_ACCT_READ], 1);
    assert_int_equal(st.wr_highest_offset, 3 * 4096);
    json = blk_stats_to_json(blk);
    assert_non_null(strstr(json, "\"wr_operations\": 3"));
    assert_non_null(strstr(json, "\"failed_rd_operations\": 1"));
    free(json);
    blk_unref(blk);
}

typedef struct Events {
    int n;
    BlockErrorAction last;
    int error;
} Events;

static void on_error_event(void *opaque, BlockBackend *blk, bool is_read, int error,
                           BlockErrorAction action)
{
    Events *e = opaque;

    e->n++;
    e->last = action;
    e->error = error;
}

static void test_block_error_policy_enospc_stops_and_resumes(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    uint8_t data[512];
    uint8_t back[512];
    IOVector qiov;
    Events ev = { 0 };
    Done d = { 0 };

    memset(data, 0x5a, sizeof(data));
    iovector_init_buf(&qiov, data, sizeof(data));
    blk_set_on_error(blk, BLOCK_ERROR_ACTION_REPORT, BLOCK_ERROR_ACTION_ENOSPC);
    blk_set_error_event(blk, on_error_event, &ev);
    flaky_errno = ENOSPC;
    blk_aio_pwritev(blk, 1024, &qiov, 0, done_cb, &d);
    while (ev.n == 0) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(ev.last, BLOCK_ERROR_ACTION_STOP);
    assert_int_equal(ev.error, ENOSPC);
    assert_int_equal(blk_iostatus(blk), BLOCK_IOSTATUS_NOSPACE);
    assert_int_equal(blk_stopped_requests(blk), 1);
    assert_int_equal(d.calls, 0); /* held, not failed */
    flaky_errno = 0;                /* the "disk" got space */
    blk_resume(blk);
    while (!d.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(d.ret, 0);
    assert_int_equal(blk_iostatus(blk), BLOCK_IOSTATUS_OK);
    assert_int_equal(blk_pread(blk, 1024, 512, back, 0), 0);
    assert_memory_equal(back, data, 512);
    /* ENOSPC policy reports other errors. */
    flaky_errno = EIO;
    assert_int_equal(blk_pwrite(blk, 0, 512, data, 0), -EIO);
    assert_int_equal(ev.last, BLOCK_ERROR_ACTION_REPORT);
    flaky_errno = 0;
    blk_unref(blk);
}

static void test_block_error_policy_ignore(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    BlockErrorAction a;
    Error *err = NULL;
    uint8_t buf[512];

    assert_int_equal(blk_parse_error_action("ignore", true, &a, NULL), 0);
    assert_int_equal(blk_parse_error_action("enospc", true, &a, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "'enospc' invalid read error action");
    error_free(err);
    blk_set_on_error(blk, BLOCK_ERROR_ACTION_IGNORE, BLOCK_ERROR_ACTION_REPORT);
    flaky_errno = EIO;
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EIO);
    flaky_errno = 0;
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* Plugging, merging, write cache */

static void test_block_plug_merges_adjacent_writes(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    uint8_t data[5][4096];
    uint8_t back[20480];
    IOVector qiov[5];
    Done d[5] = { { 0 } };
    int64_t offsets[5] = { 8192, 12288, 16384, 20480, 40960 };
    BlockAcctStats st;

    flaky_errno = 0;
    flaky_writes = 0;
    for (int i = 0; i < 5; i++) {
        memset(data[i], 'a' + i, 4096);
        iovector_init_buf(&qiov[i], data[i], 4096);
    }
    blk_io_plug(blk);
    for (int i = 0; i < 5; i++) {
        blk_aio_pwritev(blk, offsets[i], &qiov[i], 0, done_cb, &d[i]);
    }
    assert_int_equal(flaky_writes, 0); /* held while plugged */
    blk_io_unplug(blk);
    for (int i = 0; i < 5; i++) {
        while (!d[i].calls) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].ret, 0);
    }
    /* Four adjacent writes became one 16 KiB write; the fifth stayed alone. */
    assert_int_equal(flaky_writes, 2);
    assert_int_equal(flaky_write_bytes[0], 16384);
    assert_int_equal(flaky_write_bytes[1], 4096);
    blk_get_stats(blk, &st);
    assert_int_equal(st.merged_ops[BLOCK_ACCT_WRITE], 3);
    assert_int_equal(blk_pread(blk, 8192, 16384, back, 0), 0);
    for (int i = 0; i < 4; i++) {
        assert_memory_equal(back + i * 4096, data[i], 4096);
    }
    blk_unref(blk);
}

static void test_block_cancel_plugged_request(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    uint8_t data[512] = { 1 };
    IOVector qiov;
    Done d = { 0 };
    BlockAIOCB *acb;

    flaky_writes = 0;
    iovector_init_buf(&qiov, data, sizeof(data));
    blk_io_plug(blk);
    acb = blk_aio_pwritev(blk, 0, &qiov, 0, done_cb, &d);
    blk_aio_cancel(acb);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.ret, -ECANCELED);
    blk_io_unplug(blk);
    assert_int_equal(flaky_writes, 0);
    blk_unref(blk);
}

static void test_block_writethrough_flushes_every_write(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    uint8_t data[512] = { 2 };

    flaky_flushes = 0;
    assert_true(blk_enable_write_cache(blk));
    assert_int_equal(blk_pwrite(blk, 0, 512, data, 0), 0);
    assert_int_equal(flaky_flushes, 0);
    blk_set_enable_write_cache(blk, false);
    assert_int_equal(blk_pwrite(blk, 512, 512, data, 0), 0);
    assert_int_equal(blk_pwrite(blk, 1024, 512, data, 0), 0);
    assert_int_equal(flaky_flushes, 2);
    blk_unref(blk);
}

static void test_block_classic_sector_aio_on_a_node(void **state)
{
    BlockDriverState *bs = open_ok(NULL, "driver=flaky", BDRV_O_RDWR);
    uint8_t data[1024];
    uint8_t back[1024] = { 0 };
    IOVector wq;
    IOVector rq;
    Done w = { 0 };
    Done r = { 0 };
    Done bad = { 0 };

    flaky_errno = 0;
    memset(data, 0x3c, sizeof(data));
    iovector_init_buf(&wq, data, sizeof(data));
    iovector_init_buf(&rq, back, sizeof(back));
    bdrv_aio_writev(bs, 4, &wq, 2, done_cb, &w); /* sectors 4-5 */
    while (!w.calls) {
        aio_poll(bdrv_get_aio_context(bs), true);
    }
    assert_int_equal(w.ret, 0);
    bdrv_aio_readv(bs, 4, &rq, 2, done_cb, &r);
    while (!r.calls) {
        aio_poll(bdrv_get_aio_context(bs), true);
    }
    assert_int_equal(r.ret, 0);
    assert_memory_equal(back, data, sizeof(data));
    assert_memory_equal(flaky_ram + 2048, data, sizeof(data));
    /* More sectors than the vector holds: an error through the callback. */
    bdrv_aio_readv(bs, 0, &rq, 3, done_cb, &bad);
    while (!bad.calls) {
        aio_poll(bdrv_get_aio_context(bs), true);
    }
    assert_int_equal(bad.ret, -EINVAL);
    assert_int_equal(bs->refcnt, 1); /* the internal BlockBackend holds no reference */
    bdrv_unref(bs);
}

static void test_block_refuses_graph_cycles(void **state)
{
    assert_non_null(strstr(open_error(NULL, "driver=raw,node-name=selfref,file=selfref", 0),
                           "would create a cycle"));
    assert_null(bdrv_find_node("selfref")); /* nothing left behind */
}

static void test_block_unref_with_plugged_and_drained_requests(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    BlockDriverState *bs = blk_bs(blk);
    uint8_t data[512] = { 7 };
    IOVector qiov;
    Done plugged = { 0 };
    Done parked = { 0 };

    flaky_errno = 0;
    iovector_init_buf(&qiov, data, sizeof(data));
    bdrv_ref(bs); /* keep the node for the second half */
    blk_io_plug(blk);
    blk_aio_pwritev(blk, 0, &qiov, 0, done_cb, &plugged);
    blk_unref(blk); /* no unplug: the held write still runs */
    assert_int_equal(plugged.calls, 1);
    assert_int_equal(plugged.ret, 0);

    blk = blk_new_with_bs(bs, NULL);
    bdrv_drained_begin(bs);
    blk_aio_preadv(blk, 0, &qiov, 0, done_cb, &parked);
    blk_unref(blk); /* under a drain that stays: the parked read fails, no hang */
    assert_int_equal(parked.calls, 1);
    assert_int_equal(parked.ret, -ECANCELED);
    bdrv_drained_end(bs);
    bdrv_unref(bs);
}

static void test_block_sync_io_on_a_graph_in_an_iothread(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    IOThread *t = iothread_new("sync", NULL);
    AioContext *main_ctx = blk_get_aio_context(blk);
    uint8_t data[512];
    uint8_t back[512];

    flaky_errno = 0;
    memset(data, 0x6d, sizeof(data));
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), iothread_get_aio_context(t),
                                                 NULL),
                     0);
    /* Runs in the IOThread; this thread only waits. */
    assert_int_equal(blk_pwrite(blk, 512, 512, data, 0), 0);
    assert_int_equal(blk_pread(blk, 512, 512, back, 0), 0);
    assert_memory_equal(back, data, 512);
    /* Moving back is done from here while the IOThread is idle. */
    assert_int_equal(bdrv_try_change_aio_context(blk_bs(blk), main_ctx, NULL), 0);
    iothread_join(t);
    blk_unref(blk);
}

static void test_block_cancel_merged_leader_keeps_group(void **state)
{
    BlockBackend *blk = blk_new_open(NULL, kv("driver=flaky"), BDRV_O_RDWR, NULL);
    uint8_t a[512];
    uint8_t b[512];
    IOVector qa;
    IOVector qb;
    Done da = { 0 };
    Done db = { 0 };
    BlockAIOCB *leader;

    flaky_errno = 0;
    memset(a, 0x41, sizeof(a));
    memset(b, 0x42, sizeof(b));
    iovector_init_buf(&qa, a, sizeof(a));
    iovector_init_buf(&qb, b, sizeof(b));
    bdrv_drained_begin(blk_bs(blk));
    blk_io_plug(blk);
    leader = blk_aio_pwritev(blk, 4096, &qa, 0, done_cb, &da);
    blk_aio_pwritev(blk, 4608, &qb, 0, done_cb, &db);
    blk_io_unplug(blk); /* merged, then parked behind the drain */
    blk_aio_cancel_async(leader);
    bdrv_drained_end(blk_bs(blk));
    while (!da.calls || !db.calls) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    /* The member was not cancelled, so the merged write ran for both. */
    assert_int_equal(db.ret, 0);
    assert_int_equal(da.ret, 0);
    assert_memory_equal(flaky_ram + 4608, b, sizeof(b));
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_open_null_by_url_and_options),
        cmocka_unit_test(test_block_open_option_errors_name_the_option),
        cmocka_unit_test(test_block_open_duplicate_node_name),
        cmocka_unit_test(test_block_open_json_filename),
        cmocka_unit_test(test_block_open_probes_raw_and_formats),
        cmocka_unit_test(test_block_open_nonexistent_file),
        cmocka_unit_test(test_block_open_file_reference),
        cmocka_unit_test(test_block_backing_reads_fall_through),
        cmocka_unit_test(test_block_backing_loop_refused),
        cmocka_unit_test(test_block_backing_json_name_refused),
        cmocka_unit_test(test_block_backing_untrusted_only_siblings),
        cmocka_unit_test(test_block_backing_inherits_aio_and_cache),
        cmocka_unit_test(test_block_backing_depth_limit),
        cmocka_unit_test(test_block_backing_disabled_by_option),
        cmocka_unit_test(test_block_status_above_chain),
        cmocka_unit_test(test_block_reopen_read_only_and_back),
        cmocka_unit_test(test_block_reopen_bad_limits_restores_old_mode),
        cmocka_unit_test(test_block_move_to_iothread_and_back),
        cmocka_unit_test(test_block_move_back_waits_for_iothread_request),
        cmocka_unit_test(test_block_aio_cancel_from_foreign_thread),
        cmocka_unit_test(test_block_aio_completes_once_later),
        cmocka_unit_test(test_block_aio_errors_come_through_callback),
        cmocka_unit_test(test_block_aio_cancel_queued_behind_drain),
        cmocka_unit_test(test_block_aio_cancel_in_flight_gets_real_result),
        cmocka_unit_test(test_block_drain_waits_for_in_flight),
        cmocka_unit_test(test_block_stats_count_requests),
        cmocka_unit_test(test_block_error_policy_enospc_stops_and_resumes),
        cmocka_unit_test(test_block_error_policy_ignore),
        cmocka_unit_test(test_block_plug_merges_adjacent_writes),
        cmocka_unit_test(test_block_cancel_plugged_request),
        cmocka_unit_test(test_block_writethrough_flushes_every_write),
        cmocka_unit_test(test_block_classic_sector_aio_on_a_node),
        cmocka_unit_test(test_block_refuses_graph_cycles),
        cmocka_unit_test(test_block_unref_with_plugged_and_drained_requests),
        cmocka_unit_test(test_block_sync_io_on_a_graph_in_an_iothread),
        cmocka_unit_test(test_block_cancel_merged_leader_keeps_group),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
