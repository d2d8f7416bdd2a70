/*
 * Test plugins for the loader's checks (tests/plugin/test-plugin.c). One
 * source, one shared object per variant, chosen with -DVARIANT_<name>:
 * BAD_VERSION (plugin API 2.0), SMALL_TABLE (CoblkPlugin too small),
 * SMALL_DRIVER (BlockDriver too small), NO_ENTRY (no coblk_plugin_init),
 * DUP_NAME (a driver named "raw"), NO_PREADV (a mandatory callback
 * missing), DECLINE (init returns NULL), OLD_DRIVER (a table from an older
 * coblk: struct_size ends before create_opts; accepted, the tail ignored).
 * The drivers pass reads and writes through to their file child.
 */
#include <errno.h>
#include <stddef.h>

#include <coblk/plugin.h>

static int pt_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED,
                               false, errp);
    return bs->file ? 0 : -EINVAL;
}

#ifndef VARIANT_NO_PREADV
static int coroutine_fn pt_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    return bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset, 0);
}
#endif

static int coroutine_fn pt_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    return bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, 0);
}

static int64_t coroutine_fn pt_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static int pt_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    return 0;   /* beyond an old table's struct_size: must never be called */
}

static const char *const pt_extensions[] = { "old", NULL };

#if defined(VARIANT_DUP_NAME)
#define PT_NAME "raw"
#elif defined(VARIANT_OLD_DRIVER)
#define PT_NAME "oldfmt"
#else
#define PT_NAME "badfmt"
#endif

#if defined(VARIANT_SMALL_DRIVER)
#define PT_SIZE 16
#elif defined(VARIANT_OLD_DRIVER)
#define PT_SIZE offsetof(BlockDriver, create_opts)
#else
#define PT_SIZE sizeof(BlockDriver)
#endif

static const BlockDriver pt_driver = {
    .struct_size = PT_SIZE,
    .format_name = PT_NAME,
    .is_format = true,
    .bdrv_open = pt_open,
#ifndef VARIANT_NO_PREADV
    .co_preadv = pt_preadv,
#endif
    .co_pwritev = pt_pwritev,
    .co_getlength = pt_getlength,
    .get_uuid = pt_get_uuid,
    .file_extensions = pt_extensions,
};

static const BlockDriver *const pt_drivers[] = { &pt_driver, NULL };

static const CoblkPlugin pt_plugin = {
#ifdef VARIANT_SMALL_TABLE
    .struct_size = 8,
#else
    .struct_size = sizeof(CoblkPlugin),
#endif
#ifdef VARIANT_BAD_VERSION
    .api_version = 2u << 16,
#else
    .api_version = COBLK_PLUGIN_API_VERSION,
#endif
    .name = "bad",
    .drivers = pt_drivers,
};

#ifdef VARIANT_NO_ENTRY
COBLK_PLUGIN_EXPORT const CoblkPlugin *coblk_plugin_init_misspelt(uint32_t v);
COBLK_PLUGIN_EXPORT const CoblkPlugin *coblk_plugin_init_misspelt(uint32_t v)
#else
COBLK_PLUGIN_EXPORT const CoblkPlugin *coblk_plugin_init(uint32_t v)
#endif
{
#ifdef VARIANT_DECLINE
    (void)pt_plugin;
    return NULL;
#else
    return &pt_plugin;
#endif
}
