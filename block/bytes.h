/*
 * Reading and writing on-disk and on-wire structures: a bounds-checked cursor
 * over untrusted bytes with explicit endianness, stores for building
 * structures, and checked arithmetic. Shared by the format drivers and NBD (not
 * installed). Never cast a packed struct over image bytes: read fields
 * through a cursor.
 *
 *   ByteCursor c = bcur_init(buf, len);
 *   uint32_t magic; uint64_t size;
 *   if (!rd_be32(&c, &magic) || !rd_be64(&c, &size)) -> truncated
 *
 * A read past the end fails (returns false), leaves *out zero and makes
 * every later read fail too, so a parser may read a whole header and test
 * bcur_ok() once.
 */
#ifndef COBLK_BLOCK_BYTES_H
#define COBLK_BLOCK_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ByteCursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
    bool bad;
} ByteCursor;

static inline ByteCursor bcur_init(const void *buf, size_t len)
{
    ByteCursor c = { (const uint8_t *)buf, len, 0, false };
    return c;
}

static inline bool bcur_ok(const ByteCursor *c)
{
    return !c->bad;
}

/* Returns a pointer to n bytes at the cursor and advances, or NULL. */
static inline const uint8_t *bcur_take(ByteCursor *c, size_t n)
{
    const uint8_t *r;

    if (c->bad || n > c->len - c->pos) {
        c->bad = true;
        return NULL;
    }
    r = c->p + c->pos;
    c->pos += n;
    return r;
}

/* Moves to an absolute position (<= len). */
static inline bool bcur_seek(ByteCursor *c, size_t pos)
{
    if (c->bad || pos > c->len) {
        c->bad = true;
        return false;
    }
    c->pos = pos;
    return true;
}

static inline bool bcur_skip(ByteCursor *c, size_t n)
{
    return bcur_take(c, n) != NULL;
}

static inline bool rd_bytes(ByteCursor *c, void *out, size_t n)
{
    const uint8_t *s = bcur_take(c, n);

    if (!s) {
        memset(out, 0, n);
        return false;
    }
    memcpy(out, s, n);
    return true;
}

/* Loads from a buffer the caller already bounds-checked. */
static inline uint16_t ld_be16(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)((b[0] << 8) | b[1]);
}
static inline uint32_t ld_be32(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}
static inline uint64_t ld_be64(const void *p)
{
    return ((uint64_t)ld_be32(p) << 32) | ld_be32((const uint8_t *)p + 4);
}
static inline uint16_t ld_le16(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)(b[0] | (b[1] << 8));
}
static inline uint32_t ld_le32(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static inline uint64_t ld_le64(const void *p)
{
    return ld_le32(p) | ((uint64_t)ld_le32((const uint8_t *)p + 4) << 32);
}

/* Stores (for building on-disk structures in a buffer the caller sized). */
static inline void st_be16(void *p, uint16_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}
static inline void st_be32(void *p, uint32_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}
static inline void st_be64(void *p, uint64_t v)
{
    st_be32(p, (uint32_t)(v >> 32));
    st_be32((uint8_t *)p + 4, (uint32_t)v);
}
static inline void st_le16(void *p, uint16_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}
static inline void st_le32(void *p, uint32_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}
static inline void st_le64(void *p, uint64_t v)
{
    st_le32(p, (uint32_t)v);
    st_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

#define BCUR_RD(name, type, ld)                                   \
    static inline bool name(ByteCursor *c, type *out)             \
    {                                                             \
        const uint8_t *s = bcur_take(c, sizeof(type));            \
        *out = s ? ld(s) : 0;                                     \
        return s != NULL;                                         \
    }

static inline uint8_t ld_u8(const void *p)
{
    return *(const uint8_t *)p;
}

BCUR_RD(rd_u8, uint8_t, ld_u8)
BCUR_RD(rd_be16, uint16_t, ld_be16)
BCUR_RD(rd_be32, uint32_t, ld_be32)
BCUR_RD(rd_be64, uint64_t, ld_be64)
BCUR_RD(rd_le16, uint16_t, ld_le16)
BCUR_RD(rd_le32, uint32_t, ld_le32)
BCUR_RD(rd_le64, uint64_t, ld_le64)

#undef BCUR_RD

/* Checked arithmetic: true on overflow (as the kernel's check_*_overflow). */
#define check_add_overflow(a, b, d) __builtin_add_overflow(a, b, d)
#define check_mul_overflow(a, b, d) __builtin_mul_overflow(a, b, d)
#define check_sub_overflow(a, b, d) __builtin_sub_overflow(a, b, d)

/* off + len lies within [0, limit] without overflow. */
static inline bool range_within(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

static inline bool is_power_of_2_u64(uint64_t x)
{
    return x && !(x & (x - 1));
}

static inline uint64_t round_up_u64(uint64_t x, uint64_t align)
{
    return (x + align - 1) / align * align;
}

static inline uint64_t div_round_up_u64(uint64_t x, uint64_t d)
{
    return x / d + (x % d != 0);
}

/*
 * Fuzzing builds (tests/fuzz, compiled with the libFuzzer convention macro
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) accept a wrong header checksum,
 * so that the fuzzer's mutations reach the parsing behind it. Drivers test
 * checksums as "if (FMT_VERIFY_CHECKSUMS && sum != stored)". Never set in
 * the library.
 */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define FMT_VERIFY_CHECKSUMS 0
#else
#define FMT_VERIFY_CHECKSUMS 1
#endif

#endif /* COBLK_BLOCK_BYTES_H */
