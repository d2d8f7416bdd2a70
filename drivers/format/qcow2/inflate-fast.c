/*
 * qcow2: a raw deflate (RFC 1951) decoder that can stop early.
 *
 * Written here from RFC 1951 (sections 3.2.3-3.2.7). The input is
 * untrusted (an image's compressed cluster): every code set, count, length
 * and distance is checked before it is used, see inflate-fast.h for the
 * errors.
 *
 * Bits: a 64-bit buffer, least significant bit first as deflate packs them.
 * While at least 8 input bytes remain it is refilled with one unaligned
 * 8-byte load (the bytes above the count are the next input bytes, so a
 * later load or a byte-wise refill puts the same bits there again). Near the
 * end of the input the slow path refills byte by byte and counts the zero
 * bytes it adds past the end ("overrun"): a symbol that used any of those
 * bits means the stream is truncated.
 *
 * Huffman codes: one root table indexed by the next LL_BITS (D_BITS) input
 * bits; codes longer than that go through a subtable the root entry points
 * to. An entry (uint32_t) is
 *   bits 0-3   codeword length (in a subtable: the whole codeword)
 *   bits 4-7   flags: BAD (unusable code), EOB, SUB (subtable pointer), LIT
 *   bits 8-12  extra bits after the codeword (for SUB: the subtable's bits)
 *   bits 16-31 literal byte, length base, distance base, subtable start or
 *              code-length symbol
 * so one lookup gives what to output or the base and extra bits to add.
 *
 * Loops: the fast loop runs while 8 input bytes and 258 + 16 output bytes
 * of slack remain and the stop point is not reached: one refill per symbol
 * is enough for a length, a distance and their extra bits (at most 48 bits),
 * and matches copy 8 or 16 bytes at a time, writing up to 15 bytes past
 * their end (those are overwritten later or lie past what is returned). The
 * slow loop does the same per symbol with every check, for the edges.
 */
#include <errno.h>
#include <string.h>

#include "inflate-fast.h"

#define LL_BITS QCOW2_INFL_LL_BITS
#define D_BITS QCOW2_INFL_D_BITS
#define CL_BITS 7 /* code-length codes are at most 7 bits: one level */
#define MAX_BITS 15

#define F_BAD 0x10u
#define F_EOB 0x20u
#define F_SUB 0x40u
#define F_LIT 0x80u

#define FAST_IN_SLACK 8u
#define FAST_OUT_SLACK (258u + 16u)

enum { KIND_CL, KIND_LL, KIND_D };

typedef struct Bits {
    const uint8_t *in, *end;  /* next byte not yet in buf; end of input */
    uint64_t buf;
    unsigned cnt;             /* valid bits in buf (the rest are the next input bits or 0) */
    unsigned overrun;         /* zero bytes added past the end of the input */
} Bits;

typedef struct Out {
    uint8_t *start, *pos, *end;
    size_t stop;              /* stop once pos - start >= stop (SIZE_MAX: never) */
} Out;

static const uint16_t len_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
};
static const uint8_t len_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
};
static const uint16_t dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
};
static const uint8_t dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
    13, 13,
};
/* The order in which code-length code lengths are sent (RFC 1951 3.2.7). */
static const uint8_t cl_order[19] = {
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
};

static inline uint32_t entry(unsigned base, unsigned extra, unsigned flags, unsigned len)
{
    return (uint32_t)base << 16 | (uint32_t)extra << 8 | flags | len;
}

/* What symbol sym of a code of this kind decodes to (codeword length left 0). */
static uint32_t sym_entry(int kind, unsigned sym)
{
    if (kind == KIND_CL) {
        return entry(sym, 0, 0, 0);
    }
    if (kind == KIND_D) {
        return sym < 30 ? entry(dist_base[sym], dist_extra[sym], 0, 0) : F_BAD;
    }
    if (sym < 256) {
        return entry(sym, 0, F_LIT, 0);
    }
    if (sym == 256) {
        return F_EOB;
    }
    return sym < 286 ? entry(len_base[sym - 257], len_extra[sym - 257], 0, 0) : F_BAD;
}

/* The next codeword of length len after code, both stored bit-reversed. */
static inline unsigned rev_next(unsigned code, unsigned len)
{
    unsigned bit = 1u << (len - 1);

    while (code & bit) {
        bit >>= 1;
    }
    return bit ? (code & (bit - 1)) + bit : 0;
}

/*
 * Bits of the subtable for a codeword of length len starting a new root
 * prefix: grown until the codes not yet placed fill it (rem[l]: codes of
 * length l not yet placed, this one included).
 */
static unsigned sub_bits(const unsigned *rem, unsigned len, unsigned root, unsigned max)
{
    unsigned cur = len - root;
    int left = 1 << cur;

    while (cur + root < max) {
        left -= (int)rem[cur + root];
        if (left <= 0) {
            break;
        }
        cur++;
        left <<= 1;
    }
    return cur;
}

/*
 * Builds the canonical code of lens[0, n) into tab (cap entries, root bits).
 * Over-subscribed sets are -EIO; incomplete sets too, except for literal/
 * length and distance codes made of one codeword of length 1 or (distance)
 * none, whose unused entries are BAD.
 */
static int build(uint32_t *tab, unsigned cap, unsigned root, int kind, const uint8_t *lens,
                 unsigned n)
{
    unsigned count[MAX_BITS + 1] = { 0 }, offs[MAX_BITS + 2];
    uint16_t sorted[288];
    unsigned used, max = 0, code = 0, prefix = ~0u, sub = 0, cur = 0, next = 1u << root;
    int left = 1;

    for (unsigned s = 0; s < n; s++) {
        count[lens[s]]++;
    }
    for (unsigned l = 1; l <= MAX_BITS; l++) {
        left = (left << 1) - (int)count[l];
        if (left < 0) {
            return -EIO; /* over-subscribed */
        }
        max = count[l] ? l : max;
    }
    used = n - count[0];
    if (left > 0) {
        if (kind == KIND_CL || !(used == 0 || (used == 1 && count[1] == 1))) {
            return -EIO; /* incomplete */
        }
        for (unsigned i = 0; i < (1u << root); i++) {
            tab[i] = F_BAD;
        }
    }
    offs[1] = 0;
    for (unsigned l = 1; l <= MAX_BITS; l++) {
        offs[l + 1] = offs[l] + count[l];
    }
    for (unsigned s = 0; s < n; s++) {
        if (lens[s]) {
            sorted[offs[lens[s]]++] = (uint16_t)s;
        }
    }
    for (unsigned i = 0; i < used; i++) {
        unsigned s = sorted[i], len = lens[s];
        uint32_t e = sym_entry(kind, s) | len;

        if (len <= root) {
            for (unsigned j = code; j < (1u << root); j += 1u << len) {
                tab[j] = e;
            }
        } else {
            if ((code & ((1u << root) - 1)) != prefix) {
                prefix = code & ((1u << root) - 1);
                cur = sub_bits(count, len, root, max);
                if (next + (1u << cur) > cap) {
                    return -EIO; /* cannot happen: cap holds one full subtable a symbol */
                }
                sub = next;
                next += 1u << cur;
                tab[prefix] = entry(sub, cur, F_SUB, root);
            }
            for (unsigned j = code >> root; j < (1u << cur); j += 1u << (len - root)) {
                tab[sub + j] = e;
            }
        }
        count[len]--;
        code = rev_next(code, len);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Bits */

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* At least 56 bits in the buffer; past the end of the input they are zeros (counted). */
static inline void refill(Bits *b)
{
    if (b->end - b->in >= (ptrdiff_t)FAST_IN_SLACK) {
        b->buf |= load_le64(b->in) << b->cnt;
        b->in += (63 - b->cnt) >> 3;
        b->cnt |= 56;
        return;
    }
    while (b->cnt <= 55) {
        if (b->in < b->end) {
            b->buf |= (uint64_t)*b->in++ << b->cnt;
        } else {
            b->overrun++;
        }
        b->cnt += 8;
    }
}

/* Whether the stream used bits from past the end of its input. */
static inline bool overran(const Bits *b)
{
    return b->cnt < b->overrun * 8u;
}

static inline unsigned take(Bits *b, unsigned n)
{
    unsigned v = (unsigned)(b->buf & ((1ull << n) - 1));

    b->buf >>= n;
    b->cnt -= n;
    return v;
}

/* Decodes one symbol of tab (root bits); the buffer holds at least 15 bits. */
static inline uint32_t lookup(const uint32_t *tab, unsigned root, uint64_t buf)
{
    uint32_t e = tab[buf & ((1u << root) - 1)];

    if (e & F_SUB) {
        e = tab[(e >> 16) + ((buf >> root) & ((1u << ((e >> 8) & 31)) - 1))];
    }
    return e;
}

/* ---------------------------------------------------------------------- */
/* Block headers */

/* Code lengths of a dynamic block (RFC 1951 3.2.7), then its two tables. */
static int read_dynamic(Bits *b, Qcow2InflateTables *t)
{
    uint8_t lens[286 + 30], cl_lens[19] = { 0 };
    uint32_t cl_tab[1u << CL_BITS];
    unsigned hlit, hdist, hclen, i = 0;
    int ret;

    refill(b);
    hlit = take(b, 5) + 257;
    hdist = take(b, 5) + 1;
    hclen = take(b, 4) + 4;
    if (hlit > 286 || hdist > 30) {
        return -EIO;
    }
    for (unsigned k = 0; k < hclen; k++) {
        refill(b);
        cl_lens[cl_order[k]] = (uint8_t)take(b, 3);
    }
    ret = build(cl_tab, 1u << CL_BITS, CL_BITS, KIND_CL, cl_lens, 19);
    if (ret < 0) {
        return ret;
    }
    while (i < hlit + hdist) {
        uint32_t e;
        unsigned sym, rep;
        uint8_t val = 0;

        refill(b);
        e = cl_tab[b->buf & ((1u << CL_BITS) - 1)];
        take(b, e & 15);
        sym = e >> 16;
        if (sym < 16) {
            lens[i++] = (uint8_t)sym;
            continue;
        }
        if (sym == 16) {
            if (i == 0) {
                return -EIO; /* nothing to repeat */
            }
            val = lens[i - 1];
            rep = 3 + take(b, 2);
        } else {
            rep = sym == 17 ? 3 + take(b, 3) : 11 + take(b, 7);
        }
        if (rep > hlit + hdist - i) {
            return -EIO; /* repeats past the last length */
        }
        memset(&lens[i], val, rep);
        i += rep;
    }
    if (overran(b) || lens[256] == 0) {
        return -EIO; /* truncated, or no end-of-block code */
    }
    ret = build(t->ll, QCOW2_INFL_LL_SIZE, LL_BITS, KIND_LL, lens, hlit);
    return ret < 0 ? ret : build(t->dist, QCOW2_INFL_D_SIZE, D_BITS, KIND_D, lens + hlit, hdist);
}

static void build_fixed(Qcow2InflateTables *t)
{
    uint8_t lens[288 + 32];

    memset(lens, 8, 144);
    memset(lens + 144, 9, 112);
    memset(lens + 256, 7, 24);
    memset(lens + 280, 8, 8);
    memset(lens + 288, 5, 32);
    /* Both sets are complete: these cannot fail. */
    (void)build(t->ll, QCOW2_INFL_LL_SIZE, LL_BITS, KIND_LL, lens, 288);
    (void)build(t->dist, QCOW2_INFL_D_SIZE, D_BITS, KIND_D, lens + 288, 32);
}

/* A stored block: 1 = stopped, 0 = block done, -errno. */
static int stored_block(Bits *b, Out *o, bool exact)
{
    size_t avail, room, want, n, len;
    unsigned nlen, bytes;

    take(b, b->cnt & 7);
    bytes = b->cnt >> 3;
    if (b->overrun > bytes) {
        return -EIO;
    }
    b->in -= bytes - b->overrun; /* give back the whole bytes still buffered */
    b->buf = 0;
    b->cnt = b->overrun = 0;
    if (b->end - b->in < 4) {
        return -EIO;
    }
    len = b->in[0] | (size_t)b->in[1] << 8;
    nlen = b->in[2] | (unsigned)b->in[3] << 8;
    if (len != (~nlen & 0xffffu)) {
        return -EIO;
    }
    b->in += 4;
    avail = (size_t)(b->end - b->in);
    room = (size_t)(o->end - o->pos);
    want = o->stop - (size_t)(o->pos - o->start); /* > 0: checked before the header */
    n = len < room ? len : room;
    n = n < avail ? n : avail;
    n = n < want ? n : want;
    memcpy(o->pos, b->in, n);
    o->pos += n;
    b->in += n;
    if ((size_t)(o->pos - o->start) >= o->stop) {
        return 1;
    }
    if (n < len) {
        return avail < len ? -EIO : (exact ? -ENOSPC : 1);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Symbols */

static inline void copy_match(uint8_t *dst, size_t dist, unsigned len)
{
    const uint8_t *src = dst - dist;
    uint8_t *end = dst + len;

    if (dist >= 16) {
        do {
            memcpy(dst, src, 16);
            dst += 16;
            src += 16;
        } while (dst < end);
        return;
    }
    if (dist == 1) {
        uint64_t v = *src * 0x0101010101010101ull;

        do {
            memcpy(dst, &v, 8);
            dst += 8;
        } while (dst < end);
        return;
    }
    if (dist < 8) {
        /*
         * The output repeats with period dist, so also with the first
         * multiple of dist that is >= 8: bytes before that come one by one,
         * the rest 8 at a time from that far back.
         */
        size_t k = dist * ((8 + dist - 1) / dist);
        uint8_t *head = dst + (k - dist);

        while (dst < head && dst < end) {
            *dst++ = *src++;
        }
        src = dst - k;
    }
    while (dst < end) {
        memcpy(dst, src, 8);
        dst += 8;
        src += 8;
    }
}

#define LL_MASK ((1u << LL_BITS) - 1)

/*
 * The fast loop: while the input and output have slack and the stop point
 * is not near. Returns 1 at the end of the block, 0 when it ran out of slack
 * (the slow loop goes on), -EIO.
 *
 * After a refill the buffer holds >= 56 bits: up to three literals (15 bits
 * each), or a length and a distance with their extra bits (48). The entry of
 * the next symbol is looked up before a match is copied (the refill only adds
 * bits above the count, so it stays valid), to overlap the two.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* BMI2 (shlx/shrx/bzhi) takes some 8% off the loop: a clone for x86-64-v3 CPUs. */
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static int fast_symbols(Bits *b, Out *o, const Qcow2InflateTables *t)
{
    size_t out_len = (size_t)(o->end - o->start);
    size_t lim = out_len > FAST_OUT_SLACK ? out_len - FAST_OUT_SLACK : 0;
    const uint8_t *in_last = b->end - FAST_IN_SLACK; /* caller checked end - in >= 8 */
    const uint8_t *in = b->in;
    uint8_t *out = o->pos, *out_lim, *start = o->start;
    const uint32_t *ll = t->ll;
    uint64_t buf = b->buf;
    unsigned cnt = b->cnt;
    uint32_t e;
    int ret = 0;

    lim = o->stop < lim ? o->stop : lim;
    out_lim = start + lim;
    if (out >= out_lim || in > in_last) {
        return 0;
    }
    buf |= load_le64(in) << cnt;
    in += (63 - cnt) >> 3;
    cnt |= 56;
    e = ll[buf & LL_MASK];
    for (;;) {
        uint32_t cl, xb, len, dist;

        if (e & F_LIT) {
            cl = e & 15;
            buf >>= cl;
            cnt -= cl;
            *out++ = (uint8_t)(e >> 16);
            e = ll[buf & LL_MASK];
            if (e & F_LIT) {
                cl = e & 15;
                buf >>= cl;
                cnt -= cl;
                *out++ = (uint8_t)(e >> 16);
                e = ll[buf & LL_MASK];
                if (e & F_LIT) {
                    cl = e & 15;
                    buf >>= cl;
                    cnt -= cl;
                    *out++ = (uint8_t)(e >> 16);
                    e = ll[buf & LL_MASK];
                }
            }
            if (out >= out_lim || in > in_last) {
                break;
            }
            buf |= load_le64(in) << cnt;
            in += (63 - cnt) >> 3;
            cnt |= 56;
            continue;
        }
        if (e & F_SUB) {
            e = ll[(e >> 16) + ((buf >> LL_BITS) & ((1u << ((e >> 8) & 31)) - 1))];
            if (e & F_LIT) {
                cl = e & 15;
                buf >>= cl;
                cnt -= cl;
                *out++ = (uint8_t)(e >> 16);
                if (out >= out_lim || in > in_last) {
                    break;
                }
                buf |= load_le64(in) << cnt;
                in += (63 - cnt) >> 3;
                cnt |= 56;
                e = ll[buf & LL_MASK];
                continue;
            }
        }
        if (e & (F_EOB | F_BAD)) {
            ret = e & F_BAD ? -EIO : 1;
            cl = e & 15;
            buf >>= cl;
            cnt -= cl;
            break;
        }
        cl = e & 15;
        xb = (e >> 8) & 31;
        len = (e >> 16) + (uint32_t)((buf >> cl) & ((1u << xb) - 1));
        buf >>= cl + xb;
        cnt -= cl + xb;
        e = lookup(t->dist, D_BITS, buf);
        cl = e & 15;
        xb = (e >> 8) & 31;
        dist = (e >> 16) + (uint32_t)((buf >> cl) & ((1u << xb) - 1));
        buf >>= cl + xb;
        cnt -= cl + xb;
        if ((e & F_BAD) || dist > (size_t)(out - start)) {
            ret = -EIO;
            break;
        }
        if (in <= in_last) {
            buf |= load_le64(in) << cnt;
            in += (63 - cnt) >> 3;
            cnt |= 56;
            e = ll[buf & LL_MASK];
            copy_match(out, dist, len);
            out += len;
            if (out < out_lim) {
                continue;
            }
        } else {
            copy_match(out, dist, len);
            out += len;
        }
        break;
    }
    b->in = in;
    b->buf = buf;
    b->cnt = cnt;
    o->pos = out;
    return ret;
}

/* One symbol with every check: 1 = end of block, 0 = go on, 2 = stopped, -errno. */
static int slow_symbol(Bits *b, Out *o, const Qcow2InflateTables *t, bool exact)
{
    uint32_t e, cl, xb, len, dist;
    size_t room = (size_t)(o->end - o->pos);

    refill(b);
    e = lookup(t->ll, LL_BITS, b->buf);
    if (e & F_BAD) {
        return -EIO;
    }
    take(b, e & 15);
    if (e & (F_LIT | F_EOB)) {
        if (overran(b)) {
            return -EIO;
        }
        if (e & F_EOB) {
            return 1;
        }
        if (room == 0) {
            return -ENOSPC; /* only reached when exact: otherwise stop <= out_len */
        }
        *o->pos++ = (uint8_t)(e >> 16);
        return 0;
    }
    len = (e >> 16) + take(b, (e >> 8) & 31);
    e = lookup(t->dist, D_BITS, b->buf);
    cl = e & 15;
    xb = (e >> 8) & 31;
    take(b, cl);
    dist = (e >> 16) + take(b, xb);
    if ((e & F_BAD) || overran(b) || dist > (size_t)(o->pos - o->start)) {
        return -EIO;
    }
    if (len > room) {
        if (exact) {
            return -ENOSPC;
        }
        len = (uint32_t)room; /* cut at out_len, which is past the stop point */
    }
    for (uint32_t i = 0; i < len; i++) {
        o->pos[i] = o->pos[(ptrdiff_t)i - (ptrdiff_t)dist];
    }
    o->pos += len;
    return 0;
}

/* The symbols of a Huffman block: 1 = stopped, 0 = block done, -errno. */
static int huffman_block(Bits *b, Out *o, const Qcow2InflateTables *t, bool exact)
{
    for (;;) {
        int ret;

        if ((size_t)(o->pos - o->start) >= o->stop) {
            return 1;
        }
        if (b->end - b->in >= (ptrdiff_t)FAST_IN_SLACK) {
            ret = fast_symbols(b, o, t);
            if (ret != 0) {
                return ret < 0 ? ret : 0;
            }
            if ((size_t)(o->pos - o->start) >= o->stop) {
                return 1;
            }
        }
        ret = slow_symbol(b, o, t, exact);
        if (ret != 0) {
            return ret < 0 ? ret : 0;
        }
    }
}

ssize_t qcow2_raw_inflate(Qcow2InflateTables *t, const uint8_t *in, size_t in_len, uint8_t *out,
                          size_t out_len, size_t stop_at, bool *ended)
{
    bool exact = stop_at > out_len;
    Bits b = { .in = in, .end = in + in_len };
    Out o = { .start = out, .pos = out, .end = out + out_len, .stop = exact ? SIZE_MAX : stop_at };
    unsigned final = 0;

    *ended = false;
    while (!final) {
        int ret;

        if ((size_t)(o.pos - o.start) >= o.stop) {
            return o.pos - o.start;
        }
        refill(&b);
        final = take(&b, 1);
        switch (take(&b, 2)) {
        case 0:
            ret = overran(&b) ? -EIO : stored_block(&b, &o, exact);
            break;
        case 1:
            build_fixed(t);
            ret = huffman_block(&b, &o, t, exact);
            break;
        case 2:
            ret = read_dynamic(&b, t);
            ret = ret < 0 ? ret : huffman_block(&b, &o, t, exact);
            break;
        default:
            ret = -EIO; /* block type 3 */
            break;
        }
        if (ret < 0) {
            return ret;
        }
        if (ret > 0) {
            return o.pos - o.start; /* stopped */
        }
    }
    *ended = true;
    return o.pos - o.start;
}
