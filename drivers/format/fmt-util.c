/*
 * Helpers shared by the format drivers (see fmt-util.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uuid/uuid.h>

#include "drivers/format/fmt-util.h"

BlockBackend *coroutine_fn fmt_co_create_file(const char *filename, Error **errp)
{
    BlockOpts *o = bopts_new();
    BlockBackend *blk;

    if (!o) {
        error_setg(errp, "out of memory");
        return NULL;
    }
    if (bopts_set(o, "size", "0") < 0 || bdrv_create("file", filename, o, errp) < 0) {
        return NULL; /* bdrv_create consumed o */
    }
    o = bopts_new();
    if (!o || bopts_set(o, "driver", "file") < 0) {
        bopts_free(o);
        error_setg(errp, "out of memory");
        return NULL;
    }
    blk = blk_new_open(filename, o, BDRV_O_RDWR | BDRV_O_PROTOCOL, errp);
    return blk;
}

int coroutine_fn fmt_blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                                   const void *buf)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, (size_t)bytes);
    return blk_co_pwritev(blk, offset, bytes, &qiov, 0);
}

void fmt_uuid_generate(uint8_t uuid[16])
{
    uuid_generate_random(uuid);
}

bool fmt_uuid_is_null(const uint8_t uuid[16])
{
    static const uint8_t zero[16];

    return memcmp(uuid, zero, 16) == 0;
}

int fmt_refuse_write_open(BlockDriverState *bs, int flags, Error **errp)
{
    if (!(flags & BDRV_O_RDWR)) {
        return 0;
    }
    error_setg(errp, "'%s': the %s format is read-only in coblk: open it read-only "
               "(or convert it to a writable format)", bs->filename, bs->drv->format_name);
    return -EROFS;
}

void coroutine_fn fmt_join_seal(FmtInflightList *l, FmtJoin *j, CoMutex *lock)
{
    while (j->writing) {
        fmt_inflight_wait(l, lock);
    }
    j->open = false;
}

int coroutine_fn fmt_join_end(FmtInflightList *l, FmtJoin *j, CoMutex *lock, int ret)
{
    j->ret = ret;
    j->done = true;
    co_queue_restart_all(&l->wait);
    while (j->refs) {
        fmt_inflight_wait(l, lock);
    }
    fmt_inflight_end(l, &j->in);
    return ret;
}

int coroutine_fn fmt_co_join(FmtInflightList *l, FmtJoin *j, CoMutex *lock, BdrvChild *file,
                             int64_t offset, int64_t bytes, IOVector *qiov, size_t qoff,
                             FmtJoinLanded *landed, void *opaque)
{
    int ret;

    j->refs++;
    j->writing++;
    co_mutex_unlock(lock);
    ret = bdrv_co_pwritev_part(file, offset, bytes, qiov, qoff, 0);
    co_mutex_lock(lock);
    if (ret == 0 && landed) {
        landed(j, opaque);
    }
    j->writing--;
    co_queue_restart_all(&l->wait);
    while (!j->done) {
        fmt_inflight_wait(l, lock);
    }
    ret = ret ? ret : j->ret;
    j->refs--;
    co_queue_restart_all(&l->wait);
    co_mutex_unlock(lock);
    return ret;
}
