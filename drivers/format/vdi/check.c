/*
 * vdi: image check and repair (out-of-range and shared map entries, leaked
 * slots).
 */
#include <errno.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

/* Checks every map entry; fixes out-of-range and shared entries by freeing them. */
static void vdi_check_entries(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix,
                              int64_t file_len, uint32_t *referenced, bool *dirty)
{
    BDRVVdiState *s = bs->opaque;

    for (uint32_t i = 0; i < s->blocks; i++) {
        s->owner[i] = VDI_FREE;
    }
    *referenced = 0;
    for (uint32_t b = 0; b < s->blocks; b++) {
        uint32_t e = vdi_entry(s, b);
        const char *what = NULL;

        if (e == VDI_FREE || e == VDI_ZERO) {
            continue;
        }
        if (!vdi_is_slot(s, e)) {
            what = "is past the end of the allocated blocks";
            bdrv_check_report(res, "vdi: block %u: data block %u %s (%u allocated)", b, e,
                              what, s->allocated);
        } else if (s->owner[e] != VDI_FREE) {
            what = "is shared";
            bdrv_check_report(res, "vdi: blocks %u and %u both point to data block %u",
                              s->owner[e], b, e);
        } else if (vdi_slot_offset(s, e) + (int64_t)s->block_size > file_len) {
            what = "lies past the end of the file";
            bdrv_check_report(res, "vdi: block %u: data block %u %s (%lld bytes)", b, e, what,
                              (long long)file_len);
        }
        if (!what) {
            s->owner[e] = b;
            (*referenced)++;
            continue;
        }
        res->corruptions++;
        if (fix & BDRV_FIX_ERRORS) {
            vdi_set_entry(s, b, VDI_FREE);
            res->corruptions_fixed++;
            *dirty = true;
        }
    }
}

int coroutine_fn vdi_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                              BdrvCheckMode fix)
{
    BDRVVdiState *s = bs->opaque;
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    uint32_t referenced;
    bool dirty = false;
    int ret = 0;

    if (file_len < 0) {
        res->check_errors++;
        return (int)file_len;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_commit(bs, false); /* repairs rewrite the map whole */
    ret = ret ? ret : vdi_trim(bs);
    if (ret < 0) {
        res->check_errors++;
        co_rwlock_unlock(&s->lock);
        return ret;
    }
    vdi_check_entries(bs, res, fix, file_len, &referenced, &dirty);
    if (dirty) {
        ret = vdi_write_map(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0 && referenced != s->allocated) {
        uint32_t leaked = s->allocated - referenced;

        bdrv_check_report(res, "vdi: %u data blocks are allocated but not used (header says "
                          "%u allocated, the map uses %u)", leaked, s->allocated, referenced);
        res->leaks += (int)leaked;
        /* Moving slots is only safe once no entry is shared or out of range. */
        if ((fix & BDRV_FIX_LEAKS) && s->type == VDI_TYPE_DYNAMIC &&
            res->corruptions == res->corruptions_fixed) {
            ret = vdi_fill_holes(bs, NULL, NULL);
            if (ret == 0) {
                res->leaks_fixed += (int)leaked;
            }
        }
    }
    if (ret < 0) {
        res->check_errors++;
    }
    vdi_build_owner(s);
    res->image_end_offset = vdi_slot_offset(s, s->allocated);
    res->allocated_clusters = referenced < s->allocated ? referenced : s->allocated;
    res->total_clusters = s->blocks;
    co_rwlock_unlock(&s->lock);
    return ret;
}
