/*
 * Internal interfaces between the files of block/ (graph, request layer,
 * BlockBackend) and the driver registry. Not installed.
 */
#ifndef COBLK_BLOCK_INT_H
#define COBLK_BLOCK_INT_H

#include <coblk/block-driver.h>
#include <coblk/block.h>

#include "aio/aio-int.h"

/* ---------------------------------------------------------------------- */
/* Driver registry (block/registry.c): the in-tree drivers. */

/* NULL-terminated table of in-tree drivers. */
extern const BlockDriver *const bdrv_builtin_drivers[];

/* Format magics a guessed raw node refuses to write into sector 0. */
bool bdrv_buf_has_known_magic(const uint8_t *buf, size_t len);

/*
 * Registers drvs[0..n) at run time, all or none (block/graph.c): each table
 * is checked (size, name, mandatory callbacks) and its names must be free.
 * who names the origin in messages. Thread-safe.
 */
int bdrv_register_drivers(const BlockDriver *const *drvs, size_t n, const char *who,
                          Error **errp);

/*
 * Loads the plugin directory once per process (block/plugin.c); called by
 * every driver lookup. Does nothing while a plugin is being loaded.
 */
void bdrv_plugins_autoload(void);

/* ---------------------------------------------------------------------- */
/* Request layer (block/io.c) */

/* Computes bs->bl: defaults, the children's limits, then drv->refresh_limits. */
int bdrv_refresh_limits(BlockDriverState *bs, Error **errp);

/* In-flight accounting; dec wakes drain waiters. */
void bdrv_inc_in_flight(BlockDriverState *bs);
void bdrv_dec_in_flight(BlockDriverState *bs);

/*
 * bdrv_co_preadv_part() without flags for a caller that has validated the
 * request itself: child has a node with a driver, bytes > 0, offset and
 * offset + bytes within [0, BDRV_MAX_LENGTH], and qiov holds bytes at
 * qiov_offset. A format driver's read of its file child for a mapping it has
 * just checked (qcow2's cached plain cluster) skips the entry checks this
 * way; everything else (drain counting, serialisation, padding, copy-on-read
 * of the child) is the same as through bdrv_co_preadv_part().
 */
int coroutine_fn bdrv_co_preadv_checked(BdrvChild *child, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset);

/* Initialises / tears down the request-layer fields of a new node. */
void bdrv_io_init(BlockDriverState *bs);

/* Polls bs's context until cond(opaque) is false. Plain code only. */
void bdrv_poll_while(BlockDriverState *bs, bool (*cond)(void *opaque), void *opaque);

/* ---------------------------------------------------------------------- */
/* BlockBackend hooks (block/block-backend.c), called on root children. */

/* The subtree under a BlockBackend became drained / undrained. */
void blk_root_drained_begin(BdrvChild *child);
void blk_root_drained_end(BdrvChild *child);
/* The root node moved to a new AioContext. */
void blk_root_set_aio_context(BdrvChild *child, AioContext *ctx);

/* ---------------------------------------------------------------------- */
/* Graph helpers (block/block.c) */

BlockDriverState *bdrv_new_node(const BlockDriver *drv, AioContext *ctx);
void bdrv_free_node(BlockDriverState *bs);
int bdrv_set_node_name(BlockDriverState *bs, const char *name, Error **errp);
/* The protocol driver named by a "proto:" prefix of filename, or NULL. */
const BlockDriver *bdrv_find_protocol_prefix(const char *filename);
/* "host_device" if path is a block device, else "file". */
const char *bdrv_default_protocol(const char *path);
/* The format whose probe scores best on buf (raw scores 1), or NULL. */
const BlockDriver *bdrv_probe_format(const uint8_t *buf, int len, const char *filename);

/* Runs fn(opaque) in a coroutine in ctx, polling ctx until it returns
 * (or calls it directly when already in a coroutine). */
typedef int64_t coroutine_fn BdrvCoRunFn(void *opaque);
int64_t bdrv_run_co(AioContext *ctx, BdrvCoRunFn *fn, void *opaque);
/* The calling thread's context; creates a process-wide main context if the
 * thread has none, and makes it current. */
AioContext *bdrv_default_aio_context(void);

/* True if node is bs or one of bs's ancestors (attaching it under bs would
 * make a cycle). */
bool bdrv_is_ancestor_or_self(const BlockDriverState *node, const BlockDriverState *bs);

/*
 * Takes the options that set a node's modes (read-only, cache.direct,
 * cache.no-flush, discard, detect-zeroes; at open also force-share and
 * copy-on-read) into flags and dz, checking the combinations. Used by open
 * and reopen. Returns 0 or -EINVAL with errp set.
 */
int bdrv_take_mode_opts(BlockOpts *o, int *flags, BlockdevDetectZeroes *dz, bool at_open,
                        Error **errp);

/* Attaches bs as the root child of a BlockBackend. */
BdrvChild *bdrv_root_attach_child(BlockDriverState *bs, const char *name, void *blk);
void bdrv_root_unref_child(BdrvChild *child);
/* Detaches a root child without dropping a reference (for weak parents). */
void bdrv_root_detach_child(BdrvChild *child);
/* Frees bs->classic_blk, after its requests finished; called when bs closes. */
void blk_free_classic(BlockDriverState *bs);

#endif /* COBLK_BLOCK_INT_H */
