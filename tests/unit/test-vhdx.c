/*
 * Unit tests: the vhdx driver (drivers/format/vhdx/): create, write and read
 * back dynamic and fixed images with 512 and 4096-byte logical sectors,
 * every block state, log replay of a dirty log built by hand (and the
 * read-only refusal), and corrupt images (bad identifier, header and region
 * table checksums, region table overflow, BAT size overflow, block and
 * sector sizes, BAT entries past EOF, bad log location, unknown required
 * metadata, differencing images).
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include <coblk/image.h>
#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vhdx");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

static void create(const char *opts)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    unlink(img);
    assert_int_equal(bopts_parse_keyval(o, opts, NULL, &err), 0);
    if (bdrv_create("vhdx", img, o, &err) < 0) {
        fail_msg("create (%s): %s", opts, error_get_pretty(err));
    }
}

static const char *opts(void)
{
    static char buf[4200];

    snprintf(buf, sizeof(buf), "driver=vhdx,file.driver=file,file.filename=%s", img);
    return buf;
}

static void pread_file(off_t off, void *buf, size_t len)
{
    int fd = open(img, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void pwrite_file(off_t off, const void *buf, size_t len)
{
    int fd = open(img, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

/* Rewrites a checksummed structure of len bytes at off after fix() changed it. */
static void patch_checked(off_t off, size_t len, void (*fix)(uint8_t *, void *), void *arg)
{
    uint8_t *buf = malloc(len);

    pread_file(off, buf, len);
    fix(buf, arg);
    st_le32(buf + 4, vhdx_checksum(buf, len, 4));
    pwrite_file(off, buf, len);
    free(buf);
}

static void quiet(void *opaque, const char *msg)
{
}

/* coblk's check: the corruption count it finds. */
static int check_corruptions(void)
{
    BlockBackend *blk = drv_test_open_ok(opts(), 0);
    BdrvCheckResult res = { .report = quiet };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.check_errors, 0);
    blk_unref(blk);
    return res.corruptions;
}

static void exercise(int64_t size)
{
    static const int64_t offs[][2] = {
        { 0, 64 * KiB }, { 72 * KiB, 4 * KiB }, { 3 * MiB - 4 * KiB, 12 * KiB },
        { 9 * MiB, 1 * MiB + 8 * KiB },
    };
    uint8_t *want = calloc(1, (size_t)size), *buf = malloc((size_t)size);
    BlockBackend *blk = drv_test_open_ok(opts(), BDRV_O_RDWR);

    assert_int_equal(blk_getlength(blk), size);
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        drv_test_pattern(want + offs[i][0], (size_t)offs[i][1], (uint8_t)(i + 3));
        assert_int_equal(blk_pwrite(blk, offs[i][0], offs[i][1], want + offs[i][0], 0), 0);
    }
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    blk_unref(blk);
    blk = drv_test_open_ok(opts(), 0);
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_vhdx_create_rw(void **state)
{
    static const char *const o[] = {
        "size=20M", "size=20M,subformat=fixed", "size=20M,subformat=fixed,block_state_zero=off",
        "size=20M,block_size=1M,log_size=2M", "size=20M,logical_sector_size=4096",
        "size=20M,block_state_zero=off,block_size=256M",
    };

    for (size_t i = 0; i < sizeof(o) / sizeof(o[0]); i++) {
        create(o[i]);
        exercise(20 * MiB);
        assert_int_equal(check_corruptions(), 0);
    }
}

static void test_vhdx_info_and_probe(void **state)
{
    BlockDriverInfo bdi;
    BlockBackend *blk;
    uint8_t hdr[4096];

    create("size=64M,block_size=2M");
    blk = blk_new_open(img, NULL, 0, NULL);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "vhdx");
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 2 * MiB);
    blk_unref(blk);
    /* A write session leaves the headers clean (LogGuid cleared). */
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    memset(hdr, 7, sizeof(hdr));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(hdr), hdr, 0), 0);
    blk_unref(blk);
    for (int i = 1; i <= 2; i++) {
        pread_file(i * 64 * KiB, hdr, sizeof(hdr));
        assert_memory_equal(hdr, "head", 4);
        for (int k = 48; k < 64; k++) {
            assert_int_equal(hdr[k], 0);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* A dirty log made by hand */

static VhdxGuid test_guid = { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 } };

static void set_log_guid(uint8_t *h, void *arg)
{
    memcpy(h + 48, test_guid.b, 16);
    st_le64(h + 8, ld_le64(h + 8) + 10);
}

/* Writes one log entry at the log start that puts bat_sector at bat_off. */
static void write_log_entry(uint64_t bat_off, const uint8_t *bat_sector, uint64_t file_len)
{
    uint8_t *e = calloc(1, 8192);
    const uint64_t seq = 42;

    memcpy(e, "loge", 4);
    st_le32(e + 8, 8192);
    st_le32(e + 12, 0);
    st_le64(e + 16, seq);
    st_le32(e + 24, 1);
    memcpy(e + 32, test_guid.b, 16);
    st_le64(e + 48, file_len);
    st_le64(e + 56, file_len);
    memcpy(e + 64, "desc", 4);
    memcpy(e + 68, bat_sector + 4092, 4);
    memcpy(e + 72, bat_sector, 8);
    st_le64(e + 80, bat_off);
    st_le64(e + 88, seq);
    memcpy(e + 4096, "data", 4);
    st_le32(e + 4100, 0);
    memcpy(e + 4104, bat_sector + 8, 4084);
    st_le32(e + 8188, (uint32_t)seq);
    st_le32(e + 4, vhdx_checksum(e, 8192, 4));
    pwrite_file(1 * MiB, e, 8192);
    free(e);
}

static void test_vhdx_log_replay(void **state)
{
    /* Layout of a coblk image with a 1 MiB log: metadata at 2 MiB, BAT at 3 MiB, data at 4. */
    const uint64_t bat_off = 3 * MiB, block_off = 4 * MiB;
    uint8_t sector[4096], *data = malloc(MiB), *buf = malloc(MiB);
    BlockBackend *blk;
    char cmd[4400];

    create("size=8M,block_size=1M");
    drv_test_pattern(data, MiB, 0x99);
    pwrite_file((off_t)block_off, data, MiB);
    pread_file((off_t)bat_off, sector, sizeof(sector));
    st_le64(sector, block_off | VHDX_PAYLOAD_FULLY_PRESENT);
    write_log_entry(bat_off, sector, block_off + MiB);
    patch_checked(64 * KiB, 4096, set_log_guid, NULL);
    patch_checked(128 * KiB, 4096, set_log_guid, NULL);

    /* Read-only: refused, with a message. */
    drv_test_open_fails(opts(), 0, "must be replayed");
    /* Read-write: replayed; the block written only through the log is there. */
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, data, MiB);
    blk_unref(blk);
    /* Clean now: a read-only open works and sees the data. */
    blk = drv_test_open_ok(opts(), 0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, data, MiB);
    blk_unref(blk);
    if (system("command -v qemu-img >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", img);
        assert_int_equal(system(cmd), 0);
    }
    /* A log entry with a bad checksum is not replayed (and not dirty). */
    create("size=8M,block_size=1M");
    write_log_entry(bat_off, sector, block_off + MiB);
    pwrite_file(1 * MiB + 100, "x", 1);
    patch_checked(64 * KiB, 4096, set_log_guid, NULL);
    patch_checked(128 * KiB, 4096, set_log_guid, NULL);
    blk = drv_test_open_ok(opts(), 0);
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    for (int i = 0; i < 4096; i++) {
        assert_int_equal(buf[i], 0);
    }
    blk_unref(blk);
    free(data);
    free(buf);
}

/* metadata-log=on: a mid-session copy whose BAT update was lost is replayed. */
static void test_vhdx_log_writes(void **state)
{
    uint8_t *data = malloc(MiB), *buf = malloc(MiB), sector[4096] = { 0 };
    char copy[4200], cmd[8500], o[4400];
    BlockBackend *blk;

    create("size=8M,block_size=1M");
    snprintf(o, sizeof(o), "%s,metadata-log=on", opts());
    blk = drv_test_open_ok(o, BDRV_O_RDWR);
    drv_test_pattern(data, MiB, 0x3c);
    assert_int_equal(blk_pwrite(blk, 2 * MiB, MiB, data, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    snprintf(copy, sizeof(copy), "%s.copy", img);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", img, copy);
    assert_int_equal(system(cmd), 0);
    blk_unref(blk);
    if (system("command -v qemu-img >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", img);
        assert_int_equal(system(cmd), 0);
    }
    /* The copy: LogGuid set, entry valid; lose the in-place BAT sector. */
    unlink(img);
    assert_int_equal(rename(copy, img), 0);
    pwrite_file(3 * MiB, sector, sizeof(sector));
    drv_test_open_fails(opts(), 0, "must be replayed");
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 2 * MiB, MiB, buf, 0), 0);
    assert_memory_equal(buf, data, MiB);
    blk_unref(blk);
    free(data);
    free(buf);
}

/* metadata-log=off (default): entries in place; a mid-session copy is clean and complete. */
static void test_vhdx_in_place_bat(void **state)
{
    uint8_t *data = malloc(MiB), *buf = malloc(MiB), hdr[4096];
    char copy[4200], cmd[8500], o[4400];
    BlockBackend *blk;

    create("size=8M,block_size=1M");
    snprintf(o, sizeof(o), "%s,metadata-log=off", opts());
    blk = drv_test_open_ok(o, BDRV_O_RDWR);
    drv_test_pattern(data, MiB, 0x5c);
    assert_int_equal(blk_pwrite(blk, 5 * MiB, MiB, data, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    snprintf(copy, sizeof(copy), "%s.copy", img);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", img, copy);
    assert_int_equal(system(cmd), 0);
    blk_unref(blk);
    unlink(img);
    assert_int_equal(rename(copy, img), 0);
    for (int i = 1; i <= 2; i++) {
        pread_file(i * 64 * KiB, hdr, sizeof(hdr));
        for (int k = 48; k < 64; k++) {
            assert_int_equal(hdr[k], 0); /* no LogGuid: nothing to replay */
        }
    }
    blk = drv_test_open_ok(opts(), 0);
    assert_int_equal(blk_pread(blk, 5 * MiB, MiB, buf, 0), 0);
    assert_memory_equal(buf, data, MiB);
    blk_unref(blk);
    free(data);
    free(buf);
}

/* ---------------------------------------------------------------------- */
/* Corrupt images */

static void set_region_count(uint8_t *r, void *arg)
{
    st_le32(r + 8, *(uint32_t *)arg);
}

static void set_log_length(uint8_t *h, void *arg)
{
    st_le32(h + 68, *(uint32_t *)arg);
}

static void test_vhdx_bad_headers(void **state)
{
    uint32_t v;

    create("size=8M");
    pwrite_file(0, "vhdxfilX", 8);
    drv_test_open_fails(opts(), 0, "file type identifier");
    /* One bad header: the other is used. */
    create("size=8M");
    pwrite_file(64 * KiB + 200, "x", 1);
    {
        BlockBackend *blk = drv_test_open_ok(opts(), 0);
        blk_unref(blk);
    }
    pwrite_file(128 * KiB + 200, "x", 1);
    drv_test_open_fails(opts(), 0, "neither header is valid");
    /* Log location. */
    create("size=8M");
    v = 12345;
    patch_checked(64 * KiB, 4096, set_log_length, &v);
    patch_checked(128 * KiB, 4096, set_log_length, &v);
    drv_test_open_fails(opts(), 0, "log at");
    /* Region tables: checksums and entry count. */
    create("size=8M");
    pwrite_file(192 * KiB + 100, "x", 1);
    pwrite_file(256 * KiB + 100, "x", 1);
    drv_test_open_fails(opts(), 0, "neither region table is valid");
    create("size=8M");
    v = 5000;
    patch_checked(192 * KiB, 64 * KiB, set_region_count, &v);
    drv_test_open_fails(opts(), 0, "region table entry count 5000");
}

/* Region table edits (both copies, resealed): see test_vhdx_bad_regions. */
static void edit_regions(uint8_t *r, void *arg)
{
    int mode = *(int *)arg;
    uint8_t *e0 = r + 16, *e1 = r + 48;

    if (mode == 0) {
        st_le64(e1 + 16, ld_le64(e0 + 16));       /* the second region over the first */
    } else if (mode == 3) {
        st_le64(e0 + 16, 12345);                  /* not 1 MiB aligned */
    } else {
        e0[0] ^= 0xff;                            /* a GUID nobody knows */
        st_le32(e0 + 28, mode == 1 ? 1 : 0);      /* required or not */
    }
}

/*
 * The region table errors the headers test does not reach: the BAT and
 * metadata regions overlapping, an unknown required region, a known one
 * missing (its entry turned into an unknown optional one), a misaligned
 * region; and a metadata table without its signature.
 */
static void test_vhdx_bad_regions(void **state)
{
    static const char *const want[] = { "the BAT and metadata regions overlap",
                                        "unknown required region",
                                        "the region table lacks the",
                                        "is misaligned or past the end of the file" };

    for (int mode = 0; mode < 4; mode++) {
        create("size=8M");
        patch_checked(192 * KiB, 64 * KiB, edit_regions, &mode);
        patch_checked(256 * KiB, 64 * KiB, edit_regions, &mode);
        drv_test_open_fails(opts(), 0, want[mode]);
    }
    create("size=8M");
    pwrite_file(2 * MiB, "metadatX", 8);
    drv_test_open_fails(opts(), 0, "bad metadata table signature");
}

/* Metadata items of a coblk image: table at 2 MiB, items from 2 MiB + 64 KiB. */
#define META (2 * MiB)
#define ITEMS (META + 64 * KiB)

static void put32(off_t off, uint32_t v)
{
    uint8_t b[4];

    st_le32(b, v);
    pwrite_file(off, b, 4);
}

static void put64(off_t off, uint64_t v)
{
    uint8_t b[8];

    st_le64(b, v);
    pwrite_file(off, b, 8);
}

static void test_vhdx_bad_metadata(void **state)
{
    create("size=8M");
    put32(ITEMS, 0);
    drv_test_open_fails(opts(), 0, "block size 0");
    create("size=8M");
    put32(ITEMS, 3 * MiB);
    drv_test_open_fails(opts(), 0, "block size 3145728");
    create("size=8M");
    put32(ITEMS + 32, 1000);
    drv_test_open_fails(opts(), 0, "sector sizes 1000/512");
    create("size=8M");
    put64(ITEMS + 8, 1000);
    drv_test_open_fails(opts(), 0, "virtual disk size 1000");
    /* 64 TiB in 1 MiB blocks needs a 512 MiB BAT: more than the region holds. */
    create("size=8M,block_size=1M");
    put64(ITEMS + 8, 64ULL * MiB * MiB);
    drv_test_open_fails(opts(), 0, "the BAT needs");
    /* Differencing. */
    create("size=8M");
    put32(ITEMS + 4, 2);
    drv_test_open_fails(opts(), 0, "without a parent locator");
    /* An unknown required item (the page 83 entry renamed). */
    create("size=8M");
    pwrite_file(META + 96, "\xee\xee", 2);
    drv_test_open_fails(opts(), 0, "unknown required metadata item");
    /* Metadata entry count. */
    create("size=8M");
    put32(META + 8, 0x7fff0000);
    drv_test_open_fails(opts(), 0, "metadata entry count");
    /* A metadata item outside the region. */
    create("size=8M");
    put32(META + 32 + 16, 2 * MiB);
    drv_test_open_fails(opts(), 0, "misplaced");
}

static void test_vhdx_bad_bat(void **state)
{
    uint8_t buf[4096];
    BlockBackend *blk;

    create("size=8M,block_size=1M");
    put64(3 * MiB, (100ULL * MiB) | VHDX_PAYLOAD_FULLY_PRESENT);
    drv_test_open_fails(opts(), 0, "outside the file");
    create("size=8M,block_size=1M");
    put64(3 * MiB, VHDX_PAYLOAD_FULLY_PRESENT);
    drv_test_open_fails(opts(), 0, "outside the file");
    create("size=8M,block_size=1M");
    put64(3 * MiB, VHDX_PAYLOAD_PARTIALLY_PRESENT);
    drv_test_open_fails(opts(), 0, "has state 7");
    /* Two blocks at one place, one inside the BAT: found by check. */
    create("size=8M,block_size=1M");
    put64(3 * MiB, (5ULL * MiB) | VHDX_PAYLOAD_FULLY_PRESENT);
    put64(3 * MiB + 8, (5ULL * MiB) | VHDX_PAYLOAD_FULLY_PRESENT);
    put64(3 * MiB + 16, (3ULL * MiB) | VHDX_PAYLOAD_FULLY_PRESENT);
    {
        int fd = open(img, O_RDWR);

        assert_int_equal(ftruncate(fd, 6 * MiB), 0);
        close(fd);
    }
    assert_int_equal(check_corruptions(), 2);
    /* Every non-present state reads as zeroes. */
    create("size=8M,block_size=1M");
    put64(3 * MiB, VHDX_PAYLOAD_UNDEFINED);
    put64(3 * MiB + 8, VHDX_PAYLOAD_UNMAPPED);
    put64(3 * MiB + 16, VHDX_PAYLOAD_NOT_PRESENT);
    blk = drv_test_open_ok(opts(), 0);
    for (int b = 0; b < 3; b++) {
        memset(buf, 1, sizeof(buf));
        assert_int_equal(blk_pread(blk, b * MiB, sizeof(buf), buf, 0), 0);
        for (size_t i = 0; i < sizeof(buf); i++) {
            assert_int_equal(buf[i], 0);
        }
    }
    blk_unref(blk);
}

/* Whole blocks a discard covers become UNMAPPED (offset kept), others stay. */
static void test_vhdx_discard(void **state)
{
    static const char *const extra[] = { "", ",metadata-log=off" };
    uint8_t *want = malloc(8 * MiB), *buf = malloc(8 * MiB);
    char o[4400];

    for (int v = 0; v < 2; v++) {
        BlockBackend *blk;
        uint8_t e[8];

        create("size=8M,block_size=1M");
        snprintf(o, sizeof(o), "%s,discard=unmap%s", opts(), extra[v]);
        blk = drv_test_open_ok(o, BDRV_O_RDWR);
        drv_test_pattern(want, 8 * MiB, 9);
        assert_int_equal(blk_pwrite(blk, 0, 8 * MiB, want, 0), 0);
        assert_int_equal(blk_pdiscard(blk, 1 * MiB - 512, 2 * MiB + 1024), 0);
        memset(want + 1 * MiB, 0, 2 * MiB);
        assert_int_equal(blk_pdiscard(blk, 5 * MiB + 4096, 1 * MiB), 0); /* partial: kept */
        assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
        assert_memory_equal(buf, want, 8 * MiB);
        blk_unref(blk);
        pread_file(3 * MiB + 8, e, 8);
        assert_int_equal(ld_le64(e) & VHDX_BAT_STATE_MASK, VHDX_PAYLOAD_UNMAPPED);
        assert_true((ld_le64(e) & VHDX_BAT_OFFSET_MASK) >= 4 * MiB);
        pread_file(3 * MiB + 24, e, 8);
        assert_int_equal(ld_le64(e) & VHDX_BAT_STATE_MASK, VHDX_PAYLOAD_FULLY_PRESENT);
        /* Reopened; then a write into a discarded block reuses its space. */
        blk = drv_test_open_ok(o, BDRV_O_RDWR);
        assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
        assert_memory_equal(buf, want, 8 * MiB);
        {
            int64_t len = bdrv_getlength(blk_bs(blk)->file->bs);

            drv_test_pattern(want + 2 * MiB + 4096, 4096, 11);
            assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 4096, want + 2 * MiB + 4096, 0), 0);
            assert_int_equal(bdrv_getlength(blk_bs(blk)->file->bs), len);
        }
        blk_unref(blk);
        blk = drv_test_open_ok(opts(), 0);
        assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
        assert_memory_equal(buf, want, 8 * MiB);
        blk_unref(blk);
        assert_int_equal(check_corruptions(), 0);
    }
    free(want);
    free(buf);
}

/*
 * A non-present block's entry keeps an offset a write may reuse; an untrusted
 * one pointing at another block, the BAT or the headers is not reused (the
 * block goes to free space) and nothing else is overwritten.
 */
static uint64_t bat_offset_of(BlockBackend *blk, uint64_t block);

static void test_vhdx_bad_kept_offset(void **state)
{
    static const uint64_t bad[] = { 0, 3 * MiB, 1 * MiB }; /* block 0's home: filled below */
    uint8_t *want = calloc(1, 8 * MiB), *buf = malloc(8 * MiB), e[8];
    BlockBackend *blk;
    uint64_t home0;

    create("size=8M,block_size=1M");
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    drv_test_pattern(want, MiB, 21);
    assert_int_equal(blk_pwrite(blk, 0, MiB, want, 0), 0);
    blk_unref(blk);
    pread_file(3 * MiB, e, 8);
    home0 = ld_le64(e) & VHDX_BAT_OFFSET_MASK;
    assert_true(home0 >= 4 * MiB);
    for (int b = 1; b <= 3; b++) {
        uint64_t off = b == 1 ? home0 : bad[b - 1];

        put64(3 * MiB + 8 * b, off | (b == 3 ? VHDX_PAYLOAD_ZERO : VHDX_PAYLOAD_UNMAPPED));
    }
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    for (int b = 1; b <= 3; b++) {
        uint8_t *p = want + b * MiB + 8192;

        drv_test_pattern(p, 4096, (uint8_t)(30 + b));
        assert_int_equal(blk_pwrite(blk, b * MiB + 8192, 4096, p, 0), 0);
        assert_true(bat_offset_of(blk, (uint64_t)b) != (b == 1 ? home0 : bad[b - 1]));
    }
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
    blk_unref(blk);
    blk = drv_test_open_ok(opts(), 0);
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
    blk_unref(blk);
    assert_int_equal(check_corruptions(), 0);
    free(want);
    free(buf);
}

/* Growing past what the BAT region maps moves the BAT to the end of the file. */
static void test_vhdx_move_bat(void **state)
{
    static const char *const extra[] = { "", ",metadata-log=off" };
    const int64_t big = 200LL * 1024 * MiB, far = 150LL * 1024 * MiB;
    uint8_t want[8192], buf[8192], r[64];
    char o[4400];

    for (int v = 0; v < 2; v++) {
        BlockBackend *blk;
        Error *err = NULL;

        create("size=8M,block_size=1M");
        snprintf(o, sizeof(o), "%s%s", opts(), extra[v]);
        blk = drv_test_open_ok(o, BDRV_O_RDWR);
        drv_test_pattern(want, sizeof(want), 5);
        assert_int_equal(blk_pwrite(blk, 4 * MiB, 4096, want, 0), 0);
        if (blk_truncate(blk, big, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
            fail_msg("grow: %s", error_get_pretty(err));
        }
        assert_int_equal(blk_getlength(blk), big);
        assert_int_equal(blk_pwrite(blk, far, 4096, want + 4096, 0), 0);
        blk_unref(blk);
        /* Both region tables name the new BAT (entry 0 in coblk's images), 4 MiB long. */
        for (int t = 0; t < 2; t++) {
            pread_file((t ? 256 : 192) * KiB, r, 64);
            assert_memory_equal(r + 16, vhdx_guid_bat.b, 16);
            assert_true(ld_le64(r + 32) > 3 * MiB);
            assert_int_equal(ld_le32(r + 40), 2 * MiB);
        }
        blk = drv_test_open_ok(opts(), 0);
        assert_int_equal(blk_getlength(blk), big);
        assert_int_equal(blk_pread(blk, 4 * MiB, 4096, buf, 0), 0);
        assert_memory_equal(buf, want, 4096);
        assert_int_equal(blk_pread(blk, far, 4096, buf + 4096, 0), 0);
        assert_memory_equal(buf + 4096, want + 4096, 4096);
        assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
        for (int i = 0; i < 4096; i++) {
            assert_int_equal(buf[i], 0);
        }
        blk_unref(blk);
        assert_int_equal(check_corruptions(), 0);
    }
}

static int64_t file_len(BlockBackend *blk)
{
    return bdrv_getlength(blk_bs(blk)->file->bs);
}

static uint64_t bat_offset_of(BlockBackend *blk, uint64_t block)
{
    BDRVVhdxState *s = blk_bs(blk)->opaque;

    return s->bat[vhdx_bat_index(s, block)] & VHDX_BAT_OFFSET_MASK;
}

/*
 * The BAT region a move leaves behind takes the next new block (in the
 * session that moved it, and after a reopen); the one after that grows the
 * file. Blocks a shrink dropped take new blocks after a grow.
 */
static void test_vhdx_reuse_space(void **state)
{
    const int64_t big = 200LL * 1024 * MiB, far = 150LL * 1024 * MiB;
    uint8_t *want = malloc(8 * MiB), *buf = malloc(8 * MiB);

    for (int reopen = 0; reopen < 2; reopen++) {
        BlockBackend *blk;
        uint64_t old_bat;
        int64_t len;

        create("size=8M,block_size=1M");
        blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
        old_bat = ((BDRVVhdxState *)blk_bs(blk)->opaque)->bat_offset;
        drv_test_pattern(want, 3 * MiB, 21);
        assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, want, 0), 0);
        assert_int_equal(blk_truncate(blk, big, true, PREALLOC_MODE_OFF, 0, NULL), 0);
        assert_true(((BDRVVhdxState *)blk_bs(blk)->opaque)->bat_offset != old_bat);
        if (reopen) {
            blk_unref(blk);
            blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
        }
        len = file_len(blk);
        assert_int_equal(blk_pwrite(blk, far, 4096, want + 2 * MiB, 0), 0);
        assert_int_equal(bat_offset_of(blk, far / MiB), old_bat);
        assert_int_equal(file_len(blk), len);
        assert_int_equal(blk_pwrite(blk, far + MiB, 4096, want + 2 * MiB + 4096, 0), 0);
        assert_int_equal(file_len(blk), len + MiB);
        blk_unref(blk);
        blk = drv_test_open_ok(opts(), 0);
        assert_int_equal(blk_pread(blk, 0, 2 * MiB, buf, 0), 0);
        assert_memory_equal(buf, want, 2 * MiB);
        assert_int_equal(blk_pread(blk, far, 4096, buf, 0), 0);
        assert_memory_equal(buf, want + 2 * MiB, 4096);
        assert_int_equal(blk_pread(blk, far + MiB, 4096, buf, 0), 0);
        assert_memory_equal(buf, want + 2 * MiB + 4096, 4096);
        blk_unref(blk);
        assert_int_equal(check_corruptions(), 0);
    }

    /* Shrink drops blocks 2..7; grown again, new blocks go into their space. */
    {
        BlockBackend *blk;
        int64_t len;

        create("size=8M,block_size=1M");
        blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
        drv_test_pattern(want, 8 * MiB, 22);
        assert_int_equal(blk_pwrite(blk, 0, 8 * MiB, want, 0), 0);
        assert_int_equal(blk_truncate(blk, 2 * MiB, true, PREALLOC_MODE_OFF, 0, NULL), 0);
        assert_int_equal(blk_truncate(blk, 8 * MiB, true, PREALLOC_MODE_OFF, 0, NULL), 0);
        len = file_len(blk);
        assert_int_equal(blk_pwrite(blk, 5 * MiB, MiB, want + 5 * MiB, 0), 0);
        assert_int_equal(blk_pwrite(blk, 7 * MiB, MiB, want + 7 * MiB, 0), 0);
        assert_int_equal(file_len(blk), len);
        blk_unref(blk);
        memset(want + 2 * MiB, 0, 3 * MiB);
        memset(want + 6 * MiB, 0, MiB);
        blk = drv_test_open_ok(opts(), 0);
        assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
        assert_memory_equal(buf, want, 8 * MiB);
        blk_unref(blk);
        assert_int_equal(check_corruptions(), 0);
    }
    free(want);
    free(buf);
}

/* Appends an optional region of an unknown GUID at *(uint64_t *)arg, 1 MiB long. */
static void add_unknown_region(uint8_t *r, void *arg)
{
    uint32_t n = ld_le32(r + 8);
    uint8_t *e = r + 16 + n * 32;

    memset(e, 0x5c, 16);
    st_le64(e + 16, *(uint64_t *)arg);
    st_le32(e + 24, MiB);
    st_le32(e + 28, 0);
    st_le32(r + 8, n + 1);
}

/*
 * A region this driver does not know may hold anything: an image whose
 * region table names one never has its gaps reused (here the unknown region
 * sits in the old BAT region, which would otherwise take the next block).
 */
static void test_vhdx_unknown_region_no_reuse(void **state)
{
    uint8_t sig[4096], got[4096], data[4096];
    uint64_t old_bat;
    BlockBackend *blk;
    int64_t len;

    create("size=8M,block_size=1M");
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    old_bat = ((BDRVVhdxState *)blk_bs(blk)->opaque)->bat_offset;
    assert_int_equal(blk_truncate(blk, 200LL * 1024 * MiB, true, PREALLOC_MODE_OFF, 0, NULL),
                     0);
    blk_unref(blk);
    patch_checked(192 * KiB, 64 * KiB, add_unknown_region, &old_bat);
    patch_checked(256 * KiB, 64 * KiB, add_unknown_region, &old_bat);
    memset(sig, 0xa7, sizeof(sig));
    pwrite_file((off_t)old_bat, sig, sizeof(sig));
    blk = drv_test_open_ok(opts(), BDRV_O_RDWR);
    len = file_len(blk);
    drv_test_pattern(data, sizeof(data), 23);
    assert_int_equal(blk_pwrite(blk, 150LL * 1024 * MiB, 4096, data, 0), 0);
    assert_int_equal(file_len(blk), len + MiB);
    assert_int_equal(blk_pread(blk, 150LL * 1024 * MiB, 4096, got, 0), 0);
    assert_memory_equal(got, data, sizeof(data));
    blk_unref(blk);
    pread_file((off_t)old_bat, got, sizeof(got));
    assert_memory_equal(got, sig, sizeof(sig));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vhdx_create_rw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_info_and_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_log_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_log_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_in_place_bat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_bad_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_bad_regions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_bad_bat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_bad_kept_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_move_bat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_reuse_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_unknown_region_no_reuse, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
