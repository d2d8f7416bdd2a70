/*
 * Fault-injection hooks: drivers fire named events on the child they are
 * about to do I/O on; a blkdebug node somewhere below listens. Without one
 * an event costs a walk down the primary children.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"

static const char *const event_names[BLKDBG__MAX] = {
    [BLKDBG_L1_UPDATE] = "l1_update",
    [BLKDBG_L1_GROW_ALLOC_TABLE] = "l1_grow_alloc_table",
    [BLKDBG_L1_GROW_WRITE_TABLE] = "l1_grow_write_table",
    [BLKDBG_L1_GROW_ACTIVATE_TABLE] = "l1_grow_activate_table",
    [BLKDBG_L2_LOAD] = "l2_load",
    [BLKDBG_L2_UPDATE] = "l2_update",
    [BLKDBG_L2_UPDATE_COMPRESSED] = "l2_update_compressed",
    [BLKDBG_L2_ALLOC_COW_READ] = "l2_alloc_cow_read",
    [BLKDBG_L2_ALLOC_WRITE] = "l2_alloc_write",
    [BLKDBG_READ_AIO] = "read_aio",
    [BLKDBG_READ_BACKING_AIO] = "read_backing_aio",
    [BLKDBG_READ_COMPRESSED] = "read_compressed",
    [BLKDBG_WRITE_AIO] = "write_aio",
    [BLKDBG_WRITE_COMPRESSED] = "write_compressed",
    [BLKDBG_VMSTATE_LOAD] = "vmstate_load",
    [BLKDBG_VMSTATE_SAVE] = "vmstate_save",
    [BLKDBG_COW_READ] = "cow_read",
    [BLKDBG_COW_WRITE] = "cow_write",
    [BLKDBG_REFTABLE_LOAD] = "reftable_load",
    [BLKDBG_REFTABLE_GROW] = "reftable_grow",
    [BLKDBG_REFTABLE_UPDATE] = "reftable_update",
    [BLKDBG_REFBLOCK_LOAD] = "refblock_load",
    [BLKDBG_REFBLOCK_UPDATE] = "refblock_update",
    [BLKDBG_REFBLOCK_UPDATE_PART] = "refblock_update_part",
    [BLKDBG_REFBLOCK_ALLOC] = "refblock_alloc",
    [BLKDBG_REFBLOCK_ALLOC_HOOKUP] = "refblock_alloc_hookup",
    [BLKDBG_REFBLOCK_ALLOC_WRITE] = "refblock_alloc_write",
    [BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS] = "refblock_alloc_write_blocks",
    [BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE] = "refblock_alloc_write_table",
    [BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE] = "refblock_alloc_switch_table",
    [BLKDBG_CLUSTER_ALLOC] = "cluster_alloc",
    [BLKDBG_CLUSTER_ALLOC_BYTES] = "cluster_alloc_bytes",
    [BLKDBG_CLUSTER_FREE] = "cluster_free",
    [BLKDBG_FLUSH_TO_OS] = "flush_to_os",
    [BLKDBG_FLUSH_TO_DISK] = "flush_to_disk",
    [BLKDBG_PWRITEV_RMW_HEAD] = "pwritev_rmw_head",
    [BLKDBG_PWRITEV_RMW_AFTER_HEAD] = "pwritev_rmw_after_head",
    [BLKDBG_PWRITEV_RMW_TAIL] = "pwritev_rmw_tail",
    [BLKDBG_PWRITEV_RMW_AFTER_TAIL] = "pwritev_rmw_after_tail",
    [BLKDBG_PWRITEV] = "pwritev",
    [BLKDBG_PWRITEV_ZERO] = "pwritev_zero",
    [BLKDBG_PWRITEV_DONE] = "pwritev_done",
    [BLKDBG_EMPTY_IMAGE_PREPARE] = "empty_image_prepare",
    [BLKDBG_L1_SHRINK_WRITE_TABLE] = "l1_shrink_write_table",
    [BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS] = "l1_shrink_free_l2_clusters",
    [BLKDBG_COR_WRITE] = "cor_write",
    [BLKDBG_CLUSTER_ALLOC_SPACE] = "cluster_alloc_space",
    [BLKDBG_NONE] = "none",
    [BLKDBG_HEADER_UPDATE] = "header_update",
    [BLKDBG_MAP_UPDATE] = "map_update",
};

const char *bdrv_debug_event_name(BlkdebugEvent event)
{
    return (unsigned)event < BLKDBG__MAX ? event_names[event] : NULL;
}

int bdrv_debug_event_from_name(const char *name)
{
    for (int i = 0; i < BLKDBG__MAX; i++) {
        if (event_names[i] && strcmp(event_names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

#define HAS_FIELD(drv, field) \
    ((drv)->struct_size >= offsetof(BlockDriver, field) + sizeof((drv)->field) && (drv)->field)

/* The first node at or below bs (primary children) whose driver has field. */
#define FIND_LISTENER(bs, field)                                  \
    ({                                                            \
        BlockDriverState *b_ = (bs);                              \
        while (b_ && b_->drv && !HAS_FIELD(b_->drv, field)) {     \
            b_ = b_->file ? b_->file->bs : NULL;                  \
        }                                                         \
        (b_ && b_->drv) ? b_ : NULL;                              \
    })

void coroutine_fn bdrv_debug_event(BlockDriverState *bs, BlkdebugEvent event)
{
    BlockDriverState *l = FIND_LISTENER(bs, debug_event);

    if (l) {
        l->drv->debug_event(l, event);
    }
}

int bdrv_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag)
{
    BlockDriverState *l = FIND_LISTENER(bs, debug_breakpoint);

    return l ? l->drv->debug_breakpoint(l, event, tag) : -ENOTSUP;
}

int bdrv_debug_remove_breakpoint(BlockDriverState *bs, const char *tag)
{
    BlockDriverState *l = FIND_LISTENER(bs, debug_remove_breakpoint);

    return l ? l->drv->debug_remove_breakpoint(l, tag) : -ENOTSUP;
}

int bdrv_debug_resume(BlockDriverState *bs, const char *tag)
{
    BlockDriverState *l = FIND_LISTENER(bs, debug_resume);

    return l ? l->drv->debug_resume(l, tag) : -ENOTSUP;
}

bool bdrv_debug_is_suspended(BlockDriverState *bs, const char *tag)
{
    BlockDriverState *l = FIND_LISTENER(bs, debug_is_suspended);

    return l && l->drv->debug_is_suspended(l, tag);
}
