/*
 * BlockBackend statistics and error policy (rerror/werror, iostatus).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-backend-int.h"

static const char *const acct_names[BLOCK_ACCT_MAX] = {
    "rd", "wr", "zero", "unmap", "flush",
};

/* floor(log2(us)) capped at the last bucket (0 for us <= 1); no loop per request. */
static unsigned latency_bucket(int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    unsigned b = us > 1 ? 63u - (unsigned)__builtin_clzll(us) : 0;

    return b < BLOCK_ACCT_LATENCY_BUCKETS - 1 ? b : BLOCK_ACCT_LATENCY_BUCKETS - 1;
}

void blk_acct_done(BlockBackend *blk, BlockAcctType type, int64_t offset, int64_t bytes,
                   int ret, int64_t latency_ns)
{
    BlockAcctStats *s = &blk->stats;

    if (ret < 0) {
        s->failed_ops[type]++;
    } else {
        s->nr_ops[type]++;
        s->nr_bytes[type] += bytes > 0 ? (uint64_t)bytes : 0;
        if ((type == BLOCK_ACCT_WRITE || type == BLOCK_ACCT_ZEROES) &&
            offset + bytes > s->wr_highest_offset) {
            s->wr_highest_offset = offset + bytes;
        }
    }
    s->total_time_ns[type] += latency_ns > 0 ? (uint64_t)latency_ns : 0;
    s->latency_hist[type][latency_bucket(latency_ns)]++;
}

void blk_get_stats(BlockBackend *blk, BlockAcctStats *stats)
{
    *stats = blk->stats;
}

/* Appends printf output to a growing string; aborts on allocation failure. */
static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    COBLK_PRINTF(4, 5);

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap = *cap * 2 + (size_t)n;
        *buf = realloc(*buf, *cap);
        if (!*buf) {
            abort();
        }
    }
}

char *blk_stats_to_json(BlockBackend *blk)
{
    const BlockAcctStats *s = &blk->stats;
    size_t len = 0;
    size_t cap = 1024;
    char *buf = malloc(cap);

    if (!buf) {
        return NULL;
    }
    append(&buf, &len, &cap, "{");
    for (int t = 0; t < BLOCK_ACCT_MAX; t++) {
        const char *n = acct_names[t];

        append(&buf, &len, &cap,
               "\"%s_bytes\": %llu, \"%s_operations\": %llu, \"failed_%s_operations\": %llu, "
               "\"%s_merged\": %llu, \"%s_total_time_ns\": %llu, \"%s_latency_histogram\": [",
               n, (unsigned long long)s->nr_bytes[t], n, (unsigned long long)s->nr_ops[t], n,
               (unsigned long long)s->failed_ops[t], n, (unsigned long long)s->merged_ops[t], n,
               (unsigned long long)s->total_time_ns[t], n);
        for (int b = 0; b < BLOCK_ACCT_LATENCY_BUCKETS; b++) {
            append(&buf, &len, &cap, "%s%llu", b ? ", " : "",
                   (unsigned long long)s->latency_hist[t][b]);
        }
        append(&buf, &len, &cap, "], ");
    }
    append(&buf, &len, &cap, "\"wr_highest_offset\": %lld}", (long long)s->wr_highest_offset);
    return buf;
}

/* ---------------------------------------------------------------------- */
/* Error policy */

int blk_parse_error_action(const char *name, bool is_read, BlockErrorAction *out, Error **errp)
{
    static const char *const names[] = { "report", "ignore", "stop", "enospc" };

    for (int i = 0; i < 4; i++) {
        if (!strcmp(name, names[i])) {
            if (is_read && i == BLOCK_ERROR_ACTION_ENOSPC) {
                break;
            }
            *out = (BlockErrorAction)i;
            return 0;
        }
    }
    error_setg(errp, "'%s' invalid %s error action", name, is_read ? "read" : "write");
    return -EINVAL;
}

void blk_set_on_error(BlockBackend *blk, BlockErrorAction rerror, BlockErrorAction werror)
{
    blk->on_read_error = rerror;
    blk->on_write_error = werror;
}

void blk_set_error_event(BlockBackend *blk, BlockErrorEventFn *fn, void *opaque)
{
    blk->error_event = fn;
    blk->error_event_opaque = opaque;
}

BlockIOStatus blk_iostatus(BlockBackend *blk)
{
    return blk->iostatus;
}

void blk_iostatus_reset(BlockBackend *blk)
{
    blk->iostatus = BLOCK_IOSTATUS_OK;
}

unsigned blk_stopped_requests(BlockBackend *blk)
{
    return blk->n_stopped;
}

void blk_resume(BlockBackend *blk)
{
    blk_iostatus_reset(blk);
    co_queue_restart_all(&blk->stopped_requests);
}

int coroutine_fn blk_error_action(BlockBackend *blk, bool is_read, int error)
{
    BlockErrorAction policy = is_read ? blk->on_read_error : blk->on_write_error;
    BlockErrorAction action = policy;

    if (policy == BLOCK_ERROR_ACTION_ENOSPC) {
        action = error == -ENOSPC ? BLOCK_ERROR_ACTION_STOP : BLOCK_ERROR_ACTION_REPORT;
    }
    if (action == BLOCK_ERROR_ACTION_STOP && blk->iostatus == BLOCK_IOSTATUS_OK) {
        blk->iostatus = error == -ENOSPC ? BLOCK_IOSTATUS_NOSPACE : BLOCK_IOSTATUS_FAILED;
    }
    if (blk->error_event) {
        blk->error_event(blk->error_event_opaque, blk, is_read, -error, action);
    }
    switch (action) {
    case BLOCK_ERROR_ACTION_IGNORE:
        return 0;
    case BLOCK_ERROR_ACTION_STOP:
        blk->n_stopped++;
        co_queue_wait(&blk->stopped_requests, NULL);
        blk->n_stopped--;
        return -EAGAIN;
    default:
        return error;
    }
}
