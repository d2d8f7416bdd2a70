/*
 * Unit tests: vpc (VHD) discard (drivers/format/vpc-discard.c; its free
 * places reused after a reopen, checked with qemu-img compare) and the
 * parent file name of differencing disks (drivers/format/vpc-parent.c);
 * the free places of differencing disks, found at open.
 * qemu-img interop of both is in tests/interop/vpc-qemu.sh.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include <sys/wait.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/vpc-int.h"

#define MiB (1024 * 1024)

static char img[4096], parent[4096], parent2[4096], raw[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vpcm");
    drv_test_path(parent, sizeof(parent), "vpcm-parent");
    drv_test_path(parent2, sizeof(parent2), "vpcm-parent2");
    drv_test_path(raw, sizeof(raw), "vpcm-raw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(parent);
    unlink(parent2);
    unlink(raw);
    return 0;
}

static void create(const char *path, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, NULL), 0);
    if (bdrv_create("vpc", path, o, &err) < 0) {
        fail_msg("create %s: %s", optstr, error_get_pretty(err));
    }
}

static BlockBackend *open_vpc(const char *path, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=vpc,file.driver=file,file.filename=%s", path);
    return drv_test_open_ok(opts, flags);
}

static int64_t file_size(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void expect(BlockBackend *blk, const uint8_t *want, int64_t len)
{
    uint8_t *buf = malloc((size_t)len);

    assert_int_equal(blk_pread(blk, 0, len, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)len);
    free(buf);
}

static void check_clean(BlockBackend *blk)
{
    BdrvCheckResult res = { 0 };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.check_errors, 0);
}

/* Dynamic disk (2 MiB blocks): whole blocks unmap and read zero; partial ones keep data. */
static void test_vpc_discard(void **state)
{
    uint8_t *want = malloc(10 * MiB);
    int64_t len0, len1;
    BlockBackend *blk;

    create(img, "size=10M,force_size=on");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 10 * MiB, 3);
    assert_int_equal(blk_pwrite(blk, 0, 10 * MiB, want, 0), 0);
    assert_int_equal(blk_flush(blk), 0); /* the footers move at the flush (vpc-alloc.c) */
    len0 = file_size(img);

    /* No whole block inside: nothing changes. */
    assert_int_equal(blk_pdiscard(blk, MiB, 2 * MiB), 0);
    expect(blk, want, 10 * MiB);
    /* Blocks 1 and 2 (and partial pieces around them). */
    assert_int_equal(blk_pdiscard(blk, MiB + 512, 5 * MiB), 0);
    memset(want + 2 * MiB, 0, 4 * MiB);
    expect(blk, want, 10 * MiB);
    assert_int_equal(file_size(img), len0); /* their space is punched, not cut */

    /* The last block: the file gets shorter by one block and its bitmap. */
    assert_int_equal(blk_pdiscard(blk, 8 * MiB, 2 * MiB), 0);
    memset(want + 8 * MiB, 0, 2 * MiB);
    expect(blk, want, 10 * MiB);
    len1 = file_size(img);
    assert_int_equal(len1, len0 - 2 * MiB - 512);

    /* New blocks take the discarded places before the file grows. */
    memset(want + 2 * MiB + 4096, 0x5a, 8192);
    assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 8192, want + 2 * MiB + 4096, 0), 0);
    memset(want + 4 * MiB, 0x6b, 512);
    assert_int_equal(blk_pwrite(blk, 4 * MiB, 512, want + 4 * MiB, 0), 0);
    assert_int_equal(file_size(img), len1);
    memset(want + 9 * MiB, 0x7c, 512);
    assert_int_equal(blk_pwrite(blk, 9 * MiB, 512, want + 9 * MiB, 0), 0);
    assert_int_equal(blk_flush(blk), 0); /* the footers move at the flush (vpc-alloc.c) */
    assert_int_equal(file_size(img), len0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);

    blk = open_vpc(img, 0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);

    /* Fixed disks keep their data (discard is advisory). */
    create(img, "size=4M,force_size=on,subformat=fixed");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(want, 0x44, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 0, 4 * MiB), 0);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);
    free(want);
}

/*
 * qemu-img (when installed) reads img as want (compare) and, if its vpc
 * driver checks images at all (7.2's does not: exit 63), finds no error.
 */
static void qemu_agrees(const uint8_t *want, int64_t len)
{
    int fd, c;

    if (drv_test_sh("command -v qemu-img >/dev/null") != 0) {
        return;
    }
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, want, (size_t)len), len);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F vpc '%s' '%s'", raw, img), 0);
    c = drv_test_sh("qemu-img check -q -f vpc '%s' 2>/dev/null", img);
    assert_true(c == 0 || c == 63);
}

/*
 * The places of blocks discarded in an earlier open are found again from
 * the BAT at open and reused before the file grows; so is a block that a
 * crash left written but unmapped (its BAT entry cleared here by hand).
 */
static void test_vpc_reuse_after_reopen(void **state)
{
    uint8_t *want = malloc(10 * MiB);
    int64_t len0;
    uint64_t bat_off;
    uint8_t unused[4];
    BlockBackend *blk;
    int fd;

    create(img, "size=10M,force_size=on");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 10 * MiB, 5);
    assert_int_equal(blk_pwrite(blk, 0, 10 * MiB, want, 0), 0);
    assert_int_equal(blk_flush(blk), 0); /* the footers move at the flush (vpc-alloc.c) */
    len0 = file_size(img);
    assert_int_equal(blk_pdiscard(blk, 2 * MiB, 4 * MiB), 0); /* blocks 1 and 2 */
    memset(want + 2 * MiB, 0, 4 * MiB);
    bat_off = ((BDRVVpcState *)blk_bs(blk)->opaque)->bat_offset;
    blk_unref(blk);
    qemu_agrees(want, 10 * MiB);

    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    assert_int_equal(((BDRVVpcState *)blk_bs(blk)->opaque)->n_free, 2);
    memset(want + 2 * MiB + 4096, 0x5a, 8192);
    assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 8192, want + 2 * MiB + 4096, 0), 0);
    memset(want + 5 * MiB, 0x6b, 512);
    assert_int_equal(blk_pwrite(blk, 5 * MiB, 512, want + 5 * MiB, 0), 0);
    assert_int_equal(file_size(img), len0); /* both went into the discarded places */
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);
    qemu_agrees(want, 10 * MiB);

    /* Block 4 (the last) written, then its BAT entry lost: its place is reused. */
    st_be32(unused, VHD_BAT_UNUSED);
    fd = open(img, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, unused, 4, (off_t)bat_off + 4 * 4), 4);
    close(fd);
    memset(want + 8 * MiB, 0, 2 * MiB);
    blk = open_vpc(img, BDRV_O_RDWR);
    expect(blk, want, 10 * MiB);
    memset(want + 9 * MiB, 0x7c, 512);
    assert_int_equal(blk_pwrite(blk, 9 * MiB, 512, want + 9 * MiB, 0), 0);
    assert_int_equal(blk_flush(blk), 0); /* the footers move at the flush (vpc-alloc.c) */
    assert_int_equal(file_size(img), len0);
    expect(blk, want, 10 * MiB); /* the rest of the reused block reads zero, not old data */
    blk_unref(blk);
    qemu_agrees(want, 10 * MiB);
    free(want);
}

/* A differencing disk's unmapped blocks would read the parent: discard keeps them. */
static void test_vpc_discard_differencing(void **state)
{
    uint8_t *want = malloc(4 * MiB);
    char opt[8300];
    BlockBackend *blk;

    create(parent, "size=4M,force_size=on");
    blk = open_vpc(parent, BDRV_O_RDWR);
    memset(want, 0x77, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    blk_unref(blk);
    snprintf(opt, sizeof(opt), "backing_file=%s", strrchr(parent, '/') + 1);
    create(img, opt);
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(want, 0x12, 2 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, want, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 0, 4 * MiB), 0);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);
    free(want);
}

/* Writes 4 MiB of byte into a new parent at path. */
static void make_parent(const char *path, uint8_t byte, uint8_t *want)
{
    BlockBackend *blk;

    create(path, "size=4M,force_size=on");
    blk = open_vpc(path, BDRV_O_RDWR);
    memset(want, byte, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    blk_unref(blk);
}

static void test_vpc_set_parent(void **state)
{
    uint8_t *want = malloc(4 * MiB);
    const char *p2 = strrchr(parent2, '/') + 1;
    char opt[8300], *got = NULL;
    uint8_t u1[16], u2[16];
    Error *err = NULL;
    BlockBackend *blk;

    make_parent(parent, 0x77, want);
    make_parent(parent2, 0x55, want);
    snprintf(opt, sizeof(opt), "backing_file=%s", strrchr(parent, '/') + 1);
    create(img, opt);
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u1), 0);
    memset(want + MiB, 0x11, 4096);
    assert_int_equal(blk_pwrite(blk, MiB, 4096, want + MiB, 0), 0);

    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), NULL, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "removing the parent"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), p2, NULL), 0);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &got), 0);
    assert_string_equal(got, p2);
    free(got);
    blk_unref(blk);

    /* The new parent's data shows through; the parent UUID stays as it was. */
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_string_equal(blk_bs(blk)->backing_file, p2);
    expect(blk, want, 4 * MiB);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u2), 0);
    assert_memory_equal(u1, u2, 16);
    /* A new block after the reopen must not land on the moved header. */
    memset(want + 3 * MiB, 0x22, 8192);
    assert_int_equal(blk_pwrite(blk, 3 * MiB, 8192, want + 3 * MiB, 0), 0);
    check_clean(blk);
    blk_unref(blk);
    blk = open_vpc(img, BDRV_O_RDWR);
    expect(blk, want, 4 * MiB);
    /* Twice: the header moves again. */
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), strrchr(parent, '/') + 1, NULL), 0);
    blk_unref(blk);
    blk = open_vpc(img, 0);
    memset(want, 0x77, MiB);
    memset(want + MiB + 4096, 0x77, 2 * MiB - 4096);
    memset(want + 3 * MiB + 8192, 0x77, MiB - 8192);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);

    /* A dynamic disk has no parent to rename. */
    blk = open_vpc(parent, BDRV_O_RDWR);
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), p2, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "not a differencing disk"));
    error_free(err);
    blk_unref(blk);
    free(want);
}

/* Sets BAT entry block of img (BAT at bat_off) to value. */
static void put_bat(uint64_t bat_off, uint32_t block, uint32_t value)
{
    uint8_t be[4];
    int fd = open(img, O_WRONLY);

    st_be32(be, value);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, be, 4, (off_t)(bat_off + block * 4ULL)), 4);
    close(fd);
}

/* Points the footer copy at offset 0 of img at the dynamic header at dh (sealed). */
static void point_copy_at(uint64_t dh)
{
    uint8_t f[512];
    int fd = open(img, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, f, 512, 0), 512);
    st_be64(f + FT_DATA_OFFSET, dh);
    vpc_seal_footer(f);
    assert_int_equal(pwrite(fd, f, 512, 0), 512);
    close(fd);
}

/* No free slot (bitmap and data) overlaps [lo, hi) of the file. */
static void assert_no_slot_over(const BDRVVpcState *s, uint64_t lo, uint64_t hi)
{
    uint64_t len = (uint64_t)s->bitmap_size + s->block_size;

    for (uint32_t i = 0; i < s->n_free; i++) {
        uint64_t at = (uint64_t)s->free_slots[i] * 512;

        assert_true(at + len <= lo || at >= hi);
    }
}

/*
 * Differencing disks: a block that a crash left written but unmapped (its
 * BAT entry cleared here by hand) is found at open and reused before the
 * file grows, and its unwritten sectors read the parent again. A place that
 * holds the dynamic header the footer copy at 0 names (as a parent change
 * cut between its two footer writes leaves) is never reused.
 */
static void test_vpc_differencing_reuse(void **state)
{
    uint8_t *want = malloc(10 * MiB), hdr[1024];
    uint64_t bat_off, dh, block1;
    char opt[8300];
    BlockBackend *blk;
    int64_t len0;
    int fd;

    create(parent, "size=10M,force_size=on");
    blk = open_vpc(parent, BDRV_O_RDWR);
    memset(want, 0x77, 10 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 10 * MiB, want, 0), 0);
    blk_unref(blk);
    snprintf(opt, sizeof(opt), "backing_file=%s", strrchr(parent, '/') + 1);
    create(img, opt);
    blk = open_vpc(img, BDRV_O_RDWR);
    for (int b = 0; b < 4; b++) {
        memset(want + b * 2 * MiB + 4096, 0x10 + b, 8192);
        assert_int_equal(blk_pwrite(blk, b * 2 * MiB + 4096, 8192, want + b * 2 * MiB + 4096,
                                    0), 0);
    }
    bat_off = ((BDRVVpcState *)blk_bs(blk)->opaque)->bat_offset;
    block1 = (uint64_t)((BDRVVpcState *)blk_bs(blk)->opaque)->bat[1] * 512;
    dh = ld_be64(((BDRVVpcState *)blk_bs(blk)->opaque)->footer + FT_DATA_OFFSET);
    memcpy(hdr, ((BDRVVpcState *)blk_bs(blk)->opaque)->dynhdr, 1024);
    blk_unref(blk);
    len0 = file_size(img);

    /* Block 1 unmapped, and the footer copy names a header placed in its space. */
    put_bat(bat_off, 1, VHD_BAT_UNUSED);
    memset(want + 2 * MiB + 4096, 0x77, 8192);
    fd = open(img, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, hdr, 1024, (off_t)block1 + 4096), 1024);
    close(fd);
    point_copy_at(block1 + 4096);
    blk = open_vpc(img, 0);
    assert_no_slot_over(blk_bs(blk)->opaque, block1 + 4096, block1 + 4096 + 1024);
    expect(blk, want, 10 * MiB);
    blk_unref(blk);

    /* The copy names the header in use again: block 1's place is a free slot. */
    point_copy_at(dh);
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_int_equal(((BDRVVpcState *)blk_bs(blk)->opaque)->n_free, 1);
    expect(blk, want, 10 * MiB);
    memset(want + 8 * MiB + 512, 0x3c, 1024);
    assert_int_equal(blk_pwrite(blk, 8 * MiB + 512, 1024, want + 8 * MiB + 512, 0), 0);
    assert_int_equal(file_size(img), len0);
    expect(blk, want, 10 * MiB); /* the rest of block 4 reads the parent, not block 1's data */
    check_clean(blk);
    blk_unref(blk);
    /* (No qemu-img compare: qemu's vpc driver does not read a differencing disk's parent.) */
    blk = open_vpc(img, 0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);
    free(want);
}

/*
 * Discarding the last blocks cuts them all off the file, over the gaps that
 * align each block's data (vpc_end_place): the file ends with the footer
 * at the place of the first of them, and new blocks go there again.
 */
static void test_vpc_discard_tail_gaps(void **state)
{
    uint8_t *want = malloc(10 * MiB);
    uint64_t at2;
    BlockBackend *blk;

    create(img, "size=10M,force_size=on");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 10 * MiB, 4);
    assert_int_equal(blk_pwrite(blk, 0, 10 * MiB, want, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    at2 = (uint64_t)((BDRVVpcState *)blk_bs(blk)->opaque)->bat[2] * 512;
    assert_int_equal(blk_pdiscard(blk, 4 * MiB, 6 * MiB), 0);
    memset(want + 4 * MiB, 0, 6 * MiB);
    expect(blk, want, 10 * MiB);
    assert_int_equal(file_size(img), (int64_t)at2 + 512);
    memset(want + 8 * MiB, 0x5c, 4096);
    assert_int_equal(blk_pwrite(blk, 8 * MiB, 4096, want + 8 * MiB, 0), 0);
    assert_int_equal((uint64_t)((BDRVVpcState *)blk_bs(blk)->opaque)->bat[4] * 512, at2);
    assert_int_equal(blk_flush(blk), 0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);
    blk = open_vpc(img, 0);
    expect(blk, want, 10 * MiB);
    blk_unref(blk);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vpc_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_discard_tail_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_reuse_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_discard_differencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_set_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_differencing_reuse, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
