/*
 * Exports: a named BlockBackend, its description, and the transmission
 * flags it advertises.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk/image.h"
#include "nbd/server-int.h"

NbdExport *nbd_export_find(NbdServer *srv, const char *name, uint32_t len)
{
    for (NbdExport *e = srv->exports; e; e = e->next) {
        if (strlen(e->name) == len && !memcmp(e->name, name, len)) {
            return e;
        }
    }
    return NULL;
}

int nbd_server_add_export(NbdServer *srv, BlockBackend *blk, const NbdExportOpts *opts,
                          Error **errp)
{
    NbdExportOpts def = { .multi_conn = -1 };
    NbdExport *e, **tail;
    const char *name;

    opts = opts ? opts : &def;
    name = opts->name ? opts->name : "";
    if (!nbd_string_ok(name, (uint32_t)strnlen(name, NBD_MAX_STRING + 1)) ||
        (opts->description && strlen(opts->description) > NBD_MAX_STRING)) {
        error_setg(errp, "nbd: export name or description longer than %u bytes",
                   NBD_MAX_STRING);
        return -EINVAL;
    }
    if (nbd_export_find(srv, name, (uint32_t)strlen(name))) {
        error_setg(errp, "nbd: export '%s' already exists", name);
        return -EEXIST;
    }
    if (blk_getlength(blk) < 0) {
        error_setg(errp, "nbd: cannot get the length of export '%s'", name);
        return -EINVAL;
    }
    e = calloc(1, sizeof(*e));
    if (!e || !(e->name = strdup(name)) ||
        (opts->description && !(e->description = strdup(opts->description)))) {
        if (e) {
            free(e->name);
        }
        free(e);
        error_setg(errp, "nbd: out of memory");
        return -ENOMEM;
    }
    e->blk = blk;
    e->read_only = opts->read_only || blk_is_read_only(blk);
    e->allocation_depth = opts->allocation_depth;
    e->multi_conn = opts->multi_conn != 0;
    if (opts->bitmap) {
        int64_t pnum;
        int r = bdrv_bitmap_query(blk_bs(blk), opts->bitmap, 0, 1, &pnum);

        if (r < 0 || asprintf(&e->bitmap_ctx, "qemu:dirty-bitmap:%s", opts->bitmap) < 0 ||
            !(e->bitmap = strdup(opts->bitmap))) {
            error_setg(errp, "nbd: export '%s': %s '%s'", name,
                       r == -ENOENT ? "no usable dirty bitmap" : "cannot read dirty bitmap",
                       opts->bitmap);
            free(e->bitmap_ctx);
            free(e->description);
        free(e->bitmap);
        free(e->bitmap_ctx);
            free(e->name);
            free(e);
            return r < 0 ? r : -ENOMEM;
        }
    }
    for (tail = &srv->exports; *tail; tail = &(*tail)->next) {
    }
    *tail = e;
    return 0;
}

uint16_t nbd_export_tflags(const NbdExport *exp, bool structured)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                 NBD_FLAG_SEND_CACHE;

    if (exp->read_only) {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    }
    if (structured) {
        f |= NBD_FLAG_SEND_DF;
    }
    if (exp->multi_conn) {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    return f;
}

void nbd_export_free_all(NbdServer *srv)
{
    while (srv->exports) {
        NbdExport *e = srv->exports;

        srv->exports = e->next;
        free(e->name);
        free(e->description);
        free(e);
    }
}
