/*
 * A model of an emulator's virtual disk, shared by the embedding examples
 * (emu-glib.c: a GMainLoop; emu-poll.c: a plain poll() loop).
 *
 * The model has a "guest" side and a "device" side, as a paravirtual disk:
 *  - each of N queues has `depth` request slots; the guest driver fills free
 *    slots with reads and writes of random blocks of its own region, puts them
 *    on the queue's avail ring and writes the queue's doorbell register;
 *  - the device polls the doorbell registers (vdisk_device_pending), takes
 *    avail entries and issues them with blk_aio_* between blk_io_plug/unplug;
 *  - completions (blk_aio_* callbacks) go to the used ring and raise a guest
 *    interrupt through a callback the main loop provides (an eventfd);
 *  - the guest interrupt handler (vdisk_guest_interrupt) verifies every read,
 *    records latencies and refills the slots.
 *
 * Every write carries a pattern derived from its offset and a generation
 * number; the model remembers the last completed generation of each block and
 * never has two requests on one block at once, so every read is checked
 * exactly. A scenario timer (vdisk_tick) reopens the image with cache.direct
 * toggled twice and drains it once in the middle of the load.
 */
#ifndef COBLK_EXAMPLES_VDISK_H
#define COBLK_EXAMPLES_VDISK_H

#include <stdbool.h>
#include <stdint.h>

#include <coblk/block.h>

typedef struct VDisk VDisk;

/** Command-line settings common to both examples. */
typedef struct VDiskConfig {
    double seconds;         /**< length of the load (--seconds) */
    int queues;             /**< virtual disk queues (--queues) */
    int depth;              /**< request slots per queue (--depth) */
    int block_size;         /**< bytes per request (--bs) */
    int64_t size;           /**< image size when the example creates it (--size) */
    int read_pct;           /**< percentage of reads (--read-pct) */
    int flush_every;        /**< every Nth guest request is a flush (--flush-every, 0: none) */
    const char *image;      /**< existing image (--image); default: a temporary raw file */
    const char *dir;        /**< where the temporary image goes (--dir, $COBLK_TEST_DIR) */
    const char *image_opts; /**< extra dotted options (--opts), e.g. file.aio=native */
    bool direct;            /**< open with cache.direct=on (--direct) */
    bool reopen;            /**< toggle cache.direct twice mid-load (--no-reopen clears) */
    bool drain;             /**< drain once mid-load (--no-drain clears) */
    bool verify;            /**< check read data (--no-verify clears, for null drivers) */
    bool json;              /**< print one JSON line as well (--json) */
    bool inject_mismatch;   /**< flip one byte of one read: the check must fail (exit 1) */
} VDiskConfig;

/** Raises the guest interrupt (called from I/O completions; coalesced). */
typedef void VDiskIrqFn(void *opaque);

/** Parses argv into cfg; prints usage and returns -1 on bad arguments. */
int vdisk_parse_args(int argc, char **argv, VDiskConfig *cfg);

/**
 * Opens (creating when needed) the image in the calling thread's current
 * AioContext and sets up the queues. Returns NULL with a message on stderr.
 */
VDisk *vdisk_open(const VDiskConfig *cfg, VDiskIrqFn *irq, void *irq_opaque);

/** Starts the load: the guest fills every slot and rings the doorbells. */
void vdisk_start(VDisk *d);

/** Device side: true when a doorbell was written since the last processing. */
bool vdisk_device_pending(const VDisk *d);
/** Device side: submits every avail request as one plugged batch. */
void vdisk_device_process(VDisk *d);

/** Guest side: handles the used rings (verify, stats) and refills slots. */
void vdisk_guest_interrupt(VDisk *d);

/**
 * The scenario clock, called about every 10 ms: runs the reopens and the
 * drain at their times and stops the guest when the time is up.
 */
void vdisk_tick(VDisk *d);

/** True when the guest stopped and no request is in flight or unprocessed. */
bool vdisk_finished(const VDisk *d);

/**
 * After the loop: reads back the whole image and checks it against the
 * model, prints the report, closes everything. Returns the exit code: 0 only
 * when every request completed without error or mismatch and the scenario
 * steps all succeeded.
 */
int vdisk_finish(VDisk *d, const char *loop_name);

#endif /* COBLK_EXAMPLES_VDISK_H */
