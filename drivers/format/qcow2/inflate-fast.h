/*
 * qcow2: a raw deflate (RFC 1951) decoder that can stop early.
 *
 * Written from RFC 1951 for the qcow2 compressed-cluster reads: it decodes
 * straight into the caller's output buffer (which is also the window: the
 * output starts at the start of the stream), and stops as soon as a given
 * number of bytes has come out, so a read of the start of a cluster pays
 * only for the start.
 */
#ifndef COBLK_QCOW2_INFLATE_FAST_H
#define COBLK_QCOW2_INFLATE_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Root table bits: literal/length and distance codes. */
#define QCOW2_INFL_LL_BITS 10
#define QCOW2_INFL_D_BITS 8
/*
 * Table sizes that no code can exceed: the root table, plus one subtable of
 * at most 2^(15 - root bits) entries for each symbol (a subtable holds at
 * least one code), 288 literal/length and 32 distance symbols.
 */
#define QCOW2_INFL_LL_SIZE ((1u << QCOW2_INFL_LL_BITS) + 288u * (1u << (15 - QCOW2_INFL_LL_BITS)))
#define QCOW2_INFL_D_SIZE ((1u << QCOW2_INFL_D_BITS) + 32u * (1u << (15 - QCOW2_INFL_D_BITS)))

/* Decode tables (~56 KiB): per decoder user, reused across calls; no init needed. */
typedef struct Qcow2InflateTables {
    uint32_t ll[QCOW2_INFL_LL_SIZE];
    uint32_t dist[QCOW2_INFL_D_SIZE];
} Qcow2InflateTables;

/*
 * Decodes the raw deflate stream in[0, in_len) into out[0, out_len).
 *
 * stop_at <= out_len: decoding stops as soon as at least stop_at bytes are
 * out (it may produce some more, never past out_len); a stream that goes on
 * past out_len is cut there. stop_at > out_len: the whole stream is decoded,
 * and -ENOSPC if it does not fit in out_len.
 *
 * Returns the number of bytes produced (out[0, n) is the stream's output;
 * out[n, out_len) may have been written too), with *ended set when the
 * stream's final block was decoded to its end. A stream that ends before
 * stop_at returns its length with *ended set. -EIO: the stream is invalid
 * (bad block type, stored length check, over-subscribed or incomplete code,
 * code lengths repeated past the end, missing end-of-block code, symbol
 * 286/287 or distance 30/31, distance before the start of the output) or
 * truncated (it needs bits beyond in_len). Never reads in or writes out
 * beyond their lengths.
 */
ssize_t qcow2_raw_inflate(Qcow2InflateTables *t, const uint8_t *in, size_t in_len, uint8_t *out,
                          size_t out_len, size_t stop_at, bool *ended);

#endif
