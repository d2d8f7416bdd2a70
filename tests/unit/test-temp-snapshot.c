/*
 * Unit tests: snapshot=on / BDRV_O_SNAPSHOT (block/open.c): the image opens
 * read-only under a temporary qcow2 overlay in $TMPDIR that takes every
 * write; the image's bytes never change and the overlay file is gone once
 * the node is open.
 */
#include <dirent.h>
#include <sys/stat.h>

#include "drv-test-util.h"

#define MiB (1024 * 1024)

static char img[4096], tmpdir[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "tmpsnap");
    snprintf(tmpdir, sizeof(tmpdir), "%s/coblk-tmpsnap-dir-%d", drv_test_dir(), (int)getpid());
    mkdir(tmpdir, 0700);
    setenv("TMPDIR", tmpdir, 1);
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    rmdir(tmpdir);
    return 0;
}

static int dir_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d))) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* A 4 MiB raw image: 1 MiB of pattern 1 at 0, the rest zeroes. */
static void make_image(void)
{
    uint8_t *buf = malloc(MiB);

    assert_non_null(buf);
    drv_test_make_file(img, 4 * MiB, 0);
    BlockBackend *blk = drv_test_open_image("raw", img, BDRV_O_RDWR);
    memset(buf, 1, MiB);
    assert_int_equal(blk_pwrite(blk, 0, MiB, buf, 0), 0);
    blk_unref(blk);
    free(buf);
}

static void check_image_unchanged(void)
{
    uint8_t *buf = malloc(4 * MiB);
    int fd = open(img, O_RDONLY);

    assert_non_null(buf);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, 4 * MiB, 0), 4 * MiB);
    close(fd);
    for (int64_t i = 0; i < 4 * MiB; i++) {
        if (buf[i] != (i < MiB ? 1 : 0)) {
            fail_msg("image byte %lld changed to %u", (long long)i, buf[i]);
        }
    }
    free(buf);
}

static void write_through_snapshot(BlockBackend *blk)
{
    uint8_t w[8192], r[8192];

    assert_int_equal(dir_entries(tmpdir), 0); /* the overlay is unlinked once open */
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "qcow2");
    assert_int_equal(blk_getlength(blk), 4 * MiB);
    memset(w, 7, sizeof(w));
    /* Across the end of the pattern: half backing data, half new. */
    assert_int_equal(blk_pwrite(blk, MiB - 4096, sizeof(w), w, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(blk_pread(blk, MiB - 8192, sizeof(r), r, 0), 0);
    for (int i = 0; i < 4096; i++) {
        assert_int_equal(r[i], 1);
        assert_int_equal(r[4096 + i], 7);
    }
    assert_int_equal(blk_pread(blk, 3 * MiB, sizeof(r), r, 0), 0);
    for (size_t i = 0; i < sizeof(r); i++) {
        assert_int_equal(r[i], 0);
    }
}

static void test_snapshot_flag_keeps_image(void **state)
{
    BlockBackend *blk;

    make_image();
    blk = drv_test_open_image("raw", img, BDRV_O_RDWR | BDRV_O_SNAPSHOT);
    assert_true(bdrv_is_read_only(bdrv_backing_bs(blk_bs(blk))));
    write_through_snapshot(blk);
    blk_unref(blk);
    check_image_unchanged();
    assert_int_equal(dir_entries(tmpdir), 0);
}

static void test_snapshot_option_keeps_image(void **state)
{
    char opts[8192];
    BlockBackend *blk;

    make_image();
    snprintf(opts, sizeof(opts), "driver=raw,file.driver=file,file.filename=%s,snapshot=on",
             img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    write_through_snapshot(blk);
    blk_unref(blk);
    check_image_unchanged();
}

/* A read-only snapshot stays read-only (as qemu-io -s -r). */
static void test_snapshot_read_only(void **state)
{
    uint8_t b[512] = { 0 };
    BlockBackend *blk;

    make_image();
    blk = drv_test_open_image("raw", img, BDRV_O_SNAPSHOT);
    assert_true(blk_pwrite(blk, 0, sizeof(b), b, 0) < 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(b), b, 0), 0);
    assert_int_equal(b[0], 1);
    blk_unref(blk);
    check_image_unchanged();
}

static void test_snapshot_bad_tmpdir(void **state)
{
    char opts[8192], dir[4200];

    make_image();
    snprintf(dir, sizeof(dir), "%s/no-such-dir", tmpdir);
    setenv("TMPDIR", dir, 1);
    snprintf(opts, sizeof(opts), "driver=raw,file.driver=file,file.filename=%s", img);
    drv_test_open_fails(opts, BDRV_O_RDWR | BDRV_O_SNAPSHOT,
                        "Could not create a temporary snapshot file in");
    setenv("TMPDIR", tmpdir, 1);
    snprintf(opts, sizeof(opts), "driver=raw,file.driver=file,file.filename=%s,snapshot=maybe",
             img);
    drv_test_open_fails(opts, BDRV_O_RDWR, "snapshot");
    check_image_unchanged();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_flag_keeps_image),
        cmocka_unit_test(test_snapshot_option_keeps_image),
        cmocka_unit_test(test_snapshot_read_only),
        cmocka_unit_test(test_snapshot_bad_tmpdir),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
