/*
 * Unit tests: the vmdk driver (drivers/format/vmdk/): create, write and
 * read back every subformat, zeroed grains, parent links, probe, info, and
 * corrupt or hostile images (bad magic/version, grain size 0, GTEs per GT,
 * huge or out-of-file grain directories, a GTE past EOF, oversized
 * descriptors, too many extents, non-sibling and json: extent names,
 * a stream without its footer, a broken compressed grain), and the image
 * locks kept across a descriptor file replaced by rename.
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include <coblk/image.h>

#define KiB 1024
#define MiB (1024 * 1024)

static char dir[4096], img[4200];

static int setup(void **state)
{
    char rel[4096];

    snprintf(rel, sizeof(rel), "%s/vmdk-%d", drv_test_dir(), (int)getpid());
    mkdir(rel, 0755);
    if (!realpath(rel, dir)) {
        return -1;
    }
    snprintf(img, sizeof(img), "%s/t.vmdk", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[8300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void create(const char *path, const char *opts)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, opts, NULL, &err), 0);
    if (bdrv_create("vmdk", path, o, &err) < 0) {
        fail_msg("create %s (%s): %s", path, opts, error_get_pretty(err));
    }
}

static const char *opts_for(const char *path, const char *extra)
{
    static char buf[8400];

    snprintf(buf, sizeof(buf), "driver=vmdk,file.driver=file,file.filename=%s%s%s", path,
             *extra ? "," : "", extra);
    return buf;
}

static void patch(const char *path, off_t off, const void *bytes, size_t len)
{
    int fd = open(path, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, len, off), (ssize_t)len);
    close(fd);
}

static void patch_le32(const char *path, off_t off, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

    patch(path, off, b, 4);
}

static void patch_le64(const char *path, off_t off, uint64_t v)
{
    patch_le32(path, off, (uint32_t)v);
    patch_le32(path, off + 4, (uint32_t)(v >> 32));
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Writes a pattern at several offsets (aligned, unaligned, across grains) and reads it. */
static void exercise(const char *path, int64_t size)
{
    static const int64_t offs[][2] = {
        { 0, 64 * KiB }, { 70 * KiB, 5 * KiB }, { 1 * MiB - 512, 1024 }, { 3 * MiB, 192 * KiB },
    };
    uint8_t *want = calloc(1, (size_t)size), *buf = malloc((size_t)size);
    BlockBackend *blk = drv_test_open_ok(opts_for(path, ""), BDRV_O_RDWR);

    assert_int_equal(blk_getlength(blk), size);
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        drv_test_pattern(want + offs[i][0], (size_t)offs[i][1], (uint8_t)(i + 1));
        assert_int_equal(blk_pwrite(blk, offs[i][0], offs[i][1], want + offs[i][0], 0), 0);
    }
    assert_int_equal(blk_pwrite_zeroes(blk, 3 * MiB + 64 * KiB, 64 * KiB, 0), 0);
    memset(want + 3 * MiB + 64 * KiB, 0, 64 * KiB);
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    blk_unref(blk);
    blk = drv_test_open_ok(opts_for(path, ""), 0);
    memset(buf, 0xee, (size_t)size);
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void quiet(void *opaque, const char *msg)
{
}

/* coblk's check finds nothing wrong in an image it wrote. */
static void check_clean(const char *path)
{
    BlockBackend *blk = drv_test_open_ok(opts_for(path, ""), 0);
    BdrvCheckResult res = { .report = quiet };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.check_errors, 0);
    blk_unref(blk);
}

static void test_vmdk_subformats(void **state)
{
    static const char *const sfs[] = { "monolithicSparse", "monolithicFlat",
                                       "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                                       "streamOptimized" };
    char opts[256];

    for (size_t i = 0; i < sizeof(sfs) / sizeof(sfs[0]); i++) {
        for (int zg = 0; zg < 2; zg++) {
            snprintf(opts, sizeof(opts), "size=5M,subformat=%s,zeroed_grain=%s", sfs[i],
                     zg ? "on" : "off");
            create(img, opts);
            exercise(img, 5 * MiB);
            check_clean(img);
        }
    }
}

static void test_vmdk_probe_and_info(void **state)
{
    BlockBackend *blk;
    BlockDriverInfo bdi;
    BlockGeometry geo;
    char *json;

    create(img, "size=100M,adapter_type=lsilogic");
    blk = blk_new_open(img, NULL, 0, NULL);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "vmdk");
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 64 * KiB);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &geo), 0);
    assert_int_equal(geo.heads, 255);
    assert_int_equal(geo.sectors, 63);
    json = bdrv_get_specific_info(blk_bs(blk), NULL);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"create-type\": \"monolithicSparse\""));
    assert_non_null(strstr(json, "\"parent-cid\": 4294967295"));
    assert_non_null(strstr(json, "\"cluster-size\": 65536"));
    free(json);
    blk_unref(blk);
}

static void test_vmdk_backing(void **state)
{
    char base[4200], opts[4400];
    uint8_t buf[16 * KiB], want[16 * KiB];
    BlockBackend *blk;

    snprintf(base, sizeof(base), "%s/base.vmdk", dir);
    create(base, "size=1M");
    blk = drv_test_open_ok(opts_for(base, ""), BDRV_O_RDWR);
    memset(want, 0x11, sizeof(want));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(want), want, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "backing_file=base.vmdk");
    create(img, opts);
    blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR);
    assert_non_null(bdrv_backing_bs(blk_bs(blk)));
    assert_int_equal(blk_getlength(blk), MiB);
    memset(want + 4096, 0x22, 512);
    assert_int_equal(blk_pwrite(blk, 4096, 512, want + 4096, 0), 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    blk_unref(blk);
    /* Untrusted: a parent named with a path is refused; a sibling is fine. */
    blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_UNTRUSTED);
    blk_unref(blk);
}

/* The CID in the descriptor of path (as the driver read it). */
static uint32_t cid_of(const char *path, bool parent)
{
    BlockBackend *blk = drv_test_open_ok(opts_for(path, ""), BDRV_O_NO_BACKING);
    char *json = bdrv_get_specific_info(blk_bs(blk), NULL);
    const char *p = strstr(json, parent ? "\"parent-cid\": " : "\"cid\": ");
    uint32_t v;

    assert_non_null(p);
    v = (uint32_t)strtoul(strchr(p, ':') + 1, NULL, 10);
    free(json);
    blk_unref(blk);
    return v;
}

/* Fills parent path with byte (128 KiB). */
static void fill_parent(const char *path, uint8_t byte)
{
    uint8_t buf[128 * KiB];
    BlockBackend *blk;

    create(path, "size=1M");
    blk = drv_test_open_ok(opts_for(path, ""), BDRV_O_RDWR);
    memset(buf, byte, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
}

/* Reads 128 KiB of path: grain 0 is the child's (copied from pa: 0xa1, 0x33 at 4096). */
static void expect_child(const char *path, uint8_t rest)
{
    uint8_t buf[128 * KiB], want[128 * KiB];
    BlockBackend *blk = drv_test_open_ok(opts_for(path, ""), 0);

    memset(want, 0xa1, 64 * KiB);
    memset(want + 4096, 0x33, 512);
    memset(want + 64 * KiB, rest, 64 * KiB);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    blk_unref(blk);
}

/* parentFileNameHint and parentCID follow a new parent (monolithic and descriptor file). */
static void test_vmdk_set_parent(void **state)
{
    static const char *const sfs[] = { "monolithicSparse", "twoGbMaxExtentSparse" };
    char a[4200], b[4200], opts[256], *got = NULL;
    uint8_t buf[512];
    Error *err = NULL;
    BlockBackend *blk;

    snprintf(a, sizeof(a), "%s/pa.vmdk", dir);
    snprintf(b, sizeof(b), "%s/pb.vmdk", dir);
    fill_parent(a, 0xa1);
    fill_parent(b, 0xb2);
    for (size_t i = 0; i < sizeof(sfs) / sizeof(sfs[0]); i++) {
        snprintf(opts, sizeof(opts), "backing_file=pa.vmdk,subformat=%s", sfs[i]);
        create(img, opts);
        blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR);
        memset(buf, 0x33, 512);
        assert_int_equal(blk_pwrite(blk, 4096, 512, buf, 0), 0);
        assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), "pb.vmdk", NULL), 0);
        assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &got), 0);
        assert_string_equal(got, "pb.vmdk");
        free(got);
        assert_int_equal(bdrv_change_backing_file(blk_bs(blk), "pb.vmdk", "qcow2", &err),
                         -ENOTSUP);
        error_free(err);
        err = NULL;
        blk_unref(blk);

        blk = drv_test_open_ok(opts_for(img, ""), 0);
        assert_string_equal(blk_bs(blk)->backing_file, "pb.vmdk");
        blk_unref(blk);
        expect_child(img, 0xb2);
        assert_int_equal(cid_of(img, true), cid_of(b, false));
        check_clean(img);

        /* No parent: the unwritten grains read zeroes, parentCID is ffffffff. */
        blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR | BDRV_O_NO_BACKING);
        assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), NULL, NULL), 0);
        blk_unref(blk);
        blk = drv_test_open_ok(opts_for(img, ""), 0);
        assert_string_equal(blk_bs(blk)->backing_file, "");
        assert_null(bdrv_backing_bs(blk_bs(blk)));
        blk_unref(blk);
        expect_child(img, 0);
        assert_int_equal(cid_of(img, true), 0xffffffffU);

        /* And back to a parent: the hint line is added again. */
        blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR | BDRV_O_NO_BACKING);
        assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), "pa.vmdk", NULL), 0);
        blk_unref(blk);
        expect_child(img, 0xa1);
        assert_int_equal(cid_of(img, true), cid_of(a, false));
        check_clean(img);
    }
}

/* ---------------------------------------------------------------------- */
/* Corrupt images */

static void expect_open_error(const char *path, int flags, const char *want)
{
    drv_test_open_fails(opts_for(path, ""), flags, want);
}

static void test_vmdk_bad_header(void **state)
{
    create(img, "size=1M");
    patch_le32(img, 4, 9);
    expect_open_error(img, 0, "unsupported sparse extent version 9");
    create(img, "size=1M");
    patch_le64(img, 20, 0);
    expect_open_error(img, 0, "grainSize 0");
    create(img, "size=1M");
    patch_le64(img, 20, 100);
    expect_open_error(img, 0, "grainSize 100");
    create(img, "size=1M");
    patch_le32(img, 44, 0);
    expect_open_error(img, 0, "numGTEsPerGT 0");
    create(img, "size=1M");
    patch_le32(img, 44, 4096);
    expect_open_error(img, 0, "numGTEsPerGT 4096");
    create(img, "size=1M");
    patch(img, 0, "COWD", 4);
    expect_open_error(img, 0, "COWD");
}

static void test_vmdk_bad_gd(void **state)
{
    /* 2^40 sectors of 64 KiB grains: a 64 MiB grain directory. */
    create(img, "size=1M");
    patch_le64(img, 12, 1ULL << 40);
    expect_open_error(img, 0, "exceeds the limit");
    /* 2^34 sectors: a 1 MiB directory, past the end of a small file. */
    create(img, "size=1M");
    patch_le64(img, 12, 1ULL << 34);
    expect_open_error(img, 0, "past the end of the file");
    /* A GD entry that points past the end. */
    create(img, "size=1M");
    patch_le32(img, 26 * 512, 0x100000);
    expect_open_error(img, 0, "points at sector 1048576");
    /* gdOffset itself past the end. */
    create(img, "size=1M");
    patch_le64(img, 56, 1ULL << 50);
    expect_open_error(img, 0, "past the end");
}

/*
 * Every descriptor and header field error a bad image reaches that
 * test_vmdk_bad_descriptor does not: short and malformed extent lines, bad
 * numbers, an overlong line and createType, extents adding up past the
 * largest size (checked addition), a descriptor that gives a sparse extent
 * more sectors than its header, a capacity past the largest size and an
 * unknown compression algorithm.
 */
static void test_vmdk_bad_descriptor_fields(void **state)
{
    static const char head[] = "# Disk DescriptorFile\ncreateType=\"custom\"\n";
    char text[9000], ext[4300];
    const unsigned long long max = (unsigned long long)BDRV_MAX_LENGTH / 512;
    static const struct { const char *body, *want; } cases[] = {
        { "RW 10\n", "needs access, size and type" },
        { "RW 10 FLAT data.bin\n", "needs a quoted file name" },
        { "RW 10 FLAT \"\"\n", "needs a quoted file name" },
        { "RW 10 FLAT \"data.bin\" 1y\n", "bad extent offset '1y'" },
        { "RW 10 SPARSE \"data.bin\" 5\n", "bad extent offset '5'" },
        { "RW 10 ZERO\nddb.geometry.cylinders = \"x1\"\n", "ddb.geometry.cylinders 'x1' is "
          "not a number" },
        { "CID=zz\nRW 10 ZERO\n", "CID 'zz' is not a 32-bit hex number" },
        { "parentCID=123456789\nRW 10 ZERO\n", "is not a 32-bit hex number" },
        { "RW 99999999999999999999 ZERO\n", "is not a sector count" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s%s", head, cases[i].body);
        write_text(img, text);
        expect_open_error(img, 0, cases[i].want);
    }
    /* A line longer than the parser's limit, and a createType too long to keep. */
    snprintf(text, sizeof(text), "%s# ", head);
    memset(text + strlen(text), 'x', 5000);
    text[strlen(head) + 2 + 5000] = '\0';
    strcat(text, "\nRW 10 ZERO\n");
    write_text(img, text);
    expect_open_error(img, 0, "is longer than");
    snprintf(text, sizeof(text), "# Disk DescriptorFile\ncreateType=\"%0100d\"\nRW 1 ZERO\n", 7);
    write_text(img, text);
    expect_open_error(img, 0, "is too long");
    /* Two extents of the largest size each: their sum is refused, not wrapped. */
    snprintf(text, sizeof(text), "%sRW %llu ZERO\nRW %llu ZERO\n", head, max, max);
    write_text(img, text);
    expect_open_error(img, 0, "the extents add up to more than");
    /* A sparse extent the descriptor makes larger than its header's capacity. */
    snprintf(ext, sizeof(ext), "%s/ext-s001.vmdk", dir);
    create(ext, "size=1M");
    snprintf(text, sizeof(text), "# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\n"
             "RW 4096 SPARSE \"ext-s001.vmdk\"\n");
    write_text(img, text);
    expect_open_error(img, 0, "the descriptor gives the extent 4096 sectors but its header "
                      "only 2048");
    unlink(ext);
    /* Header: capacity past the largest size, an unknown compressAlgorithm. */
    create(img, "size=1M");
    patch_le64(img, 12, max + 1);
    expect_open_error(img, 0, "is too large");
    create(img, "size=1M");
    patch(img, 77, "\x05\x00", 2);
    expect_open_error(img, 0, "unsupported compressAlgorithm 5");
}

static void test_vmdk_gte_past_eof(void **state)
{
    uint8_t buf[4096];
    BlockBackend *blk;

    create(img, "size=1M");
    /* The first GT of the (non-redundant) directory starts at sector 27. */
    patch_le32(img, 27 * 512, 0x100000);
    blk = drv_test_open_ok(opts_for(img, ""), 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 64 * KiB, sizeof(buf), buf, 0), 0);
    {
        BdrvCheckResult res = { .report = quiet };

        assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
        assert_int_equal(res.corruptions, 1);
    }
    blk_unref(blk);
    /* A GTE pointing into the header area is refused too. */
    create(img, "size=1M");
    patch_le32(img, 27 * 512, 2);
    blk = drv_test_open_ok(opts_for(img, ""), 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), -EIO);
    blk_unref(blk);
}

static void test_vmdk_bad_descriptor(void **state)
{
    char *big = malloc(MiB + 100);
    char text[9000];

    /* Too large. */
    memset(big, '#', MiB + 99);
    memcpy(big, "# Disk DescriptorFile\n", 22);
    big[MiB + 99] = '\0';
    write_text(img, big);
    expect_open_error(img, 0, "too large");
    free(big);
    /* Embedded descriptor size past the end. */
    create(img, "size=1M");
    patch_le64(img, 36, 1ULL << 40);
    expect_open_error(img, 0, "embedded descriptor");
    /* Unknown createType / extent type, no createType, garbage line. */
    write_text(img, "# Disk DescriptorFile\nversion=1\ncreateType=\"vmfsSparse\"\n"
                    "RW 10 ZERO\n");
    expect_open_error(img, 0, "createType 'vmfsSparse' is not supported");
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\nRW 10 VMFSRDM \"x\"\n");
    expect_open_error(img, 0, "extent type 'VMFSRDM' is not supported");
    write_text(img, "# Disk DescriptorFile\nRW 10 ZERO\n");
    expect_open_error(img, 0, "no createType");
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\nfoo bar\n");
    expect_open_error(img, 0, "neither a key=value pair");
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\nRW 1x ZERO\n");
    expect_open_error(img, 0, "extent size '1x'");
    write_text(img, "# Disk DescriptorFile\nversion=7\ncreateType=\"custom\"\nRW 1 ZERO\n");
    expect_open_error(img, 0, "descriptor version '7'");
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\n");
    expect_open_error(img, 0, "no extents");
    /* Too many extents. */
    snprintf(text, sizeof(text), "# Disk DescriptorFile\ncreateType=\"custom\"\n");
    big = malloc(64 * 1024);
    strcpy(big, text);
    for (int i = 0; i < 4097; i++) {
        strcat(big, "RW 1 ZERO\n");
    }
    write_text(img, big);
    expect_open_error(img, 0, "more than 4096 extents");
    free(big);
    /* RDONLY extents refuse writes, NOACCESS extents refuse reads. */
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\n"
                    "RDONLY 8 ZERO\nNOACCESS 8 ZERO\n");
    {
        BlockBackend *blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR);
        uint8_t buf[4096] = { 0 };

        assert_int_equal(blk_pwrite(blk, 0, 4096, buf, 0), -EACCES);
        assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
        assert_int_equal(blk_pread(blk, 4096, 4096, buf, 0), -EACCES);
        blk_unref(blk);
    }
    /* ZERO extents work and read as zeroes. */
    write_text(img, "# Disk DescriptorFile\ncreateType=\"custom\"\nRW 8 ZERO\nRW 8 ZERO\n");
    {
        BlockBackend *blk = drv_test_open_ok(opts_for(img, ""), 0);
        uint8_t buf[8192];

        memset(buf, 1, sizeof(buf));
        assert_int_equal(blk_getlength(blk), 8192);
        assert_int_equal(blk_pread(blk, 0, 8192, buf, 0), 0);
        for (size_t i = 0; i < sizeof(buf); i++) {
            assert_int_equal(buf[i], 0);
        }
        blk_unref(blk);
    }
}

static void test_vmdk_extent_paths(void **state)
{
    char text[9000], flat[4200];

    snprintf(flat, sizeof(flat), "%s/data.bin", dir);
    drv_test_make_file(flat, 4096, 0x42);
    /* A sibling flat extent opens in untrusted mode. */
    write_text(img, "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\n"
                    "RW 8 FLAT \"data.bin\" 0\n");
    {
        BlockBackend *blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_UNTRUSTED);
        blk_unref(blk);
    }
    /* A path outside the directory only when trusted. */
    snprintf(text, sizeof(text), "# Disk DescriptorFile\ncreateType=\"vmfs\"\n"
             "RW 8 VMFS \"%s\"\n", flat);
    write_text(img, text);
    expect_open_error(img, BDRV_O_UNTRUSTED, "is not a sibling of the descriptor");
    {
        BlockBackend *blk = drv_test_open_ok(opts_for(img, ""), 0);
        blk_unref(blk);
    }
    write_text(img, "# Disk DescriptorFile\ncreateType=\"vmfs\"\nRW 8 VMFS \"../x.bin\"\n");
    expect_open_error(img, BDRV_O_UNTRUSTED, "is not a sibling of the descriptor");
    write_text(img, "# Disk DescriptorFile\ncreateType=\"vmfs\"\nRW 8 VMFS \"json:{}\"\n");
    expect_open_error(img, 0, "is not allowed");
    /* A sparse extent whose header is garbage. */
    write_text(img, "# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\n"
                    "RW 8 SPARSE \"data.bin\"\n");
    expect_open_error(img, 0, "bad magic");
}

static void test_vmdk_stream_corrupt(void **state)
{
    uint8_t buf[64 * KiB];
    BlockBackend *blk;
    struct stat st;

    create(img, "size=1M,subformat=streamOptimized");
    blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    /* The stream ends with an end-of-stream marker: a zero sector after the grain. */
    assert_int_equal(stat(img, &st), 0);
    {
        uint8_t eos[512], zero[512] = { 0 };
        FILE *f = fopen(img, "rb");

        assert_non_null(f);
        assert_int_equal(fseek(f, (long)st.st_size - 512, SEEK_SET), 0);
        assert_int_equal(fread(eos, 1, sizeof(eos), f), sizeof(eos));
        fclose(f);
        assert_memory_equal(eos, zero, sizeof(eos));
    }
    /* Break the deflate data of the first grain (appended after the overhead). */
    patch(img, st.st_size - 1024 + 0, "\0\0\0\0\0\0\0\0\x10\0\0\0\xff\xff\xff\xff", 16);
    blk = drv_test_open_ok(opts_for(img, ""), 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), -EIO);
    blk_unref(blk);
    /* GD_AT_END without a footer. */
    patch_le64(img, 56, ~0ULL);
    expect_open_error(img, 0, "no footer marker");
}

static ino_t inode_of(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* Another open of the file at path, read-write and read-only, is refused for its lock. */
static void assert_locked(const char *path)
{
    char opts[8400];

    snprintf(opts, sizeof(opts), "driver=file,filename=%s", path);
    drv_test_open_fails(opts, BDRV_O_RDWR, "lock");
    drv_test_open_fails(opts, 0, "lock");
}

/*
 * The descriptor file is replaced by a rename when it changes (its CID at
 * the first write, a rename of the image): the image locks move to the new
 * file, so a second open of the descriptor is refused while the image is
 * open, and the node keeps working on the new file.
 */
static void test_vmdk_desc_replace_keeps_lock(void **state)
{
    char renamed[4300], opts[8400];
    uint8_t buf[4096], back[4096];
    BlockBackend *blk;
    ino_t ino;

    memset(buf, 0x3c, sizeof(buf));
    snprintf(renamed, sizeof(renamed), "%s/moved.vmdk", dir);
    create(img, "size=1M,subformat=monolithicFlat");
    blk = drv_test_open_ok(opts_for(img, ""), BDRV_O_RDWR);
    assert_locked(img);
    ino = inode_of(img);
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0); /* new CID */
    assert_true(inode_of(img) != ino);                             /* replaced */
    assert_locked(img);
    assert_int_equal(blk_flush(blk), 0);

    assert_int_equal(bdrv_rename(blk_bs(blk), renamed, NULL), 0);  /* rewrites the extent name */
    assert_locked(renamed);
    assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
    assert_memory_equal(back, buf, sizeof(back));
    blk_unref(blk);

    snprintf(opts, sizeof(opts), "driver=file,filename=%s", renamed);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);                     /* free after close */
    blk_unref(blk);
    /*
     * Opened read-only and reopened read-write, the file node reads and
     * writes through a new fd but holds its locks on the first one: both
     * move to the replaced file.
     */
    blk = drv_test_open_ok(opts_for(renamed, ""), 0);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, NULL), 0);
    ino = inode_of(renamed);
    assert_int_equal(blk_pwrite(blk, 8192, sizeof(buf), buf, 0), 0); /* new CID */
    assert_true(inode_of(renamed) != ino);
    assert_locked(renamed);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    drv_test_open_fails(opts, BDRV_O_RDWR, "lock");                /* we read it */
    blk_unref(drv_test_open_ok(opts, 0));                          /* shared reads */
    assert_int_equal(blk_pread(blk, 8192, sizeof(back), back, 0), 0);
    assert_memory_equal(back, buf, sizeof(back));
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vmdk_subformats),
        cmocka_unit_test(test_vmdk_probe_and_info),
        cmocka_unit_test(test_vmdk_backing),
        cmocka_unit_test(test_vmdk_set_parent),
        cmocka_unit_test(test_vmdk_bad_header),
        cmocka_unit_test(test_vmdk_bad_gd),
        cmocka_unit_test(test_vmdk_gte_past_eof),
        cmocka_unit_test(test_vmdk_bad_descriptor),
        cmocka_unit_test(test_vmdk_bad_descriptor_fields),
        cmocka_unit_test(test_vmdk_extent_paths),
        cmocka_unit_test(test_vmdk_stream_corrupt),
        cmocka_unit_test(test_vmdk_desc_replace_keeps_lock),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
