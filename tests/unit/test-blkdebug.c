/*
 * Unit tests: the blkdebug fault-injection filter (drivers/protocol/blkdebug.c):
 * rules from options and from a config file, events from the request layer,
 * state transitions, sector and iotype filters, breakpoints, align=.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

static char img[4096];
static char conf[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "blkdebug");
    drv_test_path(conf, sizeof(conf), "blkdebug-conf");
    drv_test_make_file(img, 1 << 20, 0);
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(conf);
    return 0;
}

static BlockBackend *open_dbg(const char *rules)
{
    char opts[8192];

    drv_test_make_file(img, 1 << 20, 0); /* every test starts from zeroes */
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s%s%s",
             img, rules[0] ? "," : "", rules);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* after=K lets K matching requests pass; once=on then fails only the next one. */
static void test_blkdebug_after(void **state)
{
    BlockBackend *blk = open_dbg("inject-error.0.event=none,inject-error.0.iotype=write,"
                                 "inject-error.0.after=2,inject-error.0.once=on,"
                                 "inject-error.0.errno=28,"
                                 "inject-error.1.event=none,inject-error.1.iotype=flush,"
                                 "inject-error.1.after=1");
    uint8_t buf[512], back[512];

    for (int i = 0; i < 5; i++) {
        memset(buf, i + 1, sizeof(buf));
        /* writes 0 and 1 pass, write 2 fails with ENOSPC, the later ones pass */
        assert_int_equal(blk_pwrite(blk, i * 512, 512, buf, 0), i == 2 ? -ENOSPC : 0);
        assert_int_equal(blk_pread(blk, i * 512, 512, back, 0), 0);
        memset(buf, i == 2 ? 0 : i + 1, sizeof(buf));
        assert_memory_equal(back, buf, 512);
    }
    /*
     * Reads did not count; flush 0 passes, every flush after it fails (no
     * once). A write before each flush, or the request layer skips it.
     */
    assert_int_equal(blk_flush(blk), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
        assert_int_equal(blk_flush(blk), -EIO);
    }
    blk_unref(blk);
}

/* An error armed by the request layer's own pwritev event fails that write, once. */
static void test_blkdebug_once_on_pwritev(void **state)
{
    BlockBackend *blk = open_dbg("inject-error.0.event=pwritev,inject-error.0.errno=28,"
                                 "inject-error.0.once=on,inject-error.0.iotype=write");
    uint8_t buf[512] = { 7 }, back[512];

    assert_int_equal(blk_pread(blk, 0, 512, back, 0), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -ENOSPC);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 512, back, 0), 0);
    assert_memory_equal(back, buf, 512);
    blk_unref(blk);
}

/* event=none is armed from the start; sector limits the rule to one sector. */
static void test_blkdebug_sector_filter(void **state)
{
    BlockBackend *blk = open_dbg("inject-error.0.event=none,inject-error.0.sector=8,"
                                 "inject-error.0.iotype=read");
    uint8_t buf[4096];

    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 4096, 512, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 3584, 1024, buf, 0), -EIO); /* overlaps sector 8 */
    assert_int_equal(blk_pread(blk, 4608, 512, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 4096, 512, buf, 0), 0);    /* writes not matched */
    blk_unref(blk);
}

/* set-state on flush; the rule only applies in state 2. */
static void test_blkdebug_state_machine(void **state)
{
    BlockBackend *blk = open_dbg("set-state.0.event=flush_to_os,set-state.0.state=1,"
                                 "set-state.0.new_state=2,"
                                 "inject-error.0.event=none,inject-error.0.state=2,"
                                 "inject-error.0.iotype=write");
    uint8_t buf[512] = { 1 };

    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    blk_unref(blk);
}

static void write_conf(const char *text)
{
    FILE *f = fopen(conf, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The config file and the "blkdebug:conf:image" filename syntax. */
static void test_blkdebug_config_file(void **state)
{
    char fn[9000];
    BlockBackend *blk;
    Error *err = NULL;
    uint8_t buf[512] = { 0 };

    write_conf("# fail flushes\n[inject-error]\nevent = \"none\"\niotype = \"flush\"\n"
               "errno = \"5\"\n\n[set-state]\nevent = \"pwritev\"\nnew_state = \"3\"\n");
    snprintf(fn, sizeof(fn), "blkdebug:%s:%s", conf, img);
    blk = blk_new_open(fn, NULL, BDRV_O_RDWR | BDRV_O_PROTOCOL, &err);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "blkdebug");
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_flush(blk), -EIO);
    blk_unref(blk);
}

static void test_blkdebug_bad_rules(void **state)
{
    char opts[9000];

    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "inject-error.0.event=no_such_event");
    drv_test_open_fails(opts, 0, "unknown event 'no_such_event'");
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "inject-error.0.event=none,inject-error.0.errno=0");
    drv_test_open_fails(opts, 0, "errno 0 out of range");
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "inject-error.0.event=none,inject-error.0.iotype=sideways");
    drv_test_open_fails(opts, 0, "unknown iotype 'sideways'");
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "inject-error.0.event=none,inject-error.0.after=-1");
    drv_test_open_fails(opts, 0, "after -1 is negative");
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "set-state.0.event=none");
    drv_test_open_fails(opts, 0, "new_state must be a positive number");
    snprintf(opts, sizeof(opts), "driver=blkdebug,image.driver=file,image.filename=%s,%s", img,
             "align=3");
    drv_test_open_fails(opts, 0, "align 3 must be a power of two");

    write_conf("[inject-error]\nevent = \"none\"\nbogus = \"1\"\n");
    snprintf(opts, sizeof(opts), "driver=blkdebug,config=%s,image.driver=file,image.filename=%s",
             conf, img);
    drv_test_open_fails(opts, 0, "Unknown option 'bogus'");
    write_conf("[surprise]\n");
    drv_test_open_fails(opts, 0, "unknown section [surprise]");
    write_conf("event = \"none\"\n");
    drv_test_open_fails(opts, 0, "inside a section");
    snprintf(opts, sizeof(opts), "driver=blkdebug,config=/nonexistent/x.conf,"
             "image.driver=file,image.filename=%s", img);
    drv_test_open_fails(opts, 0, "cannot open config '/nonexistent/x.conf'");
}

typedef struct AioDone {
    int ret;
    bool done;
} AioDone;

static void aio_done_cb(void *opaque, int ret)
{
    AioDone *d = opaque;

    d->ret = ret;
    d->done = true;
}

/* A breakpoint holds a write inside the request until resumed. */
static void test_blkdebug_breakpoint(void **state)
{
    BlockBackend *blk = open_dbg("");
    BlockDriverState *bs = blk_bs(blk);
    AioContext *ctx = blk_get_aio_context(blk);
    uint8_t buf[512], back[512];
    AioDone d = { 0 };
    IOVector qiov;

    memset(buf, 0x5c, sizeof(buf));
    assert_int_equal(bdrv_debug_breakpoint(bs, "pwritev", "w1"), 0);
    assert_int_equal(bdrv_debug_breakpoint(bs, "pwritev", "w1"), -EINVAL); /* tag in use */
    assert_int_equal(bdrv_debug_breakpoint(bs, "nonsense", "w2"), -EINVAL);
    iovector_init_buf(&qiov, buf, sizeof(buf));
    assert_non_null(blk_aio_pwritev(blk, 0, &qiov, 0, aio_done_cb, &d));
    for (int i = 0; i < 100 && !bdrv_debug_is_suspended(bs, "w1"); i++) {
        aio_poll(ctx, false);
    }
    assert_true(bdrv_debug_is_suspended(bs, "w1"));
    for (int i = 0; i < 10; i++) {
        aio_poll(ctx, false);
    }
    assert_false(d.done);
    assert_int_equal(bdrv_debug_resume(bs, "w1"), 0);
    while (!d.done) {
        aio_poll(ctx, true);
    }
    assert_int_equal(d.ret, 0);
    assert_false(bdrv_debug_is_suspended(bs, "w1"));
    assert_int_equal(bdrv_debug_resume(bs, "w1"), -ENOENT);
    assert_int_equal(blk_pread(blk, 0, 512, back, 0), 0);
    assert_memory_equal(back, buf, 512);
    blk_unref(blk);

    /* No blkdebug node below: the API says so. */
    blk = drv_test_open_ok("driver=null-co", 0);
    assert_int_equal(bdrv_debug_breakpoint(blk_bs(blk), "pwritev", "x"), -ENOTSUP);
    blk_unref(blk);
}

/* align= forces read-modify-write of the neighbours, and the RMW events fire. */
static void test_blkdebug_align_rmw(void **state)
{
    BlockBackend *blk = open_dbg("align=4096,inject-error.0.event=pwritev_rmw_head,"
                                 "inject-error.0.iotype=read,inject-error.0.once=on");
    uint8_t buf[100], back[4096], want[4096] = { 0 };

    assert_int_equal(blk_bs(blk)->bl.request_alignment, 4096);
    memset(buf, 0x11, sizeof(buf));
    /* The padding read fails once: the write fails and writes nothing. */
    assert_int_equal(blk_pwrite(blk, 100, sizeof(buf), buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 0, 4096, back, 0), 0);
    assert_memory_equal(back, want, 4096);
    assert_int_equal(blk_pwrite(blk, 100, sizeof(buf), buf, 0), 0);
    memset(want + 100, 0x11, sizeof(buf));
    assert_int_equal(blk_pread(blk, 0, 4096, back, 0), 0);
    assert_memory_equal(back, want, 4096);
    blk_unref(blk);
}

/*
 * A format's metadata events reach a blkdebug node under it: an error armed
 * by qcow2's l2_update fails the L2 write of an allocating write (and the
 * guest flush that carries it), leaves an image that check finds free of
 * corruption, and data flushed before it still reads back.
 */
static void test_blkdebug_qcow2_l2_update(void **state)
{
    char q[4096], opts[9000];
    uint8_t buf[4096], back[4096];
    BdrvCheckResult res = { 0 };
    BlockBackend *blk;
    BlockOpts *o;
    int ret;

    if (!bdrv_find_format("qcow2")) {
        skip();
    }
    drv_test_path(q, sizeof(q), "blkdebug-q");
    o = bopts_new();
    bopts_set(o, "size", "4M");
    assert_int_equal(bdrv_create("qcow2", q, o, NULL), 0);
    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,file.inject-error.0.event=l2_update,"
             "file.inject-error.0.iotype=write,file.inject-error.0.once=on", q);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    memset(buf, 0x3c, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    ret = blk_flush(blk);
    if (ret == 0) {
        /* The L2 table went out before the flush: the next allocation's does. */
        assert_int_equal(blk_pwrite(blk, 2 << 20, sizeof(buf), buf, 0), 0);
        ret = blk_flush(blk);
    }
    assert_int_equal(ret, -EIO);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", q);
    blk = drv_test_open_ok(opts, 0);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
    blk_unref(blk);
    unlink(q);
}

/*
 * A discard waits for an in-place write of the same qcow2 cluster that is
 * still in flight (held at a breakpoint): otherwise the write could land in
 * a host cluster the discard just freed and that something else reuses.
 */
static void test_blkdebug_discard_waits_for_write(void **state)
{
    char q[4096], opts[9000];
    uint8_t buf[65536], back[65536], zero[65536] = { 0 };
    BdrvCheckResult res = { 0 };
    AioDone w = { 0 }, d = { 0 };
    BlockBackend *blk;
    BlockOpts *o;
    AioContext *ctx;
    IOVector qiov;

    if (!bdrv_find_format("qcow2")) {
        skip();
    }
    drv_test_path(q, sizeof(q), "blkdebug-disc");
    o = bopts_new();
    bopts_set(o, "size", "4M");
    assert_int_equal(bdrv_create("qcow2", q, o, NULL), 0);
    snprintf(opts, sizeof(opts), "driver=qcow2,discard=unmap,file.driver=blkdebug,"
             "file.image.driver=file,file.image.filename=%s", q);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    ctx = blk_get_aio_context(blk);
    memset(buf, 0x6e, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);

    assert_int_equal(bdrv_debug_breakpoint(blk_bs(blk), "pwritev", "w"), 0);
    iovector_init_buf(&qiov, buf, 4096);
    assert_non_null(blk_aio_pwritev(blk, 0, &qiov, 0, aio_done_cb, &w));
    for (int i = 0; i < 100 && !bdrv_debug_is_suspended(blk_bs(blk), "w"); i++) {
        aio_poll(ctx, false);
    }
    assert_true(bdrv_debug_is_suspended(blk_bs(blk), "w"));
    assert_non_null(blk_aio_pdiscard(blk, 0, sizeof(buf), aio_done_cb, &d));
    for (int i = 0; i < 20; i++) {
        aio_poll(ctx, false);
    }
    assert_false(d.done); /* held behind the write */
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "w"), 0);
    while (!w.done || !d.done) {
        aio_poll(ctx, true);
    }
    assert_int_equal(w.ret, 0);
    assert_int_equal(d.ret, 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
    assert_memory_equal(back, zero, sizeof(back));
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", q);
    blk = drv_test_open_ok(opts, 0);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    blk_unref(blk);
    unlink(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blkdebug_after),
        cmocka_unit_test(test_blkdebug_once_on_pwritev),
        cmocka_unit_test(test_blkdebug_sector_filter),
        cmocka_unit_test(test_blkdebug_state_machine),
        cmocka_unit_test(test_blkdebug_config_file),
        cmocka_unit_test(test_blkdebug_bad_rules),
        cmocka_unit_test(test_blkdebug_breakpoint),
        cmocka_unit_test(test_blkdebug_align_rmw),
        cmocka_unit_test(test_blkdebug_qcow2_l2_update),
        cmocka_unit_test(test_blkdebug_discard_waits_for_write),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
