/*
 * Whole-chunk decompression for the read-only formats (dmg chunks, cloop
 * blocks): zlib, bzip2 (libbz2), ADC (Apple Data Compression) and LZMA
 * (liblzma: xz streams, and for dmg also legacy .lzma streams). Not
 * installed.
 *
 * Every codec decodes one compressed buffer into exactly out_len bytes: a
 * stream that ends early, runs past out_len, refers before the start of the
 * output (ADC) or is damaged fails with -EIO and a short reason. The
 * caller's out buffer holds out_len + 1 bytes: the spare byte lets a stream
 * that decodes to more than out_len be seen without reading past the buffer.
 */
#ifndef COBLK_DRIVERS_FORMAT_DECOMP_H
#define COBLK_DRIVERS_FORMAT_DECOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum DecompType {
    DECOMP_ZLIB,
    DECOMP_BZIP2,       /* needs COBLK_HAVE_BZIP2 */
    DECOMP_ADC,
    DECOMP_XZ,          /* an xz stream; needs COBLK_HAVE_LZMA */
    DECOMP_LZMA,        /* an xz or a legacy .lzma ("LZMA_Alone") stream; liblzma */
} DecompType;

/* liblzma's decoder may use at most this much memory (xz -9 needs 65 MiB). */
#define DECOMP_LZMA_MEMLIMIT (128ULL << 20)

/** Decoder state kept between chunks (zlib stream, liblzma stream). Zero-initialise. */
typedef struct DecompCtx {
    void *zs;
    void *lz;
} DecompCtx;

/** True if this build decodes t (bzip2 and LZMA depend on optional libraries). */
bool decomp_available(DecompType t);

/**
 * Decodes in[0..in_len) of type t into exactly out_len bytes of out (which
 * has out_len + 1 bytes). Returns 0; -EIO with *why set to a static reason
 * for a bad stream; -ENOMEM; -ENOTSUP if this build lacks the codec.
 */
int decomp_run(DecompCtx *ctx, DecompType t, const uint8_t *in, size_t in_len, uint8_t *out,
               size_t out_len, const char **why);

/** Frees the decoder state (ctx stays usable). */
void decomp_ctx_free(DecompCtx *ctx);

#endif /* COBLK_DRIVERS_FORMAT_DECOMP_H */
