/*
 * Unit tests: qcow2 growing its image file ahead of allocations and
 * trimming the unused tail at close (drivers/format/qcow2/grow.c), and the
 * zero-COW skip for fresh clusters that depends on the same bookkeeping.
 *
 * The grown file and the file a crash leaves (its tail untrimmed) must pass
 * Debian's `qemu-img check` and read back the guest data; checks that need
 * qemu-img skip without it.
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define CS (64 * KiB)

static char img[4096], crash[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2grow-a");
    drv_test_path(crash, sizeof(crash), "qcow2grow-crash");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(crash);
    return 0;
}

static int64_t file_size(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static int64_t file_blocks(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_blocks;
}

static BlockBackend *open_rw(const char *path)
{
    return drv_test_open_image("qcow2", path, BDRV_O_RDWR);
}

/* Copies src to dst byte for byte (the image as a power cut would leave it, after a flush). */
static void copy_file(const char *src, const char *dst)
{
    assert_int_equal(drv_test_sh("cp --sparse=always '%s' '%s'", src, dst), 0);
}

/* qemu-img check finds no error and no leak, and the image ends where the file does. */
static void assert_check_clean(const char *path, bool end_is_file_end)
{
    if (!have_qemu) {
        return;
    }
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", path), 0);
    if (end_is_file_end) {
        assert_int_equal(drv_test_sh("qemu-img check '%s' | grep -qx 'Image end offset: %lld'", path,
                            (long long)file_size(path)), 0);
    }
}

/* Writes n clusters of pattern (seed + cluster index) from guest cluster first. */
static void write_clusters(BlockBackend *blk, int first, int n, uint8_t seed)
{
    uint8_t *buf = malloc(CS);

    assert_non_null(buf);
    for (int i = first; i < first + n; i++) {
        drv_test_pattern(buf, CS, (uint8_t)(seed + i));
        assert_int_equal(blk_pwrite(blk, (int64_t)i * CS, CS, buf, 0), 0);
    }
    free(buf);
}

static void assert_clusters(BlockBackend *blk, int first, int n, uint8_t seed)
{
    uint8_t *buf = malloc(CS), *want = malloc(CS);

    assert_non_null(buf);
    assert_non_null(want);
    for (int i = first; i < first + n; i++) {
        drv_test_pattern(want, CS, (uint8_t)(seed + i));
        assert_int_equal(blk_pread(blk, (int64_t)i * CS, CS, buf, 0), 0);
        assert_memory_equal(buf, want, CS);
    }
    free(buf);
    free(want);
}

/*
 * An allocation past the file's end grows the file by at least 8 MiB of
 * allocated space; more allocations grow it again; close cuts the tail back
 * to the last cluster in use. A copy taken while the image was open (what a
 * power cut leaves) passes qemu-img check, reads back, takes new allocations
 * in its tail and is trimmed at its close.
 */
static void test_qcow2_grow_ahead_and_trim(void **state)
{
    BlockBackend *blk;
    struct stat st;
    int64_t len0, grown, crash_len;

    assert_int_equal(drv_test_create("qcow2", img, "size=64M", NULL, 0), 0);
    len0 = file_size(img);
    blk = open_rw(img);
    write_clusters(blk, 0, 1, 1);
    grown = file_size(img);
    assert_true(grown >= len0 + 8 * MiB);
    assert_int_equal(stat(img, &st), 0);
    assert_true((int64_t)st.st_blocks * 512 >= 8 * MiB); /* allocated, not a hole */
    write_clusters(blk, 1, 199, 1);                        /* 12.5 MiB: grows again */
    assert_true(file_size(img) > grown);
    assert_int_equal(blk_flush(blk), 0);
    copy_file(img, crash);
    assert_clusters(blk, 0, 200, 1);
    blk_unref(blk);
    assert_true(file_size(img) < file_size(crash));
    assert_true(file_size(img) >= 200 * CS);
    assert_check_clean(img, true);

    /* The image a crash leaves: a tail of free clusters past the last used one. */
    crash_len = file_size(crash);
    assert_check_clean(crash, false);
    blk = open_rw(crash);
    assert_clusters(blk, 0, 200, 1);
    write_clusters(blk, 200, 16, 2);
    assert_int_equal(file_size(crash), crash_len); /* the tail took them */
    assert_clusters(blk, 0, 200, 1);
    assert_clusters(blk, 200, 16, 2);
    blk_unref(blk);
    /* Not grown by this open: the tail stays (coblk cannot tell it from data). */
    assert_int_equal(file_size(crash), crash_len);
    assert_check_clean(crash, false);
    blk = drv_test_open_image("qcow2", crash, 0);
    assert_clusters(blk, 0, 200, 1);
    assert_clusters(blk, 200, 16, 2);
    blk_unref(blk);
}

/*
 * The step grows with the file (a quarter of it, 8 MiB to 128 MiB): 160 MiB
 * written in 1 MiB pieces grows the file about 12 times, where fixed 8 MiB
 * steps took 20; every byte reads back and the image checks clean.
 */
static void test_qcow2_grow_step_scales(void **state)
{
    enum { CHUNK = 16, CHUNKS = 160 };  /* 16 clusters of 64 KiB = 1 MiB */
    BlockBackend *blk;
    int64_t last = -1;
    int grows = 0;

    assert_int_equal(drv_test_create("qcow2", img, "size=256M", NULL, 0), 0);
    blk = open_rw(img);
    for (int i = 0; i < CHUNKS; i++) {
        int64_t len;

        write_clusters(blk, i * CHUNK, CHUNK, (uint8_t)(i + 1));
        len = file_size(img);
        grows += len != last;
        last = len;
        assert_true(len >= (int64_t)(i + 1) * CHUNK * CS);
    }
    print_message("%d grows for %d MiB\n", grows, CHUNKS);
    assert_true(grows < 16);
    for (int i = 0; i < CHUNKS; i += 37) {
        assert_clusters(blk, i * CHUNK, CHUNK, (uint8_t)(i + 1));
    }
    blk_unref(blk);
    assert_check_clean(img, true);
}

/* Appends len bytes of 0xaa to path (garbage past the last cluster in use). */
static void append_garbage(const char *path, int64_t len)
{
    uint8_t *buf = malloc((size_t)len);
    int fd = open(path, O_WRONLY | O_APPEND);

    assert_non_null(buf);
    assert_true(fd >= 0);
    memset(buf, 0xaa, (size_t)len);
    assert_int_equal(write(fd, buf, (size_t)len), len);
    close(fd);
    free(buf);
}

/*
 * A file longer than its last cluster in use (free clusters holding old
 * bytes, as another tool may leave): new clusters taken from that tail are
 * not fresh, so a partial write copies zeroes around the guest data; and the
 * trim at close never cuts the file below its length at open.
 */
static void test_qcow2_grow_keeps_old_tail(void **state)
{
    uint8_t buf[CS], want[CS];
    BlockBackend *blk;
    int64_t len0;

    assert_int_equal(drv_test_create("qcow2", img, "size=64M", NULL, 0), 0);
    append_garbage(img, 2 * MiB);
    len0 = file_size(img);
    blk = open_rw(img);
    /* Partial writes into new clusters: they come from the 0xaa tail. */
    drv_test_pattern(want, 512, 7);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(blk_pwrite(blk, (int64_t)i * CS + 4096, 512, want, 0), 0);
    }
    assert_int_equal(file_size(img), len0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(blk_pread(blk, (int64_t)i * CS, CS, buf, 0), 0);
        for (int j = 0; j < CS; j++) {
            uint8_t w = j >= 4096 && j < 4096 + 512 ? want[j - 4096] : 0;

            if (buf[j] != w) {
                fail_msg("cluster %d byte %d: 0x%02x, expected 0x%02x", i, j, buf[j], w);
            }
        }
    }
    /* Past the old tail: the file grows ahead, and the trim stops at the old length. */
    write_clusters(blk, 8, 48, 3);
    assert_true(file_size(img) >= len0 + 8 * MiB);
    blk_unref(blk);
    assert_true(file_size(img) >= len0);
    assert_true(file_size(img) < len0 + 8 * MiB);
    assert_check_clean(img, false);
    blk = drv_test_open_image("qcow2", img, 0);
    assert_clusters(blk, 8, 48, 3);
    blk_unref(blk);
}

typedef struct MapCo {
    BlockDriverState *bs;
    int64_t offset, map;
    int ret;
} MapCo;

static void coroutine_fn map_co(void *opaque)
{
    MapCo *m = opaque;
    BlockDriverState *file = NULL;
    int64_t pnum = 0;

    m->ret = bdrv_co_block_status(m->bs, m->offset, CS, &pnum, &m->map, &file);
}

/* Host offset of the guest cluster at offset (it must be allocated). */
static int64_t host_of(BlockBackend *blk, int64_t offset)
{
    MapCo m = { .bs = blk_bs(blk), .offset = offset, .map = -1 };

    drv_test_run_co(blk_get_aio_context(blk), map_co, &m);
    assert_true(m.ret >= 0 && (m.ret & BDRV_BLOCK_OFFSET_VALID));
    return m.map;
}

/*
 * A cluster of the grown tail that was written and then freed is handed
 * out again for a partial write: it is not fresh any more, so the zeroes
 * around the guest data are written over its old bytes.
 */
static void test_qcow2_grow_reused_cluster_not_fresh(void **state)
{
    uint8_t buf[CS], data[512];
    BlockBackend *blk;
    int64_t host, len;
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=qcow2,discard=unmap,file.driver=file,file.filename=%s",
             img);

    assert_int_equal(drv_test_create("qcow2", img, "size=64M", NULL, 0), 0);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    write_clusters(blk, 0, 4, 9);
    host = host_of(blk, 0);
    len = file_size(img);
    assert_true(host + CS <= len); /* in the grown tail, not past the end */
    assert_int_equal(blk_pdiscard(blk, 0, CS), 0);
    assert_int_equal(blk_flush(blk), 0); /* the deferred refcount drop happens */
    drv_test_pattern(data, sizeof(data), 5);
    assert_int_equal(blk_pwrite(blk, 32 * CS + 512, sizeof(data), data, 0), 0);
    assert_int_equal(host_of(blk, 32 * CS), host); /* the freed cluster came back */
    assert_int_equal(blk_pread(blk, 32 * CS, CS, buf, 0), 0);
    for (int j = 0; j < CS; j++) {
        uint8_t w = j >= 512 && j < 1024 ? data[j - 512] : 0;

        if (buf[j] != w) {
            fail_msg("byte %d: 0x%02x, expected 0x%02x", j, buf[j], w);
        }
    }
    assert_clusters(blk, 1, 3, 9);
    blk_unref(blk);
    assert_check_clean(img, true);
}

/*
 * Metadata preallocation with 512-byte clusters: the refcount table grows
 * (and its old clusters are freed and handed out again as data clusters)
 * while the data clusters are allocated; every preallocated cluster reads
 * as zeroes, and the image matches qemu-img's (check, compare) and takes
 * no more than twice its file space.
 */
static void test_qcow2_prealloc_metadata_512(void **state)
{
    enum { SIZE = 24 * MiB };
    uint8_t *buf = malloc(SIZE);
    BlockBackend *blk;
    size_t i;

    assert_non_null(buf);
    assert_int_equal(drv_test_create("qcow2", img, "size=24M,cluster_size=512,"
                                     "preallocation=metadata", NULL, 0), 0);
    blk = drv_test_open_image("qcow2", img, 0);
    assert_int_equal(blk_pread(blk, 0, SIZE, buf, 0), 0);
    blk_unref(blk);
    for (i = 0; i < SIZE && !buf[i]; i++) {
    }
    if (i < SIZE) {
        fail_msg("preallocated guest byte %zu reads 0x%02x, not zero", i, buf[i]);
    }
    free(buf);
    assert_check_clean(img, true);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -o cluster_size=512,"
                            "preallocation=metadata '%s' 24M", crash), 0);
        assert_int_equal(drv_test_sh("qemu-img compare -q '%s' '%s'", img, crash), 0);
        /* No file space beyond the metadata (no grow-ahead for preallocation). */
        assert_true(file_blocks(img) <= 2 * file_blocks(crash));
        assert_int_equal(drv_test_sh("qemu-img map --output=json '%s' | grep -c '\"data\": false' "
                            "| grep -qx 0", img), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_grow_ahead_and_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_grow_keeps_old_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_grow_step_scales, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_grow_reused_cluster_not_fresh, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_prealloc_metadata_512, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
