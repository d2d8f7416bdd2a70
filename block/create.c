/*
 * Image creation through a format driver's co_create_opts.
 */
#include <errno.h>

#include "coblk-config.h"
#include "block/block-int.h"

typedef struct CreateArgs {
    const BlockDriver *drv;
    const char *filename;
    BlockOpts *options;
    Error **errp;
} CreateArgs;

static int64_t coroutine_fn create_co(void *opaque)
{
    CreateArgs *a = opaque;

    return a->drv->co_create_opts(a->drv, a->filename, a->options, a->errp);
}

int bdrv_create(const char *format, const char *filename, BlockOpts *options, Error **errp)
{
    CreateArgs a = { bdrv_find_format(format), filename, options, errp };
    int ret;

    if (!a.drv) {
        error_setg(errp, "Unknown file format '%s'", format);
        ret = -EINVAL;
    } else if (!a.drv->co_create_opts) {
        error_setg(errp, "Format driver '%s' does not support image creation", format);
        ret = -ENOTSUP;
    } else {
        if (!a.options) {
            a.options = bopts_new();
        }
        ret = (int)bdrv_run_co(bdrv_default_aio_context(), create_co, &a);
    }
    bopts_free(a.options);
    return ret;
}
