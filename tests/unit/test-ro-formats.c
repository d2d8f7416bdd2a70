/*
 * Unit tests: the read-only format drivers bochs, cloop and dmg, on images
 * built by tests/interop/mk-ro-images.py (its path in $COBLK_RO_IMAGES;
 * skipped without python3):
 *  - probe scores (bochs and cloop by magic, dmg by the ".dmg" name);
 *  - read-write opens and reopens are refused naming the format, and a
 *    write to a read-only open fails with EPERM;
 *  - the decompressed-chunk cache: sequential 512-byte reads through one
 *    compressed chunk (dmg) or block (cloop) read the compressed data once
 *    (a blkdebug rule fails the second compressed read, so a re-inflation
 *    would fail the test), and the bytes equal the raw disk;
 *  - concurrent reads from several coroutines (aio) give the raw bytes, for
 *    cloop v2, v3 (footer) and v4 (zlib, stored and xz blocks) and for a
 *    Bochs undoable redolog over its base image too;
 *  - Bochs undoable / volatile redologs: the base image is base=FILE or the
 *    redolog's name without ".redolog"; a volatile one without base= is
 *    refused naming its subtype; base= on a growing image is refused;
 *    backing=null reads unwritten sectors as zero.
 */
#include "drv-test-util.h"

#include "coblk-config.h"

static char dir[4096];

static int setup(void **state)
{
    const char *gen = getenv("COBLK_RO_IMAGES");
    char cmd[9000];

    snprintf(dir, sizeof(dir), "%s/ro-formats-%d", drv_test_dir(), (int)getpid());
    snprintf(cmd, sizeof(cmd), "python3 '%s' '%s' >/dev/null 2>&1", gen ? gen : "", dir);
    if (!gen || system(cmd) != 0) {
        return -1; /* cmocka reports the group as failed to set up */
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[4200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *img(const char *name)
{
    static char path[2][4200];
    static int n;

    n ^= 1;
    snprintf(path[n], sizeof(path[n]), "%s/%s", dir, name);
    return path[n];
}

static uint8_t *load(const char *name, size_t *len)
{
    FILE *f = fopen(img(name), "rb");
    uint8_t *buf;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static char *opts(const char *fmt, const char *name, const char *file_extra)
{
    static char o[9000];

    if (file_extra) {
        snprintf(o, sizeof(o), "driver=%s,file.driver=blkdebug,file.image.driver=file,"
                 "file.image.filename=%s,%s", fmt, img(name), file_extra);
    } else {
        snprintf(o, sizeof(o), "driver=%s,file.driver=file,file.filename=%s", fmt, img(name));
    }
    return o;
}

static void test_ro_probe(void **state)
{
    size_t len;
    uint8_t *b = load("bochs-growing.bochs", &len);
    uint8_t *c = load("cloop-v2.cloop", &len);
    const BlockDriver *bochs = bdrv_find_format("bochs");
    const BlockDriver *cloop = bdrv_find_format("cloop");
    const BlockDriver *dmg = bdrv_find_format("dmg");

    assert_int_equal(bochs->probe(b, 512, "x"), 100);
    assert_int_equal(cloop->probe(b, 512, "x"), 0);
    assert_int_equal(cloop->probe(c, 512, "x"), 2);
    assert_int_equal(bochs->probe(c, 512, "x"), 0);
    b[48] = 'U'; /* subtype "Urowing" */
    assert_int_equal(bochs->probe(b, 512, "x"), 0);
    assert_int_equal(dmg->probe(c, 512, "a/b.dmg"), 2);
    assert_int_equal(dmg->probe(c, 512, "a/b.img"), 0);
    assert_int_equal(dmg->probe(c, 512, ".dmg"), 0);
    free(b);
    free(c);
}

static void test_ro_refuses_writes(void **state)
{
    static const char *const imgs[][2] = {
        { "bochs", "bochs-growing.bochs" }, { "cloop", "cloop-v2.cloop" },
        { "dmg", "dmg-zlib.dmg" },
    };

    for (size_t i = 0; i < 3; i++) {
        char want[64];
        uint8_t buf[512] = { 1 };
        Error *err = NULL;
        BlockBackend *blk;

        snprintf(want, sizeof(want), "the %s format is read-only", imgs[i][0]);
        drv_test_open_fails(opts(imgs[i][0], imgs[i][1], NULL), BDRV_O_RDWR, want);
        blk = drv_test_open_ok(opts(imgs[i][0], imgs[i][1], NULL), 0);
        assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EPERM);
        assert_int_not_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, &err), 0);
        assert_non_null(strstr(error_get_pretty(err), want));
        error_free(err);
        assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
        blk_unref(blk);
    }
}

/*
 * The second compressed read of the file fails (blkdebug: the first
 * read_compressed event moves the state to 2, the second arms the error).
 */
#define SECOND_COMPRESSED_READ_FAILS                                                       \
    "file.set-state.0.event=read_compressed,file.set-state.0.state=1,"                     \
    "file.set-state.0.new_state=2,file.inject-error.0.event=read_compressed,"              \
    "file.inject-error.0.state=2"

/* Reads [off, off + len) of the image 512 bytes at a time; compares with raw. */
static void read_sectors(BlockBackend *blk, const uint8_t *raw, int64_t off, int64_t len)
{
    uint8_t buf[512];

    for (int64_t o = off; o < off + len; o += 512) {
        assert_int_equal(blk_pread(blk, o, 512, buf, 0), 0);
        assert_memory_equal(buf, raw + o, 512);
    }
}

static void test_ro_chunk_cache(void **state)
{
    size_t len;
    uint8_t *raw = load("dmg-zlib.raw", &len);
    uint8_t buf[512];
    BlockBackend *blk = drv_test_open_ok(opts("dmg", "dmg-zlib.dmg",
                                              SECOND_COMPRESSED_READ_FAILS), 0);

    /* zlib chunk 0: sectors 0..255; raw chunk 256..511; zero 512..1279. */
    read_sectors(blk, raw, 0, 256 * 512);
    read_sectors(blk, raw, 256 * 512, 1024 * 512);
    read_sectors(blk, raw, 0, 4096);        /* still cached */
    /* The next zlib chunk (sectors 1280..2047) needs a second compressed read. */
    assert_int_equal(blk_pread(blk, 1280 * 512, 512, buf, 0), -EIO);
    blk_unref(blk);
    free(raw);

    raw = load("cloop-v2.raw", &len);
    blk = drv_test_open_ok(opts("cloop", "cloop-v2.cloop", SECOND_COMPRESSED_READ_FAILS), 0);
    read_sectors(blk, raw, 0, 16384);       /* block 0, inflated once */
    read_sectors(blk, raw, 1024, 2048);
    assert_int_equal(blk_pread(blk, 16384, 512, buf, 0), -EIO);
    blk_unref(blk);
    free(raw);
}

typedef struct AioRead {
    int *pending;
    int ret;
} AioRead;

static void aio_read_done(void *opaque, int ret)
{
    AioRead *r = opaque;

    r->ret = ret;
    (*r->pending)--;
}

/* Many reads in flight across chunks (the cache is shared): all bytes right. */
static void test_ro_concurrent_reads(void **state)
{
    static const char *const imgs[][3] = {
        { "dmg", "dmg-zlib.dmg", "dmg-zlib.raw" }, { "dmg", "dmg-rsrc.dmg", "dmg-rsrc.raw" },
        { "cloop", "cloop-v2.cloop", "cloop-v2.raw" },
        { "bochs", "bochs-growing.bochs", "bochs-growing.raw" },
        { "bochs", "undo-base.img.redolog", "undo-base.img.raw" },
#if COBLK_HAVE_LZMA
        { "cloop", "cloop-v4.cloop", "cloop-v4.raw" },
        { "cloop", "cloop-v4-last.cloop", "cloop-v4-last.raw" },
        { "cloop", "cloop-v3.cloop", "cloop-v3.raw" },
        { "cloop", "cloop-v3-padded.cloop", "cloop-v3-padded.raw" },
#endif
    };
    enum { N = 32, CHUNK = 12288 };

    for (size_t k = 0; k < sizeof(imgs) / sizeof(imgs[0]); k++) {
        size_t len;
        uint8_t *raw = load(imgs[k][2], &len);
        uint8_t *out = calloc(1, len);
        BlockBackend *blk = drv_test_open_ok(opts(imgs[k][0], imgs[k][1], NULL), 0);
        AioContext *ctx = blk_get_aio_context(blk);
        IOVector qiov[N];
        AioRead r[N];
        int pending = 0;

        assert_non_null(out);
        for (size_t off = 0; off < len; off += (size_t)N * CHUNK) {
            for (int i = 0; i < N; i++) {
                /* A permutation of the batch's chunks (7 is prime to N). */
                size_t at = off + (size_t)((i * 7) % N) * CHUNK;
                size_t n = at >= len ? 0 : len - at < CHUNK ? len - at : CHUNK;

                r[i] = (AioRead){ &pending, 0 };
                if (!n) {
                    continue;
                }
                iovector_init_buf(&qiov[i], out + at, n);
                pending++;
                blk_aio_preadv(blk, (int64_t)at, &qiov[i], 0, aio_read_done, &r[i]);
            }
            while (pending) {
                aio_poll(ctx, true);
            }
            for (int i = 0; i < N; i++) {
                assert_int_equal(r[i].ret, 0);
            }
        }
        assert_memory_equal(out, raw, len);
        blk_unref(blk);
        free(out);
        free(raw);
    }
}

static void test_ro_bochs_base(void **state)
{
    char o[14000], base[4200];
    size_t len;
    uint8_t *raw = load("undo-base.img.raw", &len);
    uint8_t *buf = malloc(len);
    BlockBackend *blk;

    assert_non_null(buf);
    drv_test_open_fails(opts("bochs", "bochs-volatile.bochs", NULL), 0,
                        "a Bochs 'Volatile' redolog reads unwritten sectors from its base "
                        "image, which the redolog does not name: give it as base=FILE");
    snprintf(base, sizeof(base), "%s", img("undo-base.img"));
    snprintf(o, sizeof(o), "%s,base=%s", opts("bochs", "bochs-volatile.bochs", NULL), base);
    blk = drv_test_open_ok(o, 0);
    assert_int_equal(blk_pread(blk, 0, (int64_t)len, buf, 0), 0);
    assert_memory_equal(buf, raw, len);
    blk_unref(blk);
    /* A relative base= is the redolog's sibling. */
    snprintf(o, sizeof(o), "%s,base=undo-base.img", opts("bochs", "bochs-volatile.bochs", NULL));
    blk = drv_test_open_ok(o, 0);
    assert_int_equal(blk_pread(blk, 4096, 65536, buf, 0), 0);
    assert_memory_equal(buf, raw + 4096, 65536);
    blk_unref(blk);
    snprintf(o, sizeof(o), "%s,base=%s", opts("bochs", "bochs-growing.bochs", NULL), base);
    drv_test_open_fails(o, 0, "a growing Bochs image has no base image");
    /* No base opened: unwritten sectors (1..4) read zero, written ones (0, 5) are there. */
    snprintf(o, sizeof(o), "%s,backing=null", opts("bochs", "undo-base.img.redolog", NULL));
    blk = drv_test_open_ok(o, 0);
    assert_int_equal(blk_pread(blk, 0, 3072, buf, 0), 0);
    assert_memory_equal(buf, raw, 512);
    for (int i = 512; i < 2560; i++) {
        assert_int_equal(buf[i], 0);
    }
    assert_memory_equal(buf + 2560, raw + 2560, 512);
    blk_unref(blk);
    free(buf);
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ro_probe),
        cmocka_unit_test(test_ro_refuses_writes),
        cmocka_unit_test(test_ro_chunk_cache),
        cmocka_unit_test(test_ro_concurrent_reads),
        cmocka_unit_test(test_ro_bochs_base),
    };

    if (system("python3 -c 1 >/dev/null 2>&1") != 0) {
        printf("python3 missing: skipping\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
