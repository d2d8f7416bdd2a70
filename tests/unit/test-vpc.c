/*
 * Unit tests: the vpc (VHD) format driver (drivers/format/vpc.c): size and
 * geometry rules of create, force_size, fixed disks, concurrent allocating
 * writes, differencing disks (sector bitmaps, block status, parent UUID),
 * UUID and geometry metadata, and the create option errors.
 * qemu-img interop and corrupt images are in tests/interop/vpc-*.sh.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"

#define MiB (1024 * 1024)

static char img[4096], parent[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vpc");
    drv_test_path(parent, sizeof(parent), "vpc-parent");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(parent);
    return 0;
}

static int create(const char *path, const char *optstr, char *errmsg, size_t errlen)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int ret;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, NULL), 0);
    ret = bdrv_create("vpc", path, o, &err);
    if (ret < 0 && errmsg) {
        snprintf(errmsg, errlen, "%s", error_get_pretty(err));
    }
    error_free(err);
    return ret;
}

static BlockBackend *open_vpc(const char *path, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=vpc,file.driver=file,file.filename=%s", path);
    return drv_test_open_ok(opts, flags);
}

static void test_vpc_sizes_and_geometry(void **state)
{
    BlockGeometry g;
    BlockBackend *blk;

    /* 10 MiB rounds up to 302/4/17, as the specification's table gives. */
    assert_int_equal(create(img, "size=10M", NULL, 0), 0);
    blk = open_vpc(img, 0);
    assert_int_equal(blk_getlength(blk), 302 * 4 * 17 * 512);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &g), 0);
    assert_int_equal(g.cylinders, 302);
    assert_int_equal(g.heads, 4);
    assert_int_equal(g.sectors, 17);
    blk_unref(blk);

    /* force_size keeps the size and stores the largest geometry. */
    assert_int_equal(create(img, "size=10M,force_size=on", NULL, 0), 0);
    blk = open_vpc(img, 0);
    assert_int_equal(blk_getlength(blk), 10 * MiB);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &g), 0);
    assert_int_equal(g.cylinders, 65535);
    assert_int_equal(g.heads, 16);
    assert_int_equal(g.sectors, 255);
    blk_unref(blk);

    /* A 4 GiB disk needs 63 sectors per track. */
    assert_int_equal(create(img, "size=4G", NULL, 0), 0);
    blk = open_vpc(img, 0);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &g), 0);
    assert_int_equal(g.heads, 16);
    assert_int_equal(g.sectors, 63);
    assert_true(blk_getlength(blk) >= 4LL << 30);
    assert_int_equal(blk_getlength(blk), (int64_t)g.cylinders * 16 * 63 * 512);
    blk_unref(blk);
}

static void test_vpc_fixed(void **state)
{
    uint8_t want[8192], buf[8192];
    struct stat st;
    BlockBackend *blk;

    assert_int_equal(create(img, "size=4M,subformat=fixed,force_size=on", NULL, 0), 0);
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, 4 * MiB + 512);
    blk = open_vpc(img, BDRV_O_RDWR);
    drv_test_pattern(want, sizeof(want), 4);
    assert_int_equal(blk_pwrite(blk, 4 * MiB - 8192, 8192, want, 0), 0);
    assert_int_equal(blk_pread(blk, 4 * MiB - 8192, 8192, buf, 0), 0);
    assert_memory_equal(buf, want, 8192);
    blk_unref(blk);
    /* The footer after the data is intact. */
    blk = open_vpc(img, 0);
    assert_int_equal(blk_getlength(blk), 4 * MiB);
    blk_unref(blk);
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

static void test_vpc_concurrent_alloc(void **state)
{
    enum { N = 16, LEN = 512 * 1024 };
    uint8_t *want = malloc(8 * MiB), *buf = malloc(8 * MiB);
    BdrvCheckResult res = { 0 };
    ConcReq reqs[N];
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(create(img, "size=8M,force_size=on", NULL, 0), 0);
    blk = open_vpc(img, BDRV_O_RDWR);
    drv_test_pattern(want, 8 * MiB, 6);
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
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.allocated_clusters, 4);
    blk_unref(blk);
    blk = open_vpc(img, 0);
    assert_int_equal(blk_pread(blk, 0, 8 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 8 * MiB);
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

static void test_vpc_differencing(void **state)
{
    uint8_t *want = malloc(4 * MiB), *buf = malloc(4 * MiB);
    uint8_t puuid[16], got[16], u2[16];
    char name[8300], msg[1024];
    BlockBackend *blk;
    StatusQuery q;
    int ret;

    assert_int_equal(create(parent, "size=4M,force_size=on", NULL, 0), 0);
    blk = open_vpc(parent, BDRV_O_RDWR);
    memset(want, 0x77, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, puuid), 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, got), -ENOTSUP);
    blk_unref(blk);

    snprintf(name, sizeof(name), "backing_file=%s", strrchr(parent, '/') + 1);
    assert_int_equal(create(img, name, NULL, 0), 0);
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 4 * MiB);
    assert_non_null(bdrv_backing_bs(blk_bs(blk)));
    assert_string_equal(blk_bs(blk)->backing_file, strrchr(parent, '/') + 1);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, got), 0);
    assert_memory_equal(got, puuid, 16);

    /* One sector in the middle of a block: its neighbours still come from the parent. */
    memset(want + MiB + 512, 0x11, 512);
    assert_int_equal(blk_pwrite(blk, MiB + 512, 512, want + MiB + 512, 0), 0);
    memset(want + 3 * MiB, 0x22, 4096);
    assert_int_equal(blk_pwrite(blk, 3 * MiB, 4096, want + 3 * MiB, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);

    ret = status(blk, MiB, 4096, &q);
    assert_true(ret >= 0 && !(ret & BDRV_BLOCK_ALLOCATED));
    assert_int_equal(q.pnum, 512);
    ret = status(blk, MiB + 512, 4096, &q);
    assert_true(ret & BDRV_BLOCK_DATA);
    assert_int_equal(q.pnum, 512);

    /* The parent UUID can be rewritten; modification UUIDs do not exist in VHD. */
    memset(u2, 0xab, 16);
    assert_int_equal(bdrv_set_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u2, NULL), 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_MODIFICATION, got), -ENOTSUP);
    blk_unref(blk);

    blk = open_vpc(img, 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, got), 0);
    assert_memory_equal(got, u2, 16);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    blk_unref(blk);

    /* The parent is unchanged. */
    blk = open_vpc(parent, 0);
    memset(want, 0x77, 4 * MiB);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    blk_unref(blk);

    snprintf(name, sizeof(name), "backing_file=%s,subformat=fixed", parent);
    assert_true(create(img, name, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "cannot be fixed"));
    free(want);
    free(buf);
}

static void test_vpc_uuid_geometry(void **state)
{
    uint8_t u[16], got[16];
    BlockGeometry geo = { 100, 16, 63 }, g;
    Error *err = NULL;
    BlockBackend *blk;

    assert_int_equal(create(img, "size=50M", NULL, 0), 0);
    blk = open_vpc(img, BDRV_O_RDWR);
    memset(u, 0x5c, 16);
    assert_int_equal(bdrv_set_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, u, NULL), 0);
    assert_int_equal(bdrv_set_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "not a differencing disk"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_set_geometry(blk_bs(blk), &geo, NULL), 0);
    geo.cylinders = 70000;
    assert_int_equal(bdrv_set_geometry(blk_bs(blk), &geo, &err), -EINVAL);
    error_free(err);
    blk_unref(blk);

    blk = open_vpc(img, 0);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, got), 0);
    assert_memory_equal(got, u, 16);
    assert_int_equal(bdrv_get_geometry(blk_bs(blk), &g), 0);
    assert_int_equal(g.cylinders, 100);
    assert_int_equal(g.heads, 16);
    assert_int_equal(g.sectors, 63);
    blk_unref(blk);
}

static void test_vpc_create_errors(void **state)
{
    char msg[1024];

    assert_true(create(img, "size=1M,subformat=sparse", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "subformat"));
    assert_true(create(img, "size=3T", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "exceeds the maximum"));
    assert_true(create(img, "subformat=fixed", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "'size' is required"));
    assert_true(create(img, "size=1M,backing_file=x.vhd,backing_fmt=qcow2", msg,
                       sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "must be vpc"));
    assert_true(create(img, "backing_file=does-not-exist.vhd", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "could not open the parent"));
    assert_non_null(bdrv_create_opts("vpc"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vpc_sizes_and_geometry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_fixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_concurrent_alloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_differencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_uuid_geometry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_create_errors, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
