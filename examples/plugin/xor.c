/*
 * A sample out-of-tree coblk driver plugin: the "xor" format.
 *
 * An xor image is a 512-byte header followed by the guest data, every
 * byte XORed with a key:
 *   offset 0   8 bytes  magic "COBLKXOR"
 *   offset 8   8 bytes  virtual size, little-endian
 *   offset 16  1 byte   key (non-zero)
 *   offset 512          data, byte i = guest byte i ^ key
 * The header is untrusted: the size must fit in the file after the header.
 *
 * Build (against an installed coblk):
 *   cc -shared -fPIC $(pkg-config --cflags coblk) -o libcoblk-xor.so xor.c
 * Use:
 *   coblk-img --plugin ./libcoblk-xor.so convert -f xor disk.xor disk.raw
 *   or copy it into $(pkg-config --variable=plugindir coblk) / $COBLK_PLUGIN_DIR.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/coroutine.h>
#include <coblk/plugin.h>

#define XOR_HDR 512
#define XOR_MAGIC "COBLKXOR"

typedef struct XorState {
    int64_t size;
    uint8_t key;
} XorState;

static uint64_t ld_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

typedef struct HdrRead {
    BdrvChild *file;
    uint8_t *buf;
    int ret;
    bool done;
} HdrRead;

static void coroutine_fn hdr_read_co(void *opaque)
{
    HdrRead *r = opaque;
    IOVector v;

    iovector_init_buf(&v, r->buf, XOR_HDR);
    r->ret = bdrv_co_preadv(r->file, 0, XOR_HDR, &v, 0);
    r->done = true;
}

/* Reads the header from plain code or from a coroutine. */
static int read_header(BlockDriverState *bs, uint8_t *buf)
{
    HdrRead r = { bs->file, buf, 0, false };
    AioContext *ctx = bdrv_get_aio_context(bs);

    if (coroutine_in_coroutine()) {
        hdr_read_co(&r);
        return r.ret;
    }
    aio_co_enter(ctx, coroutine_create(hdr_read_co, &r));
    while (!r.done) {
        aio_poll(ctx, true);
    }
    return r.ret;
}

static int xor_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return buf_size >= 8 && memcmp(buf, XOR_MAGIC, 8) == 0 ? 100 : 0;
}

static int xor_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    XorState *s = bs->opaque;
    uint8_t hdr[XOR_HDR];
    int64_t len;
    uint64_t size;

    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY, false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    len = bdrv_getlength(bs->file->bs);
    if (len < XOR_HDR) {
        error_setg(errp, "xor: '%s' is shorter than its %d-byte header",
                   bdrv_get_filename(bs->file->bs), XOR_HDR);
        return -EINVAL;
    }
    if (read_header(bs, hdr) < 0 ||
        memcmp(hdr, XOR_MAGIC, 8) != 0) {
        error_setg(errp, "xor: '%s' has no xor header", bdrv_get_filename(bs->file->bs));
        return -EINVAL;
    }
    size = ld_le64(hdr + 8);
    if (size > (uint64_t)(len - XOR_HDR) || hdr[16] == 0) {
        error_setg(errp, "xor: '%s': size %llu or key %u invalid for a %lld-byte file",
                   bdrv_get_filename(bs->file->bs), (unsigned long long)size, hdr[16],
                   (long long)len);
        return -EINVAL;
    }
    s->size = (int64_t)size;
    s->key = hdr[16];
    return 0;
}

/* XORs bytes of qiov from qiov_offset with the key, in place. */
static void xor_iov(IOVector *qiov, size_t qiov_offset, size_t bytes, uint8_t key)
{
    for (int i = 0; i < qiov->niov && bytes; i++) {
        uint8_t *p = qiov->iov[i].iov_base;
        size_t n = qiov->iov[i].iov_len;

        if (qiov_offset >= n) {
            qiov_offset -= n;
            continue;
        }
        p += qiov_offset;
        n -= qiov_offset;
        qiov_offset = 0;
        n = n < bytes ? n : bytes;
        for (size_t j = 0; j < n; j++) {
            p[j] ^= key;
        }
        bytes -= n;
    }
}

static int coroutine_fn xor_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    XorState *s = bs->opaque;
    int ret = bdrv_co_preadv_part(bs->file, XOR_HDR + offset, bytes, qiov, qiov_offset, 0);

    if (ret == 0) {
        xor_iov(qiov, qiov_offset, (size_t)bytes, s->key);
    }
    return ret;
}

static int coroutine_fn xor_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    XorState *s = bs->opaque;
    uint8_t *buf = malloc((size_t)bytes);
    IOVector v;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    iovector_to_buf(qiov, qiov_offset, buf, (size_t)bytes);
    for (int64_t i = 0; i < bytes; i++) {
        buf[i] ^= s->key;
    }
    iovector_init_buf(&v, buf, (size_t)bytes);
    ret = bdrv_co_pwritev(bs->file, XOR_HDR + offset, bytes, &v, 0);
    free(buf);
    return ret;
}

static int64_t coroutine_fn xor_co_getlength(BlockDriverState *bs)
{
    return ((XorState *)bs->opaque)->size;
}

static const char *const xor_extensions[] = { "xor", NULL };

static const BlockDriver bdrv_xor = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "xor",
    .instance_size = sizeof(XorState),
    .is_format = true,
    .probe = xor_probe,
    .bdrv_open = xor_open,
    .co_preadv = xor_co_preadv,
    .co_pwritev = xor_co_pwritev,
    .co_getlength = xor_co_getlength,
    .file_extensions = xor_extensions,
};

static const BlockDriver *const xor_drivers[] = { &bdrv_xor, NULL };

static const CoblkPlugin xor_plugin = {
    .struct_size = sizeof(CoblkPlugin),
    .api_version = COBLK_PLUGIN_API_VERSION,
    .name = "xor",
    .description = "sample plugin: data XORed with a key byte",
    .drivers = xor_drivers,
};

COBLK_PLUGIN_EXPORT const CoblkPlugin *coblk_plugin_init(uint32_t host_api_version)
{
    return &xor_plugin;
}
