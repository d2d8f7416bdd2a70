/*
 * Growing an image file ahead of allocations (vdi, parallels), and knowing
 * which part of it reads zero (vdi, parallels, vpc). Not installed.
 *
 * Formats that put every new block or cluster at the end of their file used
 * to extend the file once per allocation (a zeroing fallocate or an
 * ftruncate each time; on io_uring both run in a worker, one per file, and
 * stall the queue). FmtGrow extends it in steps past what the allocation
 * needs, and remembers which part of the file was never written since it
 * was grown: an allocation there skips zeroing the rest of its block, which
 * already reads as zeroes. The driver trims the unused tail at close and
 * before its own resizes and repairs (fmt_co_grow_trim).
 *
 * A crash leaves the grown tail in place: it lies past every slot the
 * format's metadata uses, so it is unreferenced space, which the next
 * allocations reuse (they zero what they do not overwrite, since the tail
 * may hold data of allocations whose metadata never reached the disk).
 *
 * The caller serializes every call on one FmtGrow (its allocation lock).
 */
#ifndef COBLK_DRIVERS_FORMAT_FMT_GROW_H
#define COBLK_DRIVERS_FORMAT_FMT_GROW_H

#include <stdbool.h>
#include <stdint.h>

#include <coblk/block-driver.h>

typedef struct FmtGrow {
    uint64_t file_len;      /**< the file's length as last set or read */
    uint64_t zero_from;     /**< [zero_from, file_len) reads zero: grown, not written since */
    uint64_t step;          /**< grow this far past what is needed; 0: extend exactly */
    uint64_t align;         /**< grown lengths are multiples of it (a block or cluster) */
    PreallocMode mode;      /**< PREALLOC_MODE_OFF (sparse) or PREALLOC_MODE_FALLOC */
    bool grown;             /**< the file is longer than its metadata needs: trim it */
    uint64_t grows;         /**< truncates done to grow (tests, stats) */
} FmtGrow;

/**
 * Reads the length of file into g (nothing past it is known to read zero)
 * and sets the growing policy: step bytes ahead (0 for none), in multiples
 * of align, extended with mode. Returns 0 or -errno.
 */
int coroutine_fn fmt_co_grow_init(BdrvChild *file, FmtGrow *g, uint64_t step, uint64_t align,
                                  PreallocMode mode);

/**
 * Makes the file at least end bytes long: grows it to end + step (rounded
 * up to align, at most max) when it is shorter. If the step cannot be had
 * (no space, no fallocate) it extends to end exactly. Returns 0 or -errno.
 */
int coroutine_fn fmt_co_grow_to(BdrvChild *file, FmtGrow *g, uint64_t end, uint64_t max);

/**
 * The bytes of [from, to) that do not read as zeroes yet, from from on:
 * a writer that needs zeroes there writes this many, the rest already is.
 */
uint64_t fmt_grow_unzeroed(const FmtGrow *g, uint64_t from, uint64_t to);

/** [from, to) was written (or handed out to a writer): it no longer reads zero. */
void fmt_grow_written(FmtGrow *g, uint64_t to);

/**
 * [from, to) was handed out to writers that extend the file themselves by
 * writing past its end (vpc: a new block goes where the footer was, without
 * fmt_co_grow_to). A write past the end leaves a gap that reads zero, so
 * space past the file's length as g knew it reads zero until handed out: as
 * fmt_grow_written, with the file counted as at least to bytes long.
 */
void fmt_grow_appended(FmtGrow *g, uint64_t to);

/**
 * Cuts the file to keep bytes if it was grown past that. The caller made
 * the metadata that refers to [0, keep) durable first. Returns 0 or -errno.
 */
int coroutine_fn fmt_co_grow_trim(BdrvChild *file, FmtGrow *g, uint64_t keep);

/** The driver set the file's length to len itself (a cut, a copy past the end). */
void fmt_grow_truncated(FmtGrow *g, uint64_t len);

/**
 * Something else changed the file's length (a resize, a repair): reads it
 * again; nothing before it is known to read zero. Returns 0 or -errno; on
 * an error nothing at all is known to read zero any more (every later
 * allocation zeroes what it does not write) until a reset succeeds.
 */
int coroutine_fn fmt_co_grow_reset(BdrvChild *file, FmtGrow *g);

#endif /* COBLK_DRIVERS_FORMAT_FMT_GROW_H */
