/*
 * Internals of the virtual disk model shared by vdisk.c and vdisk-run.c.
 */
#ifndef COBLK_EXAMPLES_VDISK_INT_H
#define COBLK_EXAMPLES_VDISK_INT_H

#include <sys/resource.h>

#include "vdisk-stats.h"
#include "vdisk.h"

typedef struct VQueue VQueue;

/** One request slot: guest memory (buf) and the request it carries. */
typedef struct VReq {
    VQueue *q;
    uint8_t *buf;
    IOVector qiov;
    int64_t block;
    uint64_t gen;     /**< write: generation written; read: generation expected */
    bool write;
    bool flush;       /**< a guest flush: no block, no data */
    int64_t t_submit;
    int ret;
} VReq;

/** A virtual disk queue: slots, the avail and used rings, the doorbell register. */
struct VQueue {
    VDisk *d;
    VReq *reqs;
    int *free_slots;
    int q_free;
    int *avail;
    unsigned avail_prod;
    unsigned doorbell;   /**< register: the guest writes avail_prod here */
    unsigned dev_seen;   /**< the device's consumer index of the avail ring */
    int *used;
    unsigned used_prod;
    unsigned used_cons;
    int64_t first_block;
    int64_t nblocks;
    uint64_t rng;
    unsigned prepared;   /**< requests the guest prepared (every flush_every-th is a flush) */
};

struct VDisk {
    VDiskConfig cfg;
    BlockBackend *blk;
    char *tmp_path;
    VQueue *q;
    uint64_t *committed;  /**< last completed write generation of each block */
    uint8_t *busy;        /**< a request is on this block */
    int64_t nblocks;
    uint64_t gen_counter;
    VDiskIrqFn *irq;
    void *irq_opaque;
    bool irq_pending;
    bool running;
    unsigned in_flight;   /**< submitted to the BlockBackend, not completed */
    unsigned outstanding; /**< taken from a free slot, not yet handled by the guest */
    int64_t t_start;
    int64_t t_stop;
    /* scenario */
    int step;
    bool drained;
    int64_t drain_until;
    int reopens_ok;
    int scenario_failures;
    /* counters */
    uint64_t submitted, completed, reads, writes, flushes, errors, mismatches;
    uint64_t irqs_raised, irqs_handled, batches, completed_while_drained;
    uint64_t readback_blocks;
    LatHist lat_read, lat_write;
    struct rusage ru_start;
};

void vdisk_fill(uint8_t *buf, int64_t offset, int len, uint64_t gen);
bool vdisk_check(VDisk *d, const uint8_t *buf, int64_t offset, int len, uint64_t gen);

#endif /* COBLK_EXAMPLES_VDISK_INT_H */
