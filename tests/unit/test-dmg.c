/*
 * Unit tests: dmg chunks compressed with ADC and LZMA, on tiny images built
 * here (the block map in a resource fork). The ADC encoder below writes
 * literal runs, short and long matches, and overlapping matches; LZMA
 * chunks come from liblzma's encoders (xz and legacy .lzma streams).
 *  - every chunk type reads back as the bytes it encodes, whole and at
 *    unaligned offsets;
 *  - damaged chunks (a cut literal run or match code, a match before the
 *    start, data decoding to more or fewer bytes than the chunk, a cut or
 *    foreign LZMA stream) open, and reading them fails with EIO;
 *  - LZFSE chunks, and LZMA chunks in a build without liblzma, are refused
 *    at open naming the chunk type; ADC and LZMA chunk sizes are bounded as
 *    zlib's are.
 */
#include "drv-test-util.h"

#include "coblk-config.h"

#if COBLK_HAVE_LZMA
#include <lzma.h>
#endif

#define ADC 0x80000004u
#define LZFSE 0x80000007u
#define LZMA 0x80000008u
#define ZERO 0u
#define SECTORS 96u

typedef struct Chunk {
    uint32_t type;
    uint64_t sector;
    uint64_t sectors;
    const uint8_t *data;
    size_t len;
    uint64_t claim;             /* non-zero: the length the map claims instead of len */
} Chunk;

static char path[4096];
static uint64_t disk_sectors = SECTORS;

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (24 - 8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* A mish block for the chunks (sectors relative to 0), ending with a "last" entry. */
static size_t build_mish(uint8_t *m, const Chunk *ch, int n, const uint64_t *data_off)
{
    size_t len = 204 + 40 * ((size_t)n + 1);

    memset(m, 0, len);
    memcpy(m, "mish", 4);
    put32(m + 4, 1);
    put64(m + 16, disk_sectors);
    put32(m + 200, (uint32_t)n + 1);
    for (int i = 0; i < n; i++) {
        uint8_t *e = m + 204 + 40 * i;

        put32(e, ch[i].type);
        put64(e + 8, ch[i].sector);
        put64(e + 16, ch[i].sectors);
        put64(e + 24, data_off[i]);
        put64(e + 32, ch[i].claim ? ch[i].claim : ch[i].len);
    }
    put32(m + 204 + 40 * n, 0xffffffffu);
    return len;
}

/* Writes a dmg: the chunks' data, a resource fork holding one mish block, the trailer. */
static void write_dmg(const Chunk *ch, int n)
{
    uint8_t mish[204 + 40 * 16], hdr[256] = { 0 }, koly[512] = { 0 }, lenbuf[4];
    uint8_t map[30] = { 0 };
    uint64_t off[16], data_len = 0, rsrc_off, rsrc_len;
    size_t mlen;
    FILE *f;

    assert_true(n < 15);
    drv_test_path(path, sizeof(path), "dmg");
    strcat(path, ".dmg");
    f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        off[i] = data_len;
        if (ch[i].len) {
            assert_int_equal(fwrite(ch[i].data, 1, ch[i].len, f), ch[i].len);
        }
        data_len += ch[i].len;
    }
    mlen = build_mish(mish, ch, n, off);
    put32(hdr, 256);
    put32(hdr + 4, (uint32_t)(256 + 4 + mlen));
    put32(hdr + 8, (uint32_t)(4 + mlen));
    put32(hdr + 12, sizeof(map));
    put32(lenbuf, (uint32_t)mlen);
    rsrc_off = data_len;
    rsrc_len = 256 + 4 + mlen + sizeof(map);
    assert_int_equal(fwrite(hdr, 1, 256, f), 256);
    assert_int_equal(fwrite(lenbuf, 1, 4, f), 4);
    assert_int_equal(fwrite(mish, 1, mlen, f), mlen);
    assert_int_equal(fwrite(map, 1, sizeof(map), f), sizeof(map));
    memcpy(koly, "koly", 4);
    put32(koly + 4, 4);
    put32(koly + 8, 512);
    put32(koly + 12, 1);
    put64(koly + 32, data_len);
    put64(koly + 40, rsrc_off);
    put64(koly + 48, rsrc_len);
    put32(koly + 56, 1);
    put32(koly + 60, 1);
    put32(koly + 488, 1);
    put64(koly + 492, disk_sectors);
    assert_int_equal(fwrite(koly, 1, 512, f), 512);
    assert_int_equal(fclose(f), 0);
}

static const char *dmg_opts(void)
{
    static char o[4200];

    snprintf(o, sizeof(o), "driver=dmg,file.driver=file,file.filename=%s", path);
    return o;
}

/* ---------------------------------------------------------------- ADC encoder */

static void adc_literals(uint8_t *out, size_t *op, const uint8_t *src, size_t n)
{
    while (n) {
        size_t k = n < 128 ? n : 128;

        out[(*op)++] = (uint8_t)(0x80 | (k - 1));
        memcpy(out + *op, src, k);
        *op += k;
        src += k;
        n -= k;
    }
}

/*
 * Greedy ADC: a match of 3..18 bytes within 1024 bytes is a short code, one
 * of 4..67 bytes within 65536 a long code; the rest are literal runs. The
 * candidate is the last position with the same three bytes.
 */
static size_t adc_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    static int32_t last[1 << 16];
    size_t ip = 0, op = 0, lit = 0;

    memset(last, -1, sizeof(last));
    while (ip < n) {
        size_t len = 0, dist = 0;

        if (ip + 3 <= n) {
            uint32_t h = (uint32_t)(in[ip] << 8 ^ in[ip + 1] << 4 ^ in[ip + 2]) & 0xffff;
            int32_t cand = last[h];

            last[h] = (int32_t)ip;
            if (cand >= 0 && ip - (size_t)cand <= 65536) {
                dist = ip - (size_t)cand;
                while (ip + len < n && len < 67 && in[cand + len] == in[ip + len]) {
                    len++;
                }
            }
        }
        if (len >= 3 && dist <= 1024 && (len <= 18 || dist > 65536)) {
            len = len > 18 ? 18 : len;
            adc_literals(out, &op, in + ip - lit, lit);
            lit = 0;
            out[op++] = (uint8_t)(((len - 3) << 2) | ((dist - 1) >> 8));
            out[op++] = (uint8_t)(dist - 1);
        } else if (len >= 4) {
            adc_literals(out, &op, in + ip - lit, lit);
            lit = 0;
            out[op++] = (uint8_t)(0x40 | (len - 4));
            out[op++] = (uint8_t)((dist - 1) >> 8);
            out[op++] = (uint8_t)(dist - 1);
        } else {
            len = 1;
            lit++;
        }
        ip += len;
    }
    adc_literals(out, &op, in + ip - lit, lit);
    return op;
}

/* Text with repeats near and far: exercises short and long matches. */
static void text(uint8_t *buf, size_t len, int seed)
{
    size_t n = 0;

    for (int line = 0; n < len; line++) {
        char s[128];
        int k = snprintf(s, sizeof(s), "coblk dmg test %d, line %d: the quick brown fox %s\n",
                         seed, line % 37, line % 3 ? "jumps" : "naps");

        for (int i = 0; i < k && n < len; i++) {
            buf[n++] = (uint8_t)s[i];
        }
    }
}

static void check_read(BlockBackend *blk, const uint8_t *disk)
{
    static const int64_t pieces[][2] = {
        { 0, SECTORS * 512 }, { 1, 700 }, { 8191, 3 }, { 8190, 9000 }, { 20000, 29000 },
        { SECTORS * 512 - 5, 5 },
    };
    uint8_t *buf = malloc(SECTORS * 512);

    assert_non_null(buf);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        memset(buf, 0xcc, SECTORS * 512);
        assert_int_equal(blk_pread(blk, pieces[i][0], pieces[i][1], buf, 0), 0);
        assert_memory_equal(buf, disk + pieces[i][0], (size_t)pieces[i][1]);
    }
    free(buf);
}

static void test_dmg_adc_reads(void **state)
{
    static uint8_t disk[SECTORS * 512], a[16 * 512 * 2], b[16 * 512 * 2];
    size_t alen, blen;
    BlockBackend *blk;

    text(disk, 16 * 512, 1);                        /* sectors 0..15: matches */
    drv_test_pattern(disk + 16 * 512, 16 * 512, 7); /* 16..31: mostly literals */
    alen = adc_encode(disk, 16 * 512, a);
    blen = adc_encode(disk + 16 * 512, 16 * 512, b);
    assert_true(alen < 16 * 512 / 2);               /* the matches did their work */
    /* Sectors 32..39 are in no chunk: they read zero. */
    Chunk ch[] = {
        { ADC, 0, 16, a, alen, 0 },
        { ADC, 16, 16, b, blen, 0 },
        { ZERO, 40, 56, NULL, 0, 0 },
    };

    write_dmg(ch, 3);
    blk = drv_test_open_ok(dmg_opts(), 0);
    check_read(blk, disk);
    blk_unref(blk);
    unlink(path);
}

static void test_dmg_adc_overlap(void **state)
{
    /* 'x' 'y', then long matches of distance 2 and a short one of distance 1. */
    static uint8_t disk[SECTORS * 512];
    uint8_t c[2048];
    size_t clen = 0, op = 0;
    BlockBackend *blk;

    c[clen++] = 0x81;
    c[clen++] = 'x';
    c[clen++] = 'y';
    disk[op++] = 'x';
    disk[op++] = 'y';
    while (op < 4096 - 3) {
        size_t n = 4096 - 3 - op < 67 ? 4096 - 3 - op : 67;

        if (n < 4) {
            break;
        }
        c[clen++] = (uint8_t)(0x40 | (n - 4));
        c[clen++] = 0;
        c[clen++] = 1;          /* distance 2 */
        for (size_t i = 0; i < n; i++, op++) {
            disk[op] = disk[op - 2];
        }
    }
    while (op < 4096) {
        size_t n = 4096 - op;

        if (n >= 3) {
            n = n > 18 ? 18 : n;
            c[clen++] = (uint8_t)((n - 3) << 2);
            c[clen++] = 0;      /* distance 1 */
            for (size_t i = 0; i < n; i++, op++) {
                disk[op] = disk[op - 1];
            }
        } else {
            c[clen++] = (uint8_t)(0x80 | (n - 1));
            for (size_t i = 0; i < n; i++, op++) {
                disk[op] = c[clen++] = 'z';
            }
        }
    }
    Chunk ch[] = { { ADC, 0, 8, c, clen, 0 } };

    write_dmg(ch, 1);
    blk = drv_test_open_ok(dmg_opts(), 0);
    check_read(blk, disk);
    blk_unref(blk);
    unlink(path);
}

/* Opens the image (must work) and reads the chunk at sector 0: EIO. */
static void read_fails(const Chunk *ch, int n)
{
    uint8_t buf[512];
    BlockBackend *blk;

    write_dmg(ch, n);
    blk = drv_test_open_ok(dmg_opts(), 0);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), -EIO);
    /* Still -EIO the second time (nothing half-decoded is cached). */
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), -EIO);
    blk_unref(blk);
    unlink(path);
}

static void test_dmg_adc_corrupt(void **state)
{
    static uint8_t plain[1024], enc[2048];
    uint8_t cut_literal[] = { 0x85, 'a', 'b' };                  /* 6 literals, 2 given */
    uint8_t early_match[] = { 0x40, 0x00, 0x00 };                /* nothing to copy yet */
    uint8_t far_match[] = { 0x80, 'a', 0x03, 0x01 };             /* distance 770 after 1 byte */
    uint8_t cut_long[] = { 0x80, 'a', 0x40, 0x00 };              /* long code, 1 byte left */
    uint8_t cut_short[] = { 0x80, 'a', 0x00 };                   /* short code, no byte */
    size_t elen;

    text(plain, sizeof(plain), 3);
    elen = adc_encode(plain, sizeof(plain), enc);
    {
        Chunk ch[] = { { ADC, 0, 1, cut_literal, sizeof(cut_literal), 0 } };
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { ADC, 0, 1, early_match, sizeof(early_match), 0 } };
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { ADC, 0, 1, far_match, sizeof(far_match), 0 } };
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { ADC, 0, 1, cut_long, sizeof(cut_long), 0 } };
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { ADC, 0, 1, cut_short, sizeof(cut_short), 0 } };
        read_fails(ch, 1);
    }
    {
        /* 1024 bytes of data in a 1-sector chunk: an output overrun. */
        Chunk ch[] = { { ADC, 0, 1, enc, elen, 0 } };
        read_fails(ch, 1);
    }
    {
        /* The same data in a 3-sector chunk: it ends short. */
        Chunk ch[] = { { ADC, 0, 3, enc, elen, 0 } };
        read_fails(ch, 1);
    }
    {
        /* A stream cut in the middle. */
        Chunk ch[] = { { ADC, 0, 2, enc, elen / 2, 0 } };
        read_fails(ch, 1);
    }
}

/* Open fails with a message holding want. */
static void open_fails(const Chunk *ch, int n, const char *want)
{
    write_dmg(ch, n);
    drv_test_open_fails(dmg_opts(), 0, want);
    unlink(path);
}

static void test_dmg_refused_and_bounded(void **state)
{
    uint8_t junk[64] = { 0 };
    Chunk lzfse[] = { { LZFSE, 0, 8, junk, sizeof(junk), 0 } };
    Chunk adc_sectors[] = { { ADC, 0, (64u << 20) / 512 + 1, junk, sizeof(junk), 0 } };
    Chunk adc_len[] = { { ADC, 0, 8, junk, sizeof(junk), (64u << 20) + 1 } };
    Chunk lzma_len[] = { { LZMA, 0, 8, junk, sizeof(junk), (64u << 20) + 1 } };
    Chunk lzma[] = { { LZMA, 0, 8, junk, sizeof(junk), 0 } };

    open_fails(lzfse, 1, "type 0x80000007 (LZFSE compression), which coblk does not support: "
               "coblk has no LZFSE decoder");
    /* Compressed and decompressed sizes are capped at 64 MiB, as for zlib chunks. */
    disk_sectors = 1u << 20;
    open_fails(adc_sectors, 1, "data chunks hold at most 67108864 bytes");
    open_fails(adc_len, 1, "data chunks hold at most 67108864 bytes");
#if COBLK_HAVE_LZMA
    open_fails(lzma_len, 1, "data chunks hold at most 67108864 bytes");
    (void)lzma;
#else
    (void)lzma_len;
    open_fails(lzma, 1, "type 0x80000008 (LZMA compression), which coblk does not "
               "support: this coblk was built without liblzma");
#endif
    disk_sectors = SECTORS;
}

#if COBLK_HAVE_LZMA
/* Encodes in as an xz stream (alone: a legacy .lzma stream) into a new buffer. */
static uint8_t *lzma_encode(const uint8_t *in, size_t n, bool alone, size_t *out_len)
{
    size_t cap = n + n / 2 + 1024;
    uint8_t *out = malloc(cap);
    lzma_stream s = LZMA_STREAM_INIT;
    lzma_options_lzma opt;

    assert_non_null(out);
    if (!alone) {
        size_t pos = 0;

        assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, NULL, in, n, out, &pos,
                                                 cap), LZMA_OK);
        *out_len = pos;
        return out;
    }
    assert_int_equal(lzma_lzma_preset(&opt, 6), 0);
    assert_int_equal(lzma_alone_encoder(&s, &opt), LZMA_OK);
    s.next_in = in;
    s.avail_in = n;
    s.next_out = out;
    s.avail_out = cap;
    assert_int_equal(lzma_code(&s, LZMA_FINISH), LZMA_STREAM_END);
    *out_len = cap - s.avail_out;
    lzma_end(&s);
    return out;
}

static void test_dmg_lzma_reads(void **state)
{
    static uint8_t disk[SECTORS * 512];
    size_t xlen, alen;
    uint8_t *x, *a;
    BlockBackend *blk;

    text(disk, 24 * 512, 5);
    drv_test_pattern(disk + 24 * 512, 8 * 512, 9);
    text(disk + 50 * 512, 30 * 512, 6);
    x = lzma_encode(disk, 32 * 512, false, &xlen);
    a = lzma_encode(disk + 50 * 512, 30 * 512, true, &alen);
    Chunk ch[] = {
        { LZMA, 0, 32, x, xlen, 0 },
        { ZERO, 32, 18, NULL, 0, 0 },
        { LZMA, 50, 30, a, alen, 0 },
    };

    write_dmg(ch, 3);
    blk = drv_test_open_ok(dmg_opts(), 0);
    check_read(blk, disk);
    blk_unref(blk);
    unlink(path);
    free(x);
    free(a);
}

static void test_dmg_lzma_corrupt(void **state)
{
    static uint8_t plain[8 * 512];
    uint8_t junk[200];
    size_t xlen, alen;
    uint8_t *x, *a;

    text(plain, sizeof(plain), 8);
    x = lzma_encode(plain, sizeof(plain), false, &xlen);
    a = lzma_encode(plain, sizeof(plain), true, &alen);
    memset(junk, 0x5a, sizeof(junk));
    {
        Chunk ch[] = { { LZMA, 0, 8, x, xlen - 20, 0 } };      /* cut: no stream footer */
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { LZMA, 0, 8, x, xlen / 2, 0 } };       /* cut in the data */
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { LZMA, 0, 4, x, xlen, 0 } };           /* decodes to more */
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { LZMA, 0, 4, a, alen, 0 } };           /* .lzma: decodes to more */
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { LZMA, 0, 9, x, xlen, 0 } };           /* decodes to fewer */
        read_fails(ch, 1);
    }
    {
        Chunk ch[] = { { LZMA, 0, 8, junk, sizeof(junk), 0 } }; /* not an LZMA stream */
        read_fails(ch, 1);
    }
    x[xlen / 2] ^= 0xff;
    {
        Chunk ch[] = { { LZMA, 0, 8, x, xlen, 0 } };           /* a flipped byte */
        read_fails(ch, 1);
    }
    free(x);
    free(a);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dmg_adc_reads),
        cmocka_unit_test(test_dmg_adc_overlap),
        cmocka_unit_test(test_dmg_adc_corrupt),
        cmocka_unit_test(test_dmg_refused_and_bounded),
#if COBLK_HAVE_LZMA
        cmocka_unit_test(test_dmg_lzma_reads),
        cmocka_unit_test(test_dmg_lzma_corrupt),
#endif
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
