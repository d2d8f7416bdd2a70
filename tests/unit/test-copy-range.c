/*
 * Unit tests: copy offloading into a node (block/io-copy.c,
 * bdrv_co_copy_range_to) and its qcow2 implementation. The fill function
 * here pwrite()s a pattern at the host offsets the driver hands out, as
 * coblk-img convert -C does with copy_file_range.
 */
#include <fcntl.h>
#include <unistd.h>

#include "drv-test-util.h"

#include "block/block-int.h"

#define KiB 1024
#define CLUSTER (64 * KiB)

static char img[4096], img2[4096];

typedef struct Fill {
    int fd;                 /* the image file, written behind the block layer */
    BlockDriverState *want_file;
    int calls;
    int64_t bytes;
    int fail;               /* -errno returned by the fill, or 0 */
} Fill;

typedef struct CopyArgs {
    BlockDriverState *bs;
    int64_t offset, bytes;
    Fill *fill;
    int ret;
} CopyArgs;

static int coroutine_fn fill_pattern(void *opaque, BlockDriverState *file, int64_t host,
                                     int64_t offset, int64_t bytes)
{
    Fill *f = opaque;
    uint8_t *buf = malloc((size_t)bytes);

    assert_ptr_equal(file, f->want_file);
    assert_int_equal(host % 512, offset % 512);
    f->calls++;
    if (f->fail) {
        free(buf);
        return f->fail;
    }
    for (int64_t i = 0; i < bytes; i++) {
        buf[i] = (uint8_t)((offset + i) / 512 + 1);
    }
    assert_int_equal(pwrite(f->fd, buf, (size_t)bytes, host), bytes);
    f->bytes += bytes;
    free(buf);
    return 0;
}

static void copy_co(void *opaque)
{
    CopyArgs *a = opaque;

    a->ret = bdrv_co_copy_range_to(a->bs, a->offset, a->bytes, fill_pattern, a->fill);
}

static int copy_range(BlockBackend *blk, int64_t offset, int64_t bytes, Fill *f)
{
    CopyArgs a = { blk_bs(blk), offset, bytes, f, 0 };

    f->want_file = bdrv_file_bs(blk_bs(blk));
    drv_test_run_co(blk_get_aio_context(blk), copy_co, &a);
    return a.ret;
}

/* [offset, offset + bytes) reads as the pattern, the bytes around it as zeroes. */
static void assert_pattern_only(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    int64_t len = blk_getlength(blk);
    uint8_t *buf = malloc((size_t)len);

    assert_int_equal(blk_pread(blk, 0, len, buf, 0), 0);
    for (int64_t i = 0; i < len; i++) {
        uint8_t want = i >= offset && i < offset + bytes ? (uint8_t)(i / 512 + 1) : 0;

        if (buf[i] != want) {
            fail_msg("byte %lld: %u, expected %u", (long long)i, buf[i], want);
        }
    }
    free(buf);
}

typedef struct StatusArgs {
    BlockDriverState *bs;
    int64_t bytes, pnum;
    int ret;
} StatusArgs;

static void status_co(void *opaque)
{
    StatusArgs *a = opaque;

    a->ret = bdrv_co_block_status_above(a->bs, NULL, 0, a->bytes, &a->pnum, NULL, NULL, NULL);
}

static BlockBackend *new_qcow2(const char *opts, int *fd)
{
    char err[512] = "";

    unlink(img);
    if (drv_test_create("qcow2", img, opts, err, sizeof(err)) < 0) {
        fail_msg("create: %s", err);
    }
    *fd = open(img, O_WRONLY);
    assert_true(*fd >= 0);
    return drv_test_open_image("qcow2", img, BDRV_O_RDWR);
}

static void test_copy_range_qcow2_allocates_and_links(void **state)
{
    int fd;
    BlockBackend *blk = new_qcow2("size=4M,cluster_size=65536", &fd);
    BlockDriverState *file = bdrv_file_bs(blk_bs(blk));
    unsigned gen = file->write_gen;
    Fill f = { .fd = fd };

    assert_int_equal(copy_range(blk, CLUSTER, 3 * CLUSTER, &f), 0);
    assert_int_equal(f.bytes, 3 * CLUSTER);
    /* The copy went behind the file node: its generation still moved, so a flush runs. */
    assert_true(file->write_gen != gen);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(file->flushed_gen, file->write_gen);
    assert_pattern_only(blk, CLUSTER, 3 * CLUSTER);
    /* Again over the now allocated clusters: in place. */
    f.bytes = 0;
    assert_int_equal(copy_range(blk, CLUSTER, CLUSTER, &f), 0);
    assert_int_equal(f.bytes, CLUSTER);
    blk_unref(blk);
    blk = drv_test_open_image("qcow2", img, 0);
    assert_pattern_only(blk, CLUSTER, 3 * CLUSTER);
    blk_unref(blk);
    close(fd);
}

static void test_copy_range_qcow2_partial_cluster(void **state)
{
    int fd;
    BlockBackend *blk = new_qcow2("size=4M,cluster_size=65536", &fd), *base;
    Fill f = { .fd = fd };
    uint8_t *buf = malloc(CLUSTER);

    /* Part of a new cluster whose rest reads as zero (nothing to copy): done. */
    assert_int_equal(copy_range(blk, 4 * KiB, 8 * KiB, &f), 0);
    assert_pattern_only(blk, 4 * KiB, 8 * KiB);
    blk_unref(blk);
    close(fd);

    /* Over a backing file the rest must be copied (COW): refused, nothing linked. */
    rename(img, img2);
    base = drv_test_open_image("qcow2", img2, BDRV_O_RDWR);
    memset(buf, 0x55, CLUSTER);
    assert_int_equal(blk_pwrite(base, 0, CLUSTER, buf, 0), 0);
    blk_unref(base);
    unlink(img);
    {
        char opts[8192];

        snprintf(opts, sizeof(opts), "size=4M,backing_file=%s,backing_fmt=qcow2", img2);
        blk = new_qcow2(opts, &fd);
    }
    f = (Fill){ .fd = fd };
    assert_int_equal(copy_range(blk, 4 * KiB, 8 * KiB, &f), -ENOTSUP);
    assert_int_equal(f.calls, 0);
    memset(buf, 0, CLUSTER);
    assert_int_equal(blk_pread(blk, 0, CLUSTER, buf, 0), 0);
    for (int i = 0; i < CLUSTER; i++) {
        assert_int_equal(buf[i], 0x55);
    }
    blk_unref(blk);
    close(fd);
    unlink(img2);
    free(buf);
}

static void test_copy_range_qcow2_fill_error_frees(void **state)
{
    int fd;
    BlockBackend *blk = new_qcow2("size=4M,cluster_size=65536", &fd);
    Fill f = { .fd = fd, .fail = -EXDEV };
    StatusArgs st = { blk_bs(blk), 2 * CLUSTER, 0, 0 };

    assert_int_equal(copy_range(blk, 0, 2 * CLUSTER, &f), -EXDEV);
    assert_int_equal(f.calls, 1);
    /* Not linked: the range is still unallocated and reads as zeroes. */
    drv_test_run_co(blk_get_aio_context(blk), status_co, &st);
    assert_true(st.ret >= 0);
    assert_int_equal(st.ret & BDRV_BLOCK_ALLOCATED, 0);
    assert_int_equal(st.pnum, 2 * CLUSTER);
    assert_pattern_only(blk, 0, 0);
    /* The clusters went back: the next copy gets a working image. */
    f.fail = 0;
    assert_int_equal(copy_range(blk, 0, 2 * CLUSTER, &f), 0);
    assert_pattern_only(blk, 0, 2 * CLUSTER);
    blk_unref(blk);
    close(fd);
}

static void test_copy_range_refused(void **state)
{
    int fd;
    BlockBackend *blk = new_qcow2("size=1M", &fd);
    Fill f = { .fd = fd };

    blk_unref(blk);
    /* Read-only node. */
    blk = drv_test_open_image("qcow2", img, 0);
    assert_int_equal(copy_range(blk, 0, CLUSTER, &f), -EPERM);
    blk_unref(blk);
    /* A driver without the callback. */
    blk = drv_test_open_image("raw", img, BDRV_O_RDWR);
    assert_int_equal(copy_range(blk, 0, CLUSTER, &f), -ENOTSUP);
    assert_int_equal(f.calls, 0);
    blk_unref(blk);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_range_qcow2_allocates_and_links),
        cmocka_unit_test(test_copy_range_qcow2_partial_cluster),
        cmocka_unit_test(test_copy_range_qcow2_fill_error_frees),
        cmocka_unit_test(test_copy_range_refused),
    };
    int ret;

    drv_test_path(img, sizeof(img), "copy-range");
    drv_test_path(img2, sizeof(img2), "copy-range-base");
    ret = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(img);
    return ret;
}
