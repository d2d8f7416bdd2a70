/*
 * blklogwrites: passes every request to its "file" child and logs each
 * completed write, write-zeroes, discard, truncate and flush to its "log" child in
 * the dm-log-writes format (logwrites-format.h), for power-cut testing:
 * the replay tool rebuilds the image as of any flush, plus any subset of
 * the writes after it.
 *
 *   driver=blklogwrites,file.driver=file,file.filename=img,
 *   log.driver=file,log.filename=img.log[,log-sector-size=512]
 *   [,log-append=on][,log-super-update-interval=4096]
 *
 * Requests are aligned to log-sector-size (the request layer pads smaller
 * ones). Log space is reserved when a request completes, in completion
 * order, so the log never waits on a lock; the super block's entry count is
 * rewritten at every flush, every log-super-update-interval entries and at
 * close. Each logged write costs one extra write of the same size to the
 * log; this is a test tool, not a production path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/protocol/blklogwrites.h"
#include "drivers/protocol/logwrites-format.h"

typedef struct BDRVLogWritesState {
    BdrvChild *log;
    uint32_t sectorsize;
    uint64_t nr_entries;
    uint64_t next_offset;     /* where the next entry goes in the log */
    uint64_t update_interval;
    uint64_t since_update;
} BDRVLogWritesState;

static const char *const logwrites_option_names[] = {
    "log-sector-size", "log-append", "log-super-update-interval", NULL,
};

static int coroutine_fn child_pwrite(BdrvChild *c, int64_t off, int64_t len, void *buf)
{
    IOVector v;

    iovector_init_buf(&v, buf, (size_t)len);
    return bdrv_co_pwritev(c, off, len, &v, 0);
}

static int coroutine_fn child_pread(BdrvChild *c, int64_t off, int64_t len, void *buf)
{
    IOVector v;

    iovector_init_buf(&v, buf, (size_t)len);
    return bdrv_co_preadv(c, off, len, &v, 0);
}

static int coroutine_fn log_write_super(BlockDriverState *bs)
{
    BDRVLogWritesState *s = bs->opaque;
    uint8_t *sec = calloc(1, s->sectorsize);
    int ret;

    if (!sec) {
        return -ENOMEM;
    }
    st_le64(sec, LOGW_MAGIC);
    st_le64(sec + 8, LOGW_VERSION);
    st_le64(sec + 16, s->nr_entries);
    st_le32(sec + 24, s->sectorsize);
    ret = child_pwrite(s->log, 0, s->sectorsize, sec);
    free(sec);
    s->since_update = 0;
    return ret;
}

/*
 * Appends one entry (and data: a qiov range, or a mark name). The space is
 * reserved before the first yield, so concurrent appends never overlap.
 */
static int coroutine_fn log_append(BlockDriverState *bs, uint64_t flags, int64_t offset,
                                   int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                   const char *mark)
{
    BDRVLogWritesState *s = bs->opaque;
    uint64_t data = (flags & LOGW_MARK) ? round_up_u64(strlen(mark), s->sectorsize)
                    : (flags & (LOGW_FLUSH | LOGW_DISCARD)) ? 0 : (uint64_t)bytes;
    uint64_t at = s->next_offset;
    uint8_t *sec = calloc(1, s->sectorsize + ((flags & LOGW_MARK) ? data : 0));
    IOVector v;
    int ret;

    if (!sec) {
        return -ENOMEM;
    }
    s->next_offset += s->sectorsize + data;
    s->nr_entries++;
    st_le64(sec, (uint64_t)offset / s->sectorsize);
    st_le64(sec + 8, (uint64_t)bytes / s->sectorsize);
    st_le64(sec + 16, flags);
    st_le64(sec + 24, (flags & LOGW_MARK) ? strlen(mark) : 0);
    iovector_init(&v, 2);
    iovector_add(&v, sec, s->sectorsize);
    if (flags & LOGW_MARK) {
        memcpy(sec + s->sectorsize, mark, strlen(mark));
        iovector_add(&v, sec + s->sectorsize, (size_t)data);
    } else if (data) {
        iovector_concat(&v, qiov, qiov_offset, (size_t)bytes);
    }
    ret = bdrv_co_pwritev(s->log, (int64_t)at, s->sectorsize + (int64_t)data, &v, 0);
    iovector_destroy(&v);
    free(sec);
    if (ret == 0 && ++s->since_update >= s->update_interval) {
        ret = log_write_super(bs);
    }
    return ret;
}

/* Reads the super of an existing log and walks its entries to the end. */
static int coroutine_fn log_find_end(BlockDriverState *bs, Error **errp)
{
    BDRVLogWritesState *s = bs->opaque;
    uint8_t hdr[LOGW_ENTRY_SIZE];
    uint64_t n, off, len = (uint64_t)bdrv_co_getlength(s->log->bs);
    int ret = child_pread(s->log, 0, LOGW_SUPER_SIZE, hdr);

    if (ret < 0) {
        error_setg_errno(errp, ret, "blklogwrites: cannot read the log super block");
        return ret;
    }
    if (ld_le64(hdr) != LOGW_MAGIC || ld_le64(hdr + 8) != LOGW_VERSION ||
        ld_le32(hdr + 24) != s->sectorsize) {
        error_setg(errp, "blklogwrites: log-append=on but the log is not a version 1 log "
                         "with %u-byte sectors", s->sectorsize);
        return -EINVAL;
    }
    n = ld_le64(hdr + 16);
    if (n > LOGW_MAX_ENTRIES) {
        error_setg(errp, "blklogwrites: log has %llu entries (limit %llu)",
                   (unsigned long long)n, (unsigned long long)LOGW_MAX_ENTRIES);
        return -EINVAL;
    }
    off = s->sectorsize;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t flags, data;

        if (!range_within(off, s->sectorsize, len) ||
            (ret = child_pread(s->log, (int64_t)off, LOGW_ENTRY_SIZE, hdr)) < 0) {
            error_setg(errp, "blklogwrites: entry %llu lies past the end of the log",
                       (unsigned long long)i);
            return ret < 0 ? ret : -EINVAL;
        }
        flags = ld_le64(hdr + 16);
        data = (flags & LOGW_MARK) ? round_up_u64(ld_le64(hdr + 24), s->sectorsize)
               : (flags & (LOGW_FLUSH | LOGW_DISCARD)) ? 0 : ld_le64(hdr + 8) * s->sectorsize;
        if (ld_le64(hdr + 8) > LOGW_MAX_WRITE_SECTORS || ld_le64(hdr + 24) > LOGW_MAX_MARK) {
            error_setg(errp, "blklogwrites: entry %llu is too large", (unsigned long long)i);
            return -EINVAL;
        }
        off += s->sectorsize + data;
    }
    s->nr_entries = n;
    s->next_offset = off;
    return 0;
}

typedef struct OpenCo {
    BlockDriverState *bs;
    bool append;
    Error **errp;
} OpenCo;

static int64_t coroutine_fn log_open_co(void *opaque)
{
    OpenCo *o = opaque;

    return o->append ? log_find_end(o->bs, o->errp) : log_write_super(o->bs);
}

static int logwrites_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVLogWritesState *s = bs->opaque;
    uint64_t sectorsize, interval;
    OpenCo o = { bs, false, errp };
    int ret;

    if (bopts_take_size(options, "log-sector-size", 512, &sectorsize, errp) < 0 ||
        bopts_take_bool(options, "log-append", false, &o.append, errp) < 0 ||
        bopts_take_uint64(options, "log-super-update-interval", 4096, &interval, errp) < 0) {
        return -EINVAL;
    }
    if (!is_power_of_2_u64(sectorsize) || sectorsize < LOGW_MIN_SECTOR ||
        sectorsize > LOGW_MAX_SECTOR) {
        error_setg(errp, "blklogwrites: log-sector-size %llu must be a power of two from "
                         "512 to 65536", (unsigned long long)sectorsize);
        return -EINVAL;
    }
    s->sectorsize = (uint32_t)sectorsize;
    s->update_interval = interval ? interval : 1;
    s->next_offset = sectorsize;
    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    s->log = bdrv_open_child(NULL, options, "log", bs, BDRV_CHILD_METADATA, false, errp);
    if (!s->log) {
        return -EINVAL;
    }
    if (!(flags & BDRV_O_RDWR)) {
        error_setg(errp, "blklogwrites: the log needs a read-write open");
        return -EINVAL;
    }
    bs->supported_write_flags = BDRV_REQ_FUA;
    snprintf(bs->filename, sizeof(bs->filename), "%s", bs->file->bs->filename);
    ret = (int)bdrv_run_co(bs->aio_context, log_open_co, &o);
    if (ret < 0 && !o.append) {
        error_setg_errno(errp, ret, "blklogwrites: cannot write the log super block");
    }
    return ret;
}

static int64_t coroutine_fn close_co(void *opaque)
{
    return log_write_super(opaque);
}

static void logwrites_close(BlockDriverState *bs)
{
    BDRVLogWritesState *s = bs->opaque;

    if (s->log && bdrv_run_co(bs->aio_context, close_co, bs) < 0) {
        coblk_warn("blklogwrites: could not update the log super block of '%s'",
                   s->log->bs->filename);
    }
}

static void logwrites_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVLogWritesState *s = bs->opaque;

    if (bs->bl.request_alignment < s->sectorsize) {
        bs->bl.request_alignment = s->sectorsize;
    }
    if (bs->bl.max_transfer > (int64_t)(LOGW_MAX_WRITE_SECTORS * s->sectorsize) ||
        !bs->bl.max_transfer) {
        bs->bl.max_transfer = (int64_t)(LOGW_MAX_WRITE_SECTORS * s->sectorsize) / 2;
    }
}

static int coroutine_fn logwrites_co_preadv(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                            BdrvRequestFlags flags)
{
    return bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn logwrites_co_pwritev(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                             BdrvRequestFlags flags)
{
    int ret = bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, flags);

    if (ret < 0) {
        return ret;
    }
    return log_append(bs, (flags & BDRV_REQ_FUA) ? LOGW_FUA : 0, offset, bytes, qiov,
                      qiov_offset, NULL);
}

static int coroutine_fn logwrites_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                   int64_t bytes, BdrvRequestFlags flags)
{
    int ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags & ~BDRV_REQ_FUA);

    if (ret == 0 && (flags & BDRV_REQ_FUA)) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret < 0 ? ret
                   : log_append(bs, LOGW_DISCARD | ((flags & BDRV_REQ_FUA) ? LOGW_FUA : 0),
                                offset, bytes, NULL, 0, NULL);
}

static int coroutine_fn logwrites_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes)
{
    int ret = bdrv_co_pdiscard(bs->file, offset, bytes);

    return ret < 0 ? ret : log_append(bs, LOGW_DISCARD, offset, bytes, NULL, 0, NULL);
}

/* Runs before the request layer flushes the children: the FLUSH entry
 * marks the writes that completed before this flush was issued. */
static int coroutine_fn logwrites_co_flush(BlockDriverState *bs)
{
    int ret = log_append(bs, LOGW_FLUSH, 0, 0, NULL, 0, NULL);

    return ret < 0 ? ret : log_write_super(bs);
}

static int64_t coroutine_fn logwrites_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

/*
 * Every truncate that succeeded, growing or shrinking, is logged as a
 * "coblk:truncate=<length>" mark (logwrites-format.h): a replay sets the
 * file's length there, and a power cut before the next flush may keep the
 * old length or the new one.
 */
static int coroutine_fn logwrites_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                              PreallocMode prealloc, BdrvRequestFlags flags,
                                              Error **errp)
{
    char name[64];
    int ret = bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);

    if (ret < 0) {
        return ret;
    }
    snprintf(name, sizeof(name), LOGW_TRUNCATE_MARK "%lld", (long long)offset);
    ret = log_append(bs, LOGW_MARK, 0, 0, NULL, 0, name);
    if (ret < 0) {
        error_setg_errno(errp, ret, "blklogwrites: cannot log the truncate of '%s'",
                         bs->filename);
    }
    return ret;
}

typedef struct MarkCo {
    BlockDriverState *bs;
    const char *name;
} MarkCo;

static int64_t coroutine_fn mark_co(void *opaque)
{
    MarkCo *m = opaque;

    return log_append(m->bs, LOGW_MARK, 0, 0, NULL, 0, m->name);
}

int blklogwrites_mark(BlockDriverState *bs, const char *name)
{
    MarkCo m = { bs, name };

    /* The reserved prefix is for coblk's own entries (logwrites-format.h). */
    if (!name || !*name || strlen(name) > LOGW_MAX_MARK ||
        !strncmp(name, LOGW_RESERVED_PREFIX, strlen(LOGW_RESERVED_PREFIX))) {
        return -EINVAL;
    }
    for (; m.bs && m.bs->drv != &bdrv_blklogwrites;) {
        m.bs = m.bs->file ? m.bs->file->bs : NULL;
    }
    if (!m.bs) {
        return -ENOTSUP;
    }
    return (int)bdrv_run_co(m.bs->aio_context, mark_co, &m);
}

const BlockDriver bdrv_blklogwrites = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "blklogwrites",
    .instance_size = sizeof(BDRVLogWritesState),
    .is_filter = true,
    .option_names = logwrites_option_names,
    .bdrv_open = logwrites_open,
    .bdrv_close = logwrites_close,
    .refresh_limits = logwrites_refresh_limits,
    .co_preadv = logwrites_co_preadv,
    .co_pwritev = logwrites_co_pwritev,
    .co_pwrite_zeroes = logwrites_co_pwrite_zeroes,
    .co_pdiscard = logwrites_co_pdiscard,
    .co_flush_to_os = logwrites_co_flush,
    .co_block_status = bdrv_co_block_status_from_file,
    .co_getlength = logwrites_co_getlength,
    .co_truncate = logwrites_co_truncate,
};
