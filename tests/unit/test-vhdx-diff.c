/*
 * Unit tests: differencing vhdx images (drivers/format/vhdx/parent.c):
 * create with a parent, read through the chain, partial and whole-block
 * writes (sector bitmap, PARTIALLY_PRESENT / FULLY_PRESENT), reopen, the
 * parent_linkage check, the sibling rule under untrusted=on, corrupt parent
 * locators (every parse error), and qemu-img check of the parent staying
 * clean (skipped without qemu-img).
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include <coblk/image.h>
#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define SIZE (20 * MiB)
#define META (2 * MiB)           /* the metadata region of a coblk image (1 MiB log) */
#define LOC (META + 64 * KiB + 64) /* coblk's parent locator item */

static char dir[4096], parent[4200], child[4200];

static int setup(void **state)
{
    drv_test_path(dir, sizeof(dir), "vhdxdiff");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(parent, sizeof(parent), "%s/parent.vhdx", dir);
    snprintf(child, sizeof(child), "%s/child.vhdx", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[5000];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void create(const char *file, const char *opts)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    unlink(file);
    assert_int_equal(bopts_parse_keyval(o, opts, NULL, &err), 0);
    if (bdrv_create("vhdx", file, o, &err) < 0) {
        fail_msg("create (%s): %s", opts, error_get_pretty(err));
    }
}

static const char *opts_for(const char *file, const char *extra)
{
    static char buf[2][4400];
    static int n;

    n ^= 1;
    snprintf(buf[n], sizeof(buf[n]), "driver=vhdx,file.driver=file,file.filename=%s%s", file,
             extra);
    return buf[n];
}

static void put_bytes(const char *file, off_t off, const void *b, size_t len)
{
    int fd = open(file, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, len, off), (ssize_t)len);
    close(fd);
}

static void put16(const char *file, off_t off, uint16_t v)
{
    uint8_t b[2];

    st_le16(b, v);
    put_bytes(file, off, b, 2);
}

static void put32(const char *file, off_t off, uint32_t v)
{
    uint8_t b[4];

    st_le32(b, v);
    put_bytes(file, off, b, 4);
}

/* The parent: 20 MiB of pattern, written through coblk. */
static void make_parent(uint8_t *want, const char *popts)
{
    BlockBackend *blk;

    create(parent, popts);
    drv_test_pattern(want, SIZE, 7);
    blk = drv_test_open_ok(opts_for(parent, ""), BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, SIZE, want, 0), 0);
    blk_unref(blk);
}

static void make_child(const char *extra)
{
    char o[4300];

    snprintf(o, sizeof(o), "backing_file=parent.vhdx,backing_fmt=vhdx%s", extra);
    create(child, o);
}

static void read_all(const char *o, const uint8_t *want)
{
    uint8_t *buf = malloc(SIZE);
    BlockBackend *blk = drv_test_open_ok(o, 0);

    assert_int_equal(blk_getlength(blk), SIZE);
    assert_int_equal(blk_pread(blk, 0, SIZE, buf, 0), 0);
    assert_memory_equal(buf, want, SIZE);
    blk_unref(blk);
    free(buf);
}

/* Writes that leave blocks partly in the parent, cover a block, and cross blocks. */
static void write_some(uint8_t *want, int sector)
{
    static const int64_t w[][2] = {
        { 4 * KiB, 8 * KiB }, { 1 * MiB, 4 * KiB }, { 8 * MiB, 8 * MiB },
        { 7 * MiB + 4 * KiB, 2 * MiB }, { 2 * MiB + 12 * KiB, 4 * KiB }, { 16 * MiB, 4 * KiB },
        { SIZE - 4 * KiB, 4 * KiB },
    };
    BlockBackend *blk = drv_test_open_ok(opts_for(child, ""), BDRV_O_RDWR);

    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        drv_test_pattern(want + w[i][0], (size_t)w[i][1], (uint8_t)(40 + i));
        assert_int_equal(blk_pwrite(blk, w[i][0], w[i][1], want + w[i][0], 0), 0);
    }
    if (sector == 512) {
        drv_test_pattern(want + 3 * MiB + 512, 512, 99);
        assert_int_equal(blk_pwrite(blk, 3 * MiB + 512, 512, want + 3 * MiB + 512, 0), 0);
    }
    blk_unref(blk);
}

static int check_corruptions(const char *o)
{
    BlockBackend *blk = drv_test_open_ok(o, 0);
    BdrvCheckResult res = { 0 };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    blk_unref(blk);
    return res.corruptions + res.check_errors;
}

static void qemu_img_check_parent(void)
{
    char cmd[4400];

    if (system("command -v qemu-img >/dev/null 2>&1") != 0) {
        return;
    }
    snprintf(cmd, sizeof(cmd), "qemu-img check -f vhdx '%s' >/dev/null 2>&1", parent);
    assert_int_equal(system(cmd), 0);
}

static void test_vhdx_diff_chain(void **state)
{
    static const char *const variants[][3] = {
        { "size=20M", "", "" },
        { "size=20M,block_size=1M", ",block_size=2M", ",metadata-log=off" },
        { "size=20M,logical_sector_size=4096", "", "" },
    };
    uint8_t *want = malloc(SIZE);

    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        int sector = strstr(variants[v][0], "4096") ? 4096 : 512;

        make_parent(want, variants[v][0]);
        make_child(variants[v][1]);
        read_all(opts_for(child, ""), want);
        write_some(want, sector);
        read_all(opts_for(child, variants[v][2]), want); /* reopened */
        read_all(opts_for(child, ",untrusted=on"), want);
        assert_int_equal(check_corruptions(opts_for(child, "")), 0);
        /* A second session over existing partial blocks. */
        {
            BlockBackend *blk = drv_test_open_ok(opts_for(child, variants[v][2]), BDRV_O_RDWR);

            drv_test_pattern(want + 1 * MiB + 8 * KiB, 8 * KiB, 77);
            assert_int_equal(blk_pwrite(blk, 1 * MiB + 8 * KiB, 8 * KiB,
                                        want + 1 * MiB + 8 * KiB, 0), 0);
            blk_unref(blk);
        }
        read_all(opts_for(child, ""), want);
        if (sector == 512) { /* qemu-img opens no 4096-byte logical sector vhdx */
            qemu_img_check_parent();
        }
    }
    free(want);
}

static uint64_t bat_of(BlockBackend *blk, uint64_t idx)
{
    return ((BDRVVhdxState *)blk_bs(blk)->opaque)->bat[idx];
}

/*
 * Partial writes that together cover a block make it FULLY_PRESENT; its
 * sector bitmap is then not consulted (cleared by hand, the block still
 * reads the child's data). Blocks left partial stay PARTIALLY_PRESENT.
 */
static void test_vhdx_diff_promote(void **state)
{
    static const char *const logs[] = { "", ",metadata-log=off" };
    uint8_t *want = malloc(SIZE), *zero = calloc(1, MiB);

    for (int v = 0; v < 2; v++) {
        BDRVVhdxState *s;
        BlockBackend *blk;
        uint64_t sb;

        make_parent(want, "size=20M,block_size=1M");
        make_child(",block_size=1M");
        blk = drv_test_open_ok(opts_for(child, logs[v]), BDRV_O_RDWR);
        s = blk_bs(blk)->opaque;
        drv_test_pattern(want + 3 * MiB, MiB, 61);
        drv_test_pattern(want + 5 * MiB, MiB / 2, 62);
        assert_int_equal(blk_pwrite(blk, 3 * MiB + 4096, MiB / 2, want + 3 * MiB + 4096, 0), 0);
        assert_int_equal(bat_of(blk, vhdx_bat_index(s, 3)) & VHDX_BAT_STATE_MASK,
                         VHDX_PAYLOAD_PARTIALLY_PRESENT);
        assert_int_equal(blk_pwrite(blk, 3 * MiB, 4096, want + 3 * MiB, 0), 0);
        assert_int_equal(blk_pwrite(blk, 5 * MiB, MiB / 2, want + 5 * MiB, 0), 0);
        assert_int_equal(bat_of(blk, vhdx_bat_index(s, 3)) & VHDX_BAT_STATE_MASK,
                         VHDX_PAYLOAD_PARTIALLY_PRESENT);
        assert_int_equal(blk_pwrite(blk, 3 * MiB + 4096 + MiB / 2, MiB / 2 - 4096,
                                    want + 3 * MiB + 4096 + MiB / 2, 0), 0);
        assert_int_equal(bat_of(blk, vhdx_bat_index(s, 3)) & VHDX_BAT_STATE_MASK,
                         VHDX_PAYLOAD_FULLY_PRESENT);
        assert_int_equal(bat_of(blk, vhdx_bat_index(s, 5)) & VHDX_BAT_STATE_MASK,
                         VHDX_PAYLOAD_PARTIALLY_PRESENT);
        sb = bat_of(blk, vhdx_sb_index(s, 3)) & VHDX_BAT_OFFSET_MASK;
        blk_unref(blk);
        read_all(opts_for(child, ""), want);
        assert_int_equal(check_corruptions(opts_for(child, "")), 0);
        /* Bits of block 3 cleared: it still reads the child's data (no longer consulted). */
        put_bytes(child, (off_t)sb + 3 * (MiB / 512 / 8), zero, MiB / 512 / 8);
        read_all(opts_for(child, ""), want);
    }
    free(want);
    free(zero);
}

/* A child made from a parent that was written afterwards is refused. */
static void test_vhdx_diff_linkage(void **state)
{
    uint8_t *want = malloc(SIZE), buf[512] = { 1 };
    BlockBackend *blk;

    make_parent(want, "size=20M");
    make_child("");
    blk = drv_test_open_ok(opts_for(parent, ""), BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    blk_unref(blk);
    drv_test_open_fails(opts_for(child, ""), 0, "its DataWriteGuid");
    /* Without the parent (no backing) it still opens. */
    blk_unref(drv_test_open_ok(opts_for(child, ""), BDRV_O_NO_BACKING));
    free(want);
}

/* untrusted=on: a parent in a sub-folder is not a sibling. */
static void test_vhdx_diff_sibling(void **state)
{
    char sub[4300], o[4400];
    uint8_t *want = malloc(SIZE);

    make_parent(want, "size=20M");
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(o, sizeof(o), "%s/parent.vhdx", sub);
    assert_int_equal(rename(parent, o), 0);
    create(child, "backing_file=sub/parent.vhdx,backing_fmt=vhdx");
    read_all(opts_for(child, ""), want);
    drv_test_open_fails(opts_for(child, ",untrusted=on"), 0, "not a sibling");
    free(want);
}

static uint32_t get_le(const char *file, off_t off, int bytes)
{
    uint8_t b[4] = { 0 };
    int fd = open(file, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, (size_t)bytes, off), bytes);
    close(fd);
    return bytes == 2 ? ld_le16(b) : ld_le32(b);
}

/* Rewrites locator entry 1 (of a child whose parent was absolute) as volume_path = val. */
static void make_volume_path(const char *val)
{
    const off_t e1 = LOC + 32;
    uint32_t koff = get_le(child, e1, 4), voff = get_le(child, e1 + 4, 4);
    uint16_t vlen = (uint16_t)get_le(child, e1 + 10, 2);
    const char *key = "volume_path";

    assert_true(strlen(val) * 2 <= vlen);
    for (size_t i = 0; key[i]; i++) {
        put16(child, LOC + koff + (off_t)i * 2, (uint16_t)key[i]);
    }
    put16(child, e1 + 8, (uint16_t)(strlen(key) * 2));
    for (size_t i = 0; val[i]; i++) {
        put16(child, LOC + voff + (off_t)i * 2, (uint16_t)val[i]);
    }
    put16(child, e1 + 10, (uint16_t)(strlen(val) * 2));
}

static void move_parent(const char *from, const char *to)
{
    assert_int_equal(rename(from, to), 0);
}

/*
 * When relative_path does not resolve, the parent is found by the file name
 * that absolute_win32_path, volume_path or relative_path ends with, as a
 * sibling of the image; a host absolute_win32_path is followed as such
 * only when the open is not untrusted=on.
 */
static void test_vhdx_diff_fallback_paths(void **state)
{
    uint8_t *want = malloc(SIZE);
    char sub[4300], in_sub[4400], abs_opt[4600];

    snprintf(sub, sizeof(sub), "%s/sub", dir);
    snprintf(in_sub, sizeof(in_sub), "%s/parent.vhdx", sub);
    assert_int_equal(mkdir(sub, 0700), 0);

    /* relative_path "sub/parent.vhdx" after the parent moved next to the child. */
    make_parent(want, "size=20M");
    move_parent(parent, in_sub);
    create(child, "backing_file=sub/parent.vhdx,backing_fmt=vhdx");
    move_parent(in_sub, parent);
    read_all(opts_for(child, ""), want);
    read_all(opts_for(child, ",untrusted=on"), want);

    /* relative_path "C:parent.vhdx" (drive-relative): its file name, a sibling. */
    make_child("");
    put16(child, LOC + 148 + 26, 'C');
    put16(child, LOC + 148 + 28, ':');
    read_all(opts_for(child, ",untrusted=on"), want);

    /* absolute_win32_path: followed when trusted; untrusted=on: not a sibling. */
    move_parent(parent, in_sub);
    {
        char *abs = realpath(in_sub, NULL);

        assert_non_null(abs);
        snprintf(abs_opt, sizeof(abs_opt), "backing_file=%s,backing_fmt=vhdx", abs);
        free(abs);
    }
    create(child, abs_opt);
    read_all(opts_for(child, ""), want);
    drv_test_open_fails(opts_for(child, ",untrusted=on"), 0, "not a sibling");
    /* ... and once it does not resolve, its file name as a sibling, in both modes. */
    move_parent(in_sub, parent);
    read_all(opts_for(child, ""), want);
    read_all(opts_for(child, ",untrusted=on"), want);

    /* volume_path only: never followed, its file name as a sibling. */
    make_volume_path("\\\\?\\Volume{1}\\vm\\parent.vhdx");
    read_all(opts_for(child, ""), want);
    read_all(opts_for(child, ",untrusted=on"), want);
    move_parent(parent, in_sub);
    drv_test_open_fails(opts_for(child, ""), 0, "no usable parent path");
    free(want);
}

/*
 * rebase -u: the child's parent locator names a new parent (another vhdx,
 * its own DataWriteGuid) and the child then reads its unallocated blocks
 * from it; a parent that cannot be opened, removing the parent, another
 * format and a non-differencing image are refused with the image unchanged.
 */
static void test_vhdx_diff_rebase(void **state)
{
    uint8_t *want = malloc(SIZE), *other = malloc(SIZE), *buf = malloc(SIZE);
    char newp[4200], longname[300];
    BlockBackend *blk;
    Error *err = NULL;

    make_parent(want, "size=20M");
    make_child("");
    write_some(want, 512);
    /* The new parent: other data, another DataWriteGuid. */
    snprintf(newp, sizeof(newp), "%s/new.vhdx", dir);
    create(newp, "size=20M");
    drv_test_pattern(other, SIZE, 33);
    blk = drv_test_open_ok(opts_for(newp, ""), BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, SIZE, other, 0), 0);
    blk_unref(blk);

    blk = drv_test_open_ok(opts_for(child, ""), BDRV_O_RDWR | BDRV_O_NO_BACKING);
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), "missing.vhdx", "vhdx", &err),
                     -ENOENT);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), NULL, NULL, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "removing the parent"));
    assert_non_null(strstr(error_get_pretty(err), "partially present read the parent"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), "", NULL, &err), -ENOTSUP);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), "new.vhdx", "qcow2", &err),
                     -ENOTSUP);
    error_free(err);
    err = NULL;
    blk_unref(blk);
    read_all(opts_for(child, ""), want); /* unchanged: still the old parent */

    /* A long name: the locator grows past its old length. */
    snprintf(longname, sizeof(longname), "%s", "new-parent-with-a-name-long-enough-to-grow-"
             "the-locator-item-past-its-old-length.vhdx");
    snprintf(newp + strlen(dir) + 1, sizeof(newp) - strlen(dir) - 1, "%s", longname);
    {
        char from[4400];

        snprintf(from, sizeof(from), "%s/new.vhdx", dir);
        assert_int_equal(rename(from, newp), 0);
    }
    blk = drv_test_open_ok(opts_for(child, ""), BDRV_O_RDWR | BDRV_O_NO_BACKING);
    if (bdrv_change_backing_file(blk_bs(blk), longname, "vhdx", &err) < 0) {
        fail_msg("rebase: %s", error_get_pretty(err));
    }
    blk_unref(blk);
    /* What the child holds stays; the rest now comes from the new parent. */
    blk = drv_test_open_ok(opts_for(child, ""), BDRV_O_NO_BACKING);
    assert_string_equal(blk_bs(blk)->backing_file, longname);
    blk_unref(blk);
    {
        BlockBackend *old = drv_test_open_ok(opts_for(child, ""), 0);
        uint8_t *mixed = malloc(SIZE);

        /* Sector by sector: what the child wrote (it differs from the old parent's
         * pattern 7), else the new parent's data. */
        drv_test_pattern(mixed, SIZE, 7);
        for (int64_t i = 0; i < SIZE; i += 512) {
            bool own = memcmp(want + i, mixed + i, 512) != 0;

            memcpy(mixed + i, own ? want + i : other + i, 512);
        }
        assert_int_equal(blk_pread(old, 0, SIZE, buf, 0), 0);
        assert_memory_equal(buf, mixed, SIZE);
        assert_memory_not_equal(buf, want, SIZE);
        blk_unref(old);
        free(mixed);
    }
    read_all(opts_for(child, ",untrusted=on"), buf);
    assert_int_equal(check_corruptions(opts_for(child, "")), 0);

    /* A non-differencing image is not given a parent (HasParent = 0), and stays as it was. */
    blk = drv_test_open_ok(opts_for(parent, ""), BDRV_O_RDWR);
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), longname, "vhdx", &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "not a differencing image"));
    assert_non_null(strstr(error_get_pretty(err), "HasParent is 0"));
    assert_non_null(strstr(error_get_pretty(err), "instead of zeroes"));
    error_free(err);
    blk_unref(blk);
    blk = drv_test_open_ok(opts_for(parent, ""), 0);
    assert_null(blk_bs(blk)->backing_file[0] ? blk_bs(blk)->backing_file : NULL);
    drv_test_pattern(other, SIZE, 7);
    assert_int_equal(blk_pread(blk, 0, SIZE, buf, 0), 0);
    assert_memory_equal(buf, other, SIZE);
    blk_unref(blk);
    assert_int_equal(check_corruptions(opts_for(parent, "")), 0);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        assert_int_equal(drv_test_sh("qemu-img check -q -f vhdx '%s'", parent), 0);
    }
    free(want);
    free(other);
    free(buf);
}

/* Every parse error of the parent locator. */
static void test_vhdx_diff_bad_locator(void **state)
{
    uint8_t *want = malloc(SIZE);
    /* entry 0 is parent_linkage: key at +44 (28 bytes), value at +72 (76 bytes) */
    const off_t e0 = LOC + 20, e1 = LOC + 32;

    make_parent(want, "size=20M");
#define BAD(patch, msg)                                                                       \
    do {                                                                                      \
        make_child("");                                                                       \
        patch;                                                                                \
        drv_test_open_fails(opts_for(child, ""), 0, msg);                                     \
    } while (0)
    BAD(put_bytes(child, LOC, "\x01", 1), "not of the VHDX locator type");
    BAD(put32(child, META + 32 + 5 * 32 + 20, 8), "not of the VHDX locator type"); /* length */
    BAD(put32(child, META + 32 + 5 * 32 + 20, 400 * KiB), "more than");
    BAD(put16(child, LOC + 18, 257), "entry count 257");
    BAD(put16(child, LOC + 18, 100), "entry count 100");
    BAD(put32(child, e0, 4), "outside the");            /* key inside the entry table */
    BAD(put32(child, e0, 60000), "outside the");        /* key past the item */
    BAD(put32(child, e0 + 4, 0xfffffff0), "outside the");
    BAD(put16(child, e0 + 8, 0), "empty, odd-sized");
    BAD(put16(child, e0 + 10, 3), "empty, odd-sized");
    BAD(put16(child, e0 + 10, 0xfffe), "outside the");
    BAD(put16(child, LOC + 44, 0xD800), "the key is not valid UTF-16");      /* lone high */
    BAD(put16(child, LOC + 44, 0xDC00), "the key is not valid UTF-16");      /* lone low */
    BAD(put16(child, LOC + 44, 0), "the key is not valid UTF-16");           /* NUL */
    BAD(put16(child, LOC + 72, 0xDFFF), "value of 'parent_linkage' is not valid");
    BAD(put16(child, LOC + 72 + 2, 'x'), "valid parent_linkage GUID");
    BAD(put16(child, LOC + 44, 'q'), "valid parent_linkage GUID");          /* key renamed */
    /* relative_path made "C:parenX.vhdx" (a drive path, no such sibling): no usable path. */
    BAD(put16(child, LOC + 148 + 26, 'C'); put16(child, LOC + 148 + 28, ':');
        put16(child, LOC + 148 + 26 + 14, 'X'), "no usable parent path");
    /* Both entries parent_linkage: a duplicate key. */
    BAD(put32(child, e1, 44); put16(child, e1 + 8, 28), "appears twice");
    /* HasParent without a locator item (the entry count cut to 5). */
    BAD(put16(child, META + 10, 5), "without a parent locator");
    /* A partially present block whose sector bitmap block is absent. */
    BAD(put32(child, 3 * MiB, 5 * MiB | VHDX_PAYLOAD_PARTIALLY_PRESENT),
        "sector bitmap block is not present");
    /* A sector bitmap entry outside the file. */
    BAD(put32(child, 3 * MiB + 512 * 8, 0x7ff00000 | VHDX_SB_PRESENT),
        "lies outside the file");
#undef BAD
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vhdx_diff_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_promote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_linkage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_sibling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_bad_locator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_fallback_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_diff_rebase, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
