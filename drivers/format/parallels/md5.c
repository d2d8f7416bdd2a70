/*
 * MD5 as RFC 1321 defines it: 512-bit blocks, four rounds of sixteen steps,
 * little-endian words, the message padded with 0x80, zeroes and its bit
 * length. Written from the RFC's description.
 */
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/parallels/md5.h"

/* floor(|sin(i + 1)| * 2^32), the RFC's table T. */
static const uint32_t md5_t[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

/* Left-rotation amounts, four per round. */
static const uint8_t md5_s[16] = { 7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21 };

static uint32_t rotl32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void md5_block(uint32_t h[4], const uint8_t *blk)
{
    uint32_t x[16], a = h[0], b = h[1], c = h[2], d = h[3];

    for (int i = 0; i < 16; i++) {
        x[i] = ld_le32(blk + 4 * i);
    }
    for (unsigned i = 0; i < 64; i++) {
        unsigned round = i / 16, k;
        uint32_t f, tmp;

        if (round == 0) {
            f = (b & c) | (~b & d);
            k = i;
        } else if (round == 1) {
            f = (b & d) | (c & ~d);
            k = (5 * i + 1) % 16;
        } else if (round == 2) {
            f = b ^ c ^ d;
            k = (3 * i + 5) % 16;
        } else {
            f = c ^ (b | ~d);
            k = (7 * i) % 16;
        }
        tmp = d;
        d = c;
        c = b;
        b = b + rotl32(a + f + md5_t[i] + x[k], md5_s[round * 4 + i % 4]);
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

void prl_md5(const void *buf, size_t len, uint8_t digest[16])
{
    uint32_t h[4] = { 0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u };
    const uint8_t *p = buf;
    uint8_t last[128];
    size_t rest = len % 64, tail;

    for (size_t off = 0; off + 64 <= len; off += 64) {
        md5_block(h, p + off);
    }
    /* The remaining bytes, 0x80, zeroes, then the length in bits (LE u64). */
    memset(last, 0, sizeof(last));
    memcpy(last, p + (len - rest), rest);
    last[rest] = 0x80;
    tail = rest < 56 ? 64 : 128;
    st_le64(last + tail - 8, (uint64_t)len * 8);
    md5_block(h, last);
    if (tail == 128) {
        md5_block(h, last + 64);
    }
    for (int i = 0; i < 4; i++) {
        st_le32(digest + 4 * i, h[i]);
    }
}
