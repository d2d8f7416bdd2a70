/*
 * BlockBackend internals shared by block-backend.c (requests) and
 * blk-acct.c (statistics and error policy). Not installed.
 */
#ifndef COBLK_BLOCK_BACKEND_INT_H
#define COBLK_BLOCK_BACKEND_INT_H

#include "block/block-int.h"

struct BlockBackend {
    BdrvChild *root;
    AioContext *ctx;
    int quiesce_counter;      /* the root's subtree is drained */
    CoQueue queued_requests;  /* requests waiting for the drain to end */
    unsigned in_flight;       /* requests, including AIOCB completions not yet run */
    unsigned plug_depth;
    bool enable_write_cache;  /* false: writethrough, every write is FUA */
    bool closing;             /* blk_unref() in progress: drained requests fail */
    BlockAIOCB *plugged_head; /* AIOCBs held while plugged (merged at unplug) */
    BlockAIOCB *plugged_tail;

    BlockAcctStats stats;
    BlockErrorAction on_read_error;
    BlockErrorAction on_write_error;
    BlockErrorEventFn *error_event;
    void *error_event_opaque;
    BlockIOStatus iostatus;
    CoQueue stopped_requests; /* requests held by a STOP action */
    unsigned n_stopped;
    int64_t len_cache;        /* the root's length when last asked (0: ask again) */
    bool allow_write_beyond_eof; /* a protocol root: writes may extend the file */
};

/* Accounts one finished attempt of a request (ret < 0: failed). */
void blk_acct_done(BlockBackend *blk, BlockAcctType type, int64_t offset, int64_t bytes,
                   int ret, int64_t latency_ns);

/*
 * Applies the error policy to a failed request: returns the error to
 * report, 0 to ignore it, or -EAGAIN after a STOP once blk_resume() asks for
 * a retry (the calling coroutine waits in between).
 */
int coroutine_fn blk_error_action(BlockBackend *blk, bool is_read, int error);

#endif /* COBLK_BLOCK_BACKEND_INT_H */
