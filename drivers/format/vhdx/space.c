/*
 * vhdx: reusing space of the file that nothing references any more, for new
 * payload and sector bitmap blocks.
 *
 * VHDX has no free-space map, and space falls out of use: the BAT region a
 * resize left behind when it moved the BAT to the end of the file
 * (resize.c), the blocks a shrink dropped, a block written before a crash
 * that its BAT entry never got. Such space is found by a scan of what the
 * image references: the first MiB (file identifier, headers, region
 * tables), the log, the BAT and metadata regions, and every block a BAT
 * entry gives an offset (present blocks, blocks that keep their offset for
 * reuse, sector bitmap blocks). The 1 MiB aligned gaps of at least 1 MiB
 * between them (and after the last one up to the allocation end) go into a
 * list of at most VHDX_MAX_GAPS gaps; new blocks are taken from the first
 * gap they fit before the file grows.
 *
 * The scan runs at the first allocation of a writable session and again
 * after each resize (whose metadata updates are durable by then). Limits:
 * a BAT of more than VHDX_GAP_SCAN_MAX entries is not scanned (bounded
 * memory and CPU: the scan sorts one 16-byte range per entry), nor an image
 * whose region table holds regions this driver does not know (it cannot
 * tell what they use).
 *
 * Crash safety: a gap is space no durable metadata points at, so writing a
 * block there and a crash before its BAT entry is durable leaves it
 * unreferenced, as a block appended at the end would be. Space freed
 * during a session (by a discard, or a shrink before its flush) is not
 * reused until the next scan after it is durable.
 */
#include <errno.h>
#include <stdlib.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

typedef struct Range {
    uint64_t off, len;
} Range;

static int cmp_range(const void *a, const void *b)
{
    const Range *x = a, *y = b;

    return x->off < y->off ? -1 : x->off > y->off;
}

static void add_gap(BDRVVhdxState *s, uint64_t from, uint64_t to)
{
    from = round_up_u64(from, VHDX_MiB);
    if (to > from && to - from >= VHDX_MiB && s->n_gaps < VHDX_MAX_GAPS) {
        s->gaps[s->n_gaps].off = from;
        s->gaps[s->n_gaps].len = (to - from) / VHDX_MiB * VHDX_MiB;
        s->n_gaps++;
    }
}

/* What the image references: returns the number of ranges in r (bat_entries + 4 room). */
static size_t referenced(const BDRVVhdxState *s, Range *r)
{
    size_t n = 0;

    r[n++] = (Range){ 0, VHDX_MiB };
    r[n++] = (Range){ s->hdr.log_offset, s->hdr.log_length };
    r[n++] = (Range){ s->bat_offset, s->bat_length };
    r[n++] = (Range){ s->meta_offset, s->meta_length };
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t off = s->bat[i] & VHDX_BAT_OFFSET_MASK;
        bool sb = (i + 1) % (s->chunk_ratio + 1) == 0;

        if (off) {
            r[n++] = (Range){ off, sb ? VHDX_MiB : s->block_size };
        }
    }
    return n;
}

/* Finds the gaps (see the top of the file); with none found, blocks go at the end. */
static void scan(BDRVVhdxState *s)
{
    Range *r;
    uint64_t end = 0;
    size_t n;

    s->n_gaps = 0;
    s->gaps_known = true;
    if (s->unknown_regions || s->bat_entries > VHDX_GAP_SCAN_MAX) {
        return;
    }
    r = malloc((s->bat_entries + 4) * sizeof(*r));
    if (!r) {
        return; /* no reuse this time: not an error */
    }
    n = referenced(s, r);
    qsort(r, n, sizeof(*r), cmp_range);
    for (size_t i = 0; i < n; i++) {
        uint64_t stop;

        if (r[i].off > end) {
            add_gap(s, end, r[i].off);
        }
        /* Ranges come from validated entries, but saturate all the same. */
        stop = r[i].len > UINT64_MAX - r[i].off ? UINT64_MAX : r[i].off + r[i].len;
        end = stop > end ? stop : end;
    }
    if (end < s->file_end) {
        add_gap(s, end, s->file_end);
    }
    free(r);
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

bool vhdx_space_kept_ok(const BDRVVhdxState *s, uint64_t idx, uint64_t off)
{
    uint64_t len = s->block_size;

    if (off < VHDX_MiB || off > s->file_end || len > s->file_end - off ||
        overlaps(off, len, s->hdr.log_offset, s->hdr.log_length) ||
        overlaps(off, len, s->bat_offset, s->bat_length) ||
        overlaps(off, len, s->meta_offset, s->meta_length)) {
        return false;
    }
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t o = s->bat[i] & VHDX_BAT_OFFSET_MASK;
        bool sb = (i + 1) % (s->chunk_ratio + 1) == 0;

        if (i != idx && o && overlaps(off, len, o, sb ? VHDX_MiB : s->block_size)) {
            return false;
        }
    }
    return true;
}

void vhdx_space_invalidate(BDRVVhdxState *s)
{
    s->gaps_known = false;
    s->n_gaps = 0;
}

uint64_t vhdx_alloc_space(BDRVVhdxState *s, uint64_t len, bool *fresh)
{
    uint64_t off;

    if (fresh) {
        *fresh = false;
    }
    if (!s->gaps_known) {
        scan(s);
    }
    for (int i = 0; i < s->n_gaps; i++) {
        VhdxGap *g = &s->gaps[i];

        if (g->len >= len) {
            off = g->off;
            g->off += len;
            g->len -= len;
            if (g->len == 0) {
                s->gaps[i] = s->gaps[--s->n_gaps];
            }
            return off;
        }
    }
    off = s->file_end;
    if (off + len > VHDX_MAX_FILE) {
        return 0;
    }
    s->file_end = off + len;
    if (fresh) {
        *fresh = off >= s->zero_from;
    }
    if (s->zero_from < off + len) {
        s->zero_from = off + len;
    }
    return off;
}
