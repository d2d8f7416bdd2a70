/*
 * Metadata contexts: base:allocation (holes and zeroes, NBD_STATE_*) and,
 * when the export enables it, qemu:allocation-depth (the backing chain layer
 * that provides each range: 0 unallocated, 1 the top image, 2 its backing
 * file, ...), and the export's dirty bitmap as qemu:dirty-bitmap:NAME
 * (1 = dirty).
 *
 * LIST with no query lists every context; "base:" and "qemu:" list their
 * namespace. SET selects exact names only, needs structured replies, and
 * replaces the previous selection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "nbd/server-int.h"

static bool str_is(const char *s, uint32_t len, const char *lit)
{
    return strlen(lit) == len && !memcmp(s, lit, len);
}

static void match_query(const char *s, uint32_t len, const NbdExport *e, bool list, bool *base,
                        bool *depth, bool *bitmap)
{
    if (e->bitmap_ctx &&
        (str_is(s, len, e->bitmap_ctx) ||
         (list && (str_is(s, len, "qemu:") || str_is(s, len, "qemu:dirty-bitmap:"))))) {
        *bitmap = true;
    }
    if (str_is(s, len, NBD_META_BASE_ALLOCATION) || (list && str_is(s, len, "base:"))) {
        *base = true;
    }
    if (e->allocation_depth &&
        (str_is(s, len, NBD_META_QEMU_DEPTH) || (list && str_is(s, len, "qemu:")))) {
        *depth = true;
    }
}

static int coroutine_fn send_context(NbdClient *c, uint32_t opt, uint32_t id, const char *name)
{
    uint8_t buf[4 + 32 + 1024]; /* "qemu:dirty-bitmap:" + a name of <= 1023 bytes */
    size_t len = strlen(name);

    if (len > sizeof(buf) - 4) {
        return -EINVAL;
    }
    st_be32(buf, id);
    memcpy(buf + 4, name, len);
    return nbd_opt_reply(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + len));
}

int coroutine_fn nbd_opt_meta_context(NbdClient *c, uint32_t opt, const uint8_t *data,
                                      uint32_t len)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    bool base = false, depth = false, bitmap = false;
    NbdMetaQuery *q = malloc(sizeof(*q));
    const char *why;
    uint32_t err;
    NbdExport *e;
    int ret = 0;

    if (!q) {
        return -ENOMEM;
    }
    err = nbd_parse_meta(data, len, q, &why);
    if (!err && !list && !c->structured) {
        err = NBD_REP_ERR_INVALID;
        why = "structured replies not negotiated";
    }
    e = err ? NULL : nbd_export_find(c->srv, q->export_name, q->export_len);
    if (!err && !e) {
        err = NBD_REP_ERR_UNKNOWN;
        why = "export not found";
    }
    if (err) {
        free(q);
        return nbd_opt_error(c, opt, err, why);
    }
    if (list && q->n_queries == 0) {
        base = true;
        depth = e->allocation_depth;
        bitmap = e->bitmap_ctx != NULL;
    }
    for (uint32_t i = 0; i < q->n_queries; i++) {
        match_query(q->query[i], q->query_len[i], e, list, &base, &depth, &bitmap);
    }
    if (!list) {
        free(c->meta_export);
        c->meta_export = strdup(e->name);
        c->meta_base = base;
        c->meta_depth = depth;
        c->meta_bitmap = bitmap;
    }
    free(q);
    if (base) {
        ret = send_context(c, opt, list ? 0 : NBD_META_ID_BASE, NBD_META_BASE_ALLOCATION);
    }
    if (ret == 0 && depth) {
        ret = send_context(c, opt, list ? 0 : NBD_META_ID_DEPTH, NBD_META_QEMU_DEPTH);
    }
    if (ret == 0 && bitmap) {
        ret = send_context(c, opt, list ? 0 : NBD_META_ID_BITMAP, e->bitmap_ctx);
    }
    return ret < 0 ? ret : nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}
