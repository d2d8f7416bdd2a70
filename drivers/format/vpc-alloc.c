/*
 * vpc: writes of dynamic and differencing disks, with guest data written
 * outside alloc_lock and many allocating writes in flight at once.
 *
 * A new block: under alloc_lock it takes its place (a discarded block's, or
 * the end of the file, with its data aligned: vpc_end_place; free_off moves past
 * it) and an in-flight record
 * (fmt-util.h). Without the lock its bitmap (all ones for a dynamic disk;
 * the write's sectors for a differencing one) and, in a dynamic disk, the
 * zeroes around the write that the place does not read already (new space
 * past the old end of the file does: alloc_zeroes) go out, then the write's
 * data. Other writes of the block "join" it once the zeroes are written (at
 * once when there are none; FmtJoin, fmt-util.h): they write their data
 * into it and complete with it. Under the lock again, once its joiners'
 * data is written, a differencing block whose joiners wrote has its bitmap
 * written again with their sectors' bits too (each joiner adds its bits only
 * after its data is written; the first bitmap write is done by then); then
 * the block's BAT entry is set in memory and its BAT sector marked dirty:
 * the write completes without a flush.
 * vpc_commit writes what is dirty: the footers when the file grew, one
 * flush (with the data of every block the entries point at), the BAT
 * sectors. It
 * runs at the guest's flush (and close), before discard and resize, and
 * when VPC_DIRTY_MAX sectors are dirty.
 *
 * Differencing disks: a write into an allocated block whose sectors' bits
 * are not all set queues a "bits" record; the first record that finds
 * nobody publishing takes every queued one (at most PUBLISH_MAX), flushes
 * once without the lock (their data), then under it sets their bits. So
 * concurrent bitmap updates share one flush instead of one each.
 *
 * Reads do not wait: until its entry is set a block reads as before (zeroes
 * or the parent), which the new block holds outside the writes still in
 * flight, none of which has completed. Resize and rebase take move_lock
 * exclusively (every write holds it shared); discard and check wait for the
 * allocations in flight (vpc_alloc_drain).
 *
 * Crash safety: a BAT entry reaches the file after a flush that follows the
 * bitmap, zeroes and data of the write that allocated the block and the
 * data (and bitmap rewrite) of its joiners, all written before the entry is
 * set in memory, so before any commit can write it; bits of an allocated
 * block are set after a flush that follows the data they make visible. A
 * write acknowledged before a guest flush is durable when that flush
 * returns. A failed write sets no entry and fails the write and its
 * joiners (a failed joiner adds no bits); a failed commit keeps the sectors
 * dirty for the next.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vpc-int.h"

#define PUBLISH_MAX 64

typedef struct VpcPub {
    FmtJoin j;                /* allocations: in s->allocs (first: see pub_of) */
    bool grows;               /* allocated at the end of the file */
    bool done;                /* bits records: bits published, or failed: ret is final */
    int ret;
    uint32_t block, first, count;
    int64_t at;               /* the block's place (its bitmap) */
    uint8_t *bm;              /* differencing allocations: joiners' bits (then all bits) */
    bool bm_grown;            /* joiners set bits in bm: write the bitmap again */
    struct VpcPub *next;
} VpcPub;
_Static_assert(offsetof(VpcPub, j) == 0, "fmt_join_find returns the VpcPub");

static VpcPub *pub_of(FmtJoin *j)
{
    return (VpcPub *)j;
}

static void bits_set(uint8_t *bm, uint32_t first, uint32_t count)
{
    for (uint32_t i = first; i < first + count; i++) {
        bm[i / 8] |= (uint8_t)(0x80 >> (i % 8));
    }
}

static bool bits_all_set(const uint8_t *bm, uint32_t first, uint32_t count)
{
    for (uint32_t i = first; i < first + count; i++) {
        if (!(bm[i / 8] & (0x80 >> (i % 8)))) {
            return false;
        }
    }
    return true;
}

/* Sets the bits of a bits record in the bitmap of its block. Holds alloc_lock. */
static int coroutine_fn write_bits(BlockDriverState *bs, VpcPub *p)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t b0 = p->first / 8 / VHD_SECTOR * VHD_SECTOR;
    uint32_t b1 = (uint32_t)round_up_u64((p->first + p->count + 7) / 8, VHD_SECTOR);
    uint8_t *bm;
    int ret;

    if ((int64_t)s->bat[p->block] * VHD_SECTOR != p->at) {
        return 0; /* the block moved or went meanwhile (not in a differencing disk) */
    }
    bm = malloc(s->bitmap_size);
    if (!bm) {
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, p->at, s->bitmap_size, bm);
    if (ret == 0) {
        bits_set(bm, p->first, p->count);
        ret = fmt_co_pwrite(bs->file, p->at + b0, b1 - b0, bm + b0, 0);
    }
    free(bm);
    return ret;
}

static int coroutine_fn write_bat_sector(BlockDriverState *bs, uint32_t sec)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t first = sec * 128;
    uint32_t count = s->bat_entries - first < 128 ? s->bat_entries - first : 128;
    uint8_t buf[VHD_SECTOR];

    for (uint32_t i = 0; i < count; i++) {
        st_be32(buf + i * 4, s->bat[first + i]);
    }
    return fmt_co_pwrite(bs->file, (int64_t)(s->bat_offset + (uint64_t)first * 4), count * 4,
                         buf, 0);
}

int coroutine_fn vpc_commit(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;
    int ret;

    if (!s->n_dirty && !s->footer_dirty) {
        return 0;
    }
    /* The footers at free_off (past every block in flight) are durable with the data. */
    ret = s->footer_dirty ? vpc_write_footers(bs) : 0;
    if (s->footer_dirty) {
        fmt_grow_appended(&s->grow, (uint64_t)s->free_off + VHD_FOOTER_SIZE);
    }
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs); /* data before the entries */
    if (ret < 0) {
        return ret;
    }
    s->footer_dirty = false;
    BLKDBG_EVENT(bs->file, BLKDBG_MAP_UPDATE);
    while (s->n_dirty && ret == 0) {
        ret = write_bat_sector(bs, s->dirty[s->n_dirty - 1]);
        s->n_dirty -= ret == 0;
    }
    return ret;
}

/* Sets a's entry in memory and marks its BAT sector dirty. Holds alloc_lock. */
static int coroutine_fn link_block(BlockDriverState *bs, VpcPub *a)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t sec = a->block / 128, j = 0;
    int ret;

    while (j < s->n_dirty && s->dirty[j] != sec) {
        j++;
    }
    if (j == VPC_DIRTY_MAX) {
        ret = vpc_commit(bs);
        if (ret < 0) {
            return ret;
        }
        j = 0;
    }
    s->bat[a->block] = (uint32_t)(a->at / VHD_SECTOR);
    if (j == s->n_dirty) {
        s->dirty[s->n_dirty++] = sec;
    }
    s->footer_dirty |= a->grows;
    return 0;
}

/* Publishes up to PUBLISH_MAX queued bits records: one flush, then their bits. */
static void coroutine_fn publish_batch(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;
    VpcPub *batch[PUBLISH_MAX];
    int n = 0, ret;

    while (s->publish_head && n < PUBLISH_MAX) {
        batch[n] = s->publish_head;
        s->publish_head = batch[n++]->next;
    }
    s->publishing = true;
    co_mutex_unlock(&s->alloc_lock);
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    ret = bdrv_co_flush(bs->file->bs); /* the data before the bits that show it */
    co_mutex_lock(&s->alloc_lock);
    BLKDBG_EVENT(bs->file, BLKDBG_MAP_UPDATE);
    for (int i = 0; i < n; i++) {
        batch[i]->ret = ret ? ret : write_bits(bs, batch[i]);
        batch[i]->done = true;
    }
    s->publish_waiting -= (unsigned)n;
    s->publishing = false;
    co_queue_restart_all(&s->allocs.wait);
}

/* Queues bits record p and waits until it is published. Holds alloc_lock. */
static int coroutine_fn publish(BlockDriverState *bs, VpcPub *p)
{
    BDRVVpcState *s = bs->opaque;

    p->next = s->publish_head;
    s->publish_head = p;
    s->publish_waiting++;
    while (!p->done) {
        if (s->publishing) {
            fmt_inflight_wait(&s->allocs, &s->alloc_lock);
        } else {
            publish_batch(bs);
        }
    }
    return p->ret;
}

/*
 * The new block's bitmap, then zeroes over [0, zhead) and [in_block + n,
 * in_block + n + ztail) of its data: what must read zero around the write
 * and does not already (alloc_zeroes).
 */
static int coroutine_fn fill_block(BlockDriverState *bs, int64_t at, uint32_t in_block,
                                   int64_t n, int64_t zhead, int64_t ztail)
{
    BDRVVpcState *s = bs->opaque;
    int64_t data = at + s->bitmap_size;
    uint8_t *bm = calloc(1, s->bitmap_size);
    int ret;

    if (!bm) {
        return -ENOMEM;
    }
    if (s->type == VHD_DIFF) {
        bits_set(bm, in_block / VHD_SECTOR, (uint32_t)(n / VHD_SECTOR));
    } else {
        memset(bm, 0xff, s->block_size / VHD_SECTOR / 8);
    }
    ret = fmt_co_pwrite(bs->file, at, s->bitmap_size, bm, 0);
    free(bm);
    if (ret == 0 && zhead) {
        ret = bdrv_co_pwrite_zeroes(bs->file, data, zhead, 0);
    }
    if (ret == 0 && ztail) {
        ret = bdrv_co_pwrite_zeroes(bs->file, data + in_block + n, ztail, 0);
    }
    return ret;
}

/*
 * How much of a's block around the write needs zeroes: *zhead bytes from
 * its start on, *ztail from the end of the write on. A dynamic disk's
 * bitmap shows the whole block, so it must read zero outside the write; the
 * space past what was handed out since the file's length was read already
 * does (fmt-grow.h: new space past the old end of the file; the footer
 * there lies under the bitmap). A place inside the file (a discarded block's, or where a lost or
 * failed allocation may have left data) is zeroed. A differencing block's
 * bitmap shows only the write's sectors: the others read the parent and
 * their bytes are never read, so nothing is zeroed. Marks the block handed
 * out. Holds alloc_lock.
 */
static void alloc_zeroes(BDRVVpcState *s, const VpcPub *a, uint32_t in_block, int64_t n,
                         int64_t *zhead, int64_t *ztail)
{
    uint64_t data = (uint64_t)a->at + s->bitmap_size, w0 = data + in_block;
    uint64_t w1 = w0 + (uint64_t)n, end = data + s->block_size;

    *zhead = *ztail = 0;
    if (s->type != VHD_DIFF) {
        *zhead = (int64_t)fmt_grow_unzeroed(&s->grow, data, w0);
        *ztail = (int64_t)fmt_grow_unzeroed(&s->grow, w1, end);
    }
    fmt_grow_appended(&s->grow, end);
}

/*
 * Where a new block at the end of the file goes: at free_off, or just past
 * it so that its data (after the bitmap) starts at a multiple of 1/32 of
 * the block size, at most 64 KiB. Back to back, a 512-byte bitmap before
 * each 2 MiB of data put every block's data 512 bytes further off the page
 * cache's folios, and every 64 KiB guest write across two of them (about a
 * quarter more kernel CPU per write, the same as raw written 2560 bytes off).
 * The gap (under 1/32 of a block, a hole) is referenced by nothing.
 */
int64_t vpc_end_place(const BDRVVpcState *s, int64_t from)
{
    uint64_t align = s->block_size / 32;

    align = align > 65536 ? 65536 : align < VHD_SECTOR ? VHD_SECTOR : align;
    return (int64_t)(round_up_u64((uint64_t)from + s->bitmap_size, align) - s->bitmap_size);
}

/* A differencing joiner's sectors, for joined(). */
typedef struct VpcJoinBits {
    uint32_t first, count;
} VpcJoinBits;

/* A differencing joiner's data is written: its bits go into the allocation's bitmap. */
static void joined(FmtJoin *j, void *opaque)
{
    VpcPub *a = (VpcPub *)j;
    const VpcJoinBits *b = opaque;

    bits_set(a->bm, b->first, b->count);
    a->bm_grown = true;
}

/*
 * Sealed differencing allocation a whose joiners set more bits: writes its
 * bitmap again (before its entry is set, so before the flush that precedes
 * the entry on disk). Holds alloc_lock; drops it for the write.
 */
static int coroutine_fn rewrite_bitmap(BlockDriverState *bs, VpcPub *a)
{
    BDRVVpcState *s = bs->opaque;
    int ret;

    bits_set(a->bm, a->first, a->count);
    co_mutex_unlock(&s->alloc_lock);
    ret = fmt_co_pwrite(bs->file, a->at, s->bitmap_size, a->bm, 0);
    co_mutex_lock(&s->alloc_lock);
    return ret;
}

/* Allocates block (unused) for the write. Called with alloc_lock held; releases it. */
static int coroutine_fn alloc_write(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                    int64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVpcState *s = bs->opaque;
    VpcPub a = { .block = block, .at = vpc_end_place(s, s->free_off),
                 .first = in_block / VHD_SECTOR, .count = (uint32_t)(n / VHD_SECTOR) };
    int64_t zhead, ztail;
    int ret;

    if (s->type == VHD_DIFF) {
        a.bm = calloc(1, s->bitmap_size); /* for joiners' bits */
        if (!a.bm) {
            co_mutex_unlock(&s->alloc_lock);
            return -ENOMEM;
        }
    }
    if (!vpc_free_slot_pop(s, &a.at)) { /* else a discarded block's place (unmapped, flushed) */
        if (a.at / VHD_SECTOR > UINT32_MAX - 1) {
            co_mutex_unlock(&s->alloc_lock);
            free(a.bm);
            return -EFBIG; /* BAT entries are 32-bit sector numbers */
        }
        a.grows = true;
        s->free_off = a.at + s->bitmap_size + s->block_size;
    }
    alloc_zeroes(s, &a, in_block, n, &zhead, &ztail);
    fmt_inflight_begin(&s->allocs, &a.j.in, block, 1);
    if (!zhead && !ztail) {
        fmt_join_open(&s->allocs, &a.j); /* no zeroes to wait for: joiners write at once */
    }
    co_mutex_unlock(&s->alloc_lock);

    BLKDBG_EVENT(bs->file, BLKDBG_CLUSTER_ALLOC);
    ret = fill_block(bs, a.at, in_block, n, zhead, ztail);
    if (ret == 0) {
        if (!a.j.open) {
            co_mutex_lock(&s->alloc_lock);
            fmt_join_open(&s->allocs, &a.j);
            co_mutex_unlock(&s->alloc_lock);
        }
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
        ret = bdrv_co_pwritev_part(bs->file, a.at + s->bitmap_size + in_block, n, qiov, qoff,
                                   0);
    }
    co_mutex_lock(&s->alloc_lock);
    fmt_join_seal(&s->allocs, &a.j, &s->alloc_lock);
    if (ret == 0 && a.bm_grown) {
        ret = rewrite_bitmap(bs, &a);
    }
    if (ret == 0) {
        ret = link_block(bs, &a);
    }
    ret = fmt_join_end(&s->allocs, &a.j, &s->alloc_lock, ret);
    if (ret < 0 && a.grows && a.at + s->bitmap_size + s->block_size == s->free_off) {
        s->free_off = a.at; /* nothing points at it: the next allocation takes it again */
    }
    co_mutex_unlock(&s->alloc_lock);
    free(a.bm);
    return ret;
}

/* An allocated differencing block: data, then (shared flush) the bits that show it. */
static int coroutine_fn write_diff(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                   int64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVpcState *s = bs->opaque;
    VpcPub p = { .block = block, .first = in_block / VHD_SECTOR,
                 .count = (uint32_t)(n / VHD_SECTOR),
                 .at = (int64_t)s->bat[block] * VHD_SECTOR };
    uint8_t *bm = malloc(s->bitmap_size);
    int ret = bm ? 0 : -ENOMEM;

    if (ret == 0) {
        ret = bdrv_co_pwritev_part(bs->file, p.at + s->bitmap_size + in_block, n, qiov, qoff,
                                   0);
    }
    co_mutex_lock(&s->alloc_lock);
    if (ret == 0) {
        ret = fmt_co_pread(bs->file, p.at, s->bitmap_size, bm);
    }
    if (ret == 0 && !bits_all_set(bm, p.first, p.count)) {
        ret = publish(bs, &p);
    }
    co_mutex_unlock(&s->alloc_lock);
    free(bm);
    return ret;
}

int coroutine_fn vpc_write_chunk(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                 int64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVpcState *s = bs->opaque;
    VpcPub *a;

    if (s->bat[block] == VHD_BAT_UNUSED) {
        co_mutex_lock(&s->alloc_lock);
        while ((a = pub_of(fmt_join_find(&s->allocs, block))) != NULL) {
            if (fmt_join_can_join(&a->j)) {
                VpcJoinBits bits = { in_block / VHD_SECTOR, (uint32_t)(n / VHD_SECTOR) };

                return fmt_co_join(&s->allocs, &a->j, &s->alloc_lock, bs->file,
                                   a->at + s->bitmap_size + in_block, n, qiov, qoff,
                                   s->type == VHD_DIFF ? joined : NULL, &bits);
            }
            fmt_inflight_wait(&s->allocs, &s->alloc_lock);
        }
        if (s->bat[block] == VHD_BAT_UNUSED) {
            return alloc_write(bs, block, in_block, n, qiov, qoff);
        }
        co_mutex_unlock(&s->alloc_lock);
    }
    if (s->type == VHD_DIFF) {
        return write_diff(bs, block, in_block, n, qiov, qoff);
    }
    return bdrv_co_pwritev_part(bs->file, (int64_t)s->bat[block] * VHD_SECTOR + s->bitmap_size +
                                in_block, n, qiov, qoff, 0);
}

int coroutine_fn vpc_alloc_drain(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;

    while (s->allocs.head || s->publish_waiting) {
        fmt_inflight_wait(&s->allocs, &s->alloc_lock);
    }
    return vpc_commit(bs);
}
