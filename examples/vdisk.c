/*
 * The virtual disk model of the embedding examples (see vdisk.h): queues,
 * rings, the device's submission path and the guest's completion path.
 * Setup, the scenario and the report are in vdisk-run.c.
 */
#include <stdio.h>
#include <string.h>

#include "vdisk-int.h"

#define GOLDEN 0x9e3779b97f4a7c15ULL

/* The pattern word at byte offset off of a block written with generation gen. */
static inline uint64_t pattern_word(int64_t off, uint64_t gen)
{
    return gen ? ((uint64_t)off ^ (gen * GOLDEN)) : 0; /* generation 0: never written */
}

void vdisk_fill(uint8_t *buf, int64_t offset, int len, uint64_t gen)
{
    for (int i = 0; i < len; i += 8) {
        uint64_t v = pattern_word(offset + i, gen);

        memcpy(buf + i, &v, 8);
    }
}

bool vdisk_check(VDisk *d, const uint8_t *buf, int64_t offset, int len, uint64_t gen)
{
    for (int i = 0; i < len; i += 8) {
        uint64_t v;

        memcpy(&v, buf + i, 8);
        if (v != pattern_word(offset + i, gen)) {
            if (d->mismatches < 5) {
                fprintf(stderr, "vdisk: mismatch at byte %lld: got %#llx, expected %#llx "
                        "(generation %llu)\n", (long long)(offset + i), (unsigned long long)v,
                        (unsigned long long)pattern_word(offset + i, gen),
                        (unsigned long long)gen);
            }
            d->mismatches++;
            return false;
        }
    }
    return true;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: cheap, good enough to spread requests over a region */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

/* A block of q's region with no request on it (the region has >= 2 * depth blocks). */
static int64_t pick_block(VQueue *q)
{
    VDisk *d = q->d;
    int64_t b = q->first_block + (int64_t)(rng_next(&q->rng) % (uint64_t)q->nblocks);

    while (d->busy[b]) {
        b = b + 1 == q->first_block + q->nblocks ? q->first_block : b + 1;
    }
    return b;
}

/* Guest driver: turns a free slot into a request on the avail ring. */
static void guest_prepare(VQueue *q, VReq *r)
{
    VDisk *d = q->d;
    int bs = d->cfg.block_size;

    r->flush = d->cfg.flush_every && ++q->prepared % (unsigned)d->cfg.flush_every == 0;
    r->write = false;
    r->block = -1;
    if (!r->flush) {
        r->block = pick_block(q);
        d->busy[r->block] = 1;
        r->write = (int)(rng_next(&q->rng) % 100) >= d->cfg.read_pct;
        if (r->write) {
            r->gen = ++d->gen_counter;
            vdisk_fill(r->buf, r->block * bs, bs, r->gen);
        } else {
            r->gen = d->committed[r->block];
            memset(r->buf, 0xa5, (size_t)bs); /* stale guest memory must not pass the check */
        }
        iovector_init_buf(&r->qiov, r->buf, (size_t)bs);
    }
    q->avail[q->avail_prod++ % (unsigned)d->cfg.depth] = (int)(r - q->reqs);
    d->outstanding++;
}

static void guest_refill(VQueue *q)
{
    while (q->q_free > 0) {
        guest_prepare(q, &q->reqs[q->free_slots[--q->q_free]]);
    }
    q->doorbell = q->avail_prod; /* the guest's write to the notify register */
}

void vdisk_start(VDisk *d)
{
    d->running = true;
    d->t_start = aio_clock_ns();
    for (int i = 0; i < d->cfg.queues; i++) {
        guest_refill(&d->q[i]);
    }
}

bool vdisk_device_pending(const VDisk *d)
{
    for (int i = 0; i < d->cfg.queues; i++) {
        if (d->q[i].doorbell != d->q[i].dev_seen) {
            return true;
        }
    }
    return false;
}

static void device_complete(void *opaque, int ret)
{
    VReq *r = opaque;
    VQueue *q = r->q;
    VDisk *d = q->d;
    uint64_t ns = (uint64_t)(aio_clock_ns() - r->t_submit);

    r->ret = ret;
    if (!r->flush) {
        lat_add(r->write ? &d->lat_write : &d->lat_read, ns);
    }
    d->in_flight--;
    d->completed++;
    if (d->drained) {
        d->completed_while_drained++;
    }
    q->used[q->used_prod++ % (unsigned)d->cfg.depth] = (int)(r - q->reqs);
    if (!d->irq_pending) { /* coalesce: one interrupt until the guest handles it */
        d->irq_pending = true;
        d->irqs_raised++;
        d->irq(d->irq_opaque);
    }
}

void vdisk_device_process(VDisk *d)
{
    blk_io_plug(d->blk);
    for (int i = 0; i < d->cfg.queues; i++) {
        VQueue *q = &d->q[i];

        while (q->dev_seen != q->doorbell) {
            VReq *r = &q->reqs[q->avail[q->dev_seen++ % (unsigned)d->cfg.depth]];
            int64_t off = r->block * d->cfg.block_size;

            r->t_submit = aio_clock_ns();
            d->in_flight++;
            d->submitted++;
            if (r->flush) {
                blk_aio_flush(d->blk, device_complete, r);
            } else if (r->write) {
                blk_aio_pwritev(d->blk, off, &r->qiov, 0, device_complete, r);
            } else {
                blk_aio_preadv(d->blk, off, &r->qiov, 0, device_complete, r);
            }
        }
    }
    blk_io_unplug(d->blk);
    d->batches++;
}

/* Guest: one used entry. */
static void guest_complete(VQueue *q, VReq *r)
{
    VDisk *d = q->d;
    int bs = d->cfg.block_size;

    if (r->ret < 0) {
        if (d->errors < 5) {
            fprintf(stderr, "vdisk: %s of block %lld failed: %s\n",
                    r->flush ? "flush" : r->write ? "write" : "read", (long long)r->block,
                    strerror(-r->ret));
        }
        d->errors++;
    } else if (r->flush) {
        d->flushes++;
    } else if (r->write) {
        d->committed[r->block] = r->gen;
        d->writes++;
    } else {
        if (d->cfg.inject_mismatch && r->gen) { /* shows that the check can fail */
            d->cfg.inject_mismatch = false;
            r->buf[bs / 2] ^= 0x40;
        }
        if (d->cfg.verify) {
            vdisk_check(d, r->buf, r->block * bs, bs, r->gen);
        }
        d->reads++;
    }
    if (r->block >= 0) {
        d->busy[r->block] = 0;
    }
    d->outstanding--;
    q->free_slots[q->q_free++] = (int)(r - q->reqs);
}

void vdisk_guest_interrupt(VDisk *d)
{
    d->irq_pending = false;
    d->irqs_handled++;
    for (int i = 0; i < d->cfg.queues; i++) {
        VQueue *q = &d->q[i];

        while (q->used_cons != q->used_prod) {
            guest_complete(q, &q->reqs[q->used[q->used_cons++ % (unsigned)d->cfg.depth]]);
        }
        if (d->running) {
            guest_refill(q);
        }
    }
}

bool vdisk_finished(const VDisk *d)
{
    return !d->running && d->outstanding == 0;
}
