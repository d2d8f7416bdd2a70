/*
 * Compressed grains of streamOptimized extents: each grain is a deflate
 * (zlib) stream, preceded by a grain marker (LBA, u64; compressed size, u32)
 * when the extent has markers, and padded to a sector.
 *
 * New grains are appended at the end of the extent file, so an image
 * converted or written front to back is laid out sequentially as the
 * format intends; a grain that is rewritten gets a new copy at the end (the
 * old one is leaked, as VMware does until the image is re-streamed).
 *
 * Limits: a compressed grain is read with at most compressBound(grain) + one
 * sector of input; its marker must name its own LBA and a size that fits;
 * the data must inflate to at most one grain.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define MARKER_BYTES 12

static uint64_t max_stored(const VmdkExtent *e)
{
    return round_up_u64(compressBound((uLong)e->grain_size) + MARKER_BYTES, VMDK_SECTOR);
}

static int inflate_grain(const uint8_t *in, uint64_t in_len, uint8_t *out, uint64_t out_len)
{
    z_stream z;
    int zr;

    memset(&z, 0, sizeof(z));
    if (inflateInit(&z) != Z_OK) {
        return -ENOMEM;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    zr = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    if (zr != Z_STREAM_END) {
        return -EIO;
    }
    memset(out + z.total_out, 0, out_len - z.total_out);
    return 0;
}

int coroutine_fn vmdk_stream_read_grain(VmdkExtent *e, uint64_t grain_index, uint32_t gte,
                                        uint8_t *grain)
{
    uint64_t off = (uint64_t)gte * VMDK_SECTOR, len, size;
    const uint8_t *data;
    uint8_t *cbuf;
    int ret;

    if (gte <= 1 || off >= e->next_alloc) {
        return -EIO;
    }
    len = max_stored(e);
    if (len > e->next_alloc - off) {
        len = e->next_alloc - off;
    }
    cbuf = malloc(len);
    if (!cbuf) {
        return -ENOMEM;
    }
    ret = vmdk_co_pread(e->child, off, cbuf, len);
    if (ret < 0) {
        goto out;
    }
    data = cbuf;
    size = len;
    if (e->markers) {
        uint64_t lba = ld_le64(cbuf);

        size = len >= MARKER_BYTES ? ld_le32(cbuf + 8) : 0;
        if (len < MARKER_BYTES || lba != grain_index * (e->grain_size / VMDK_SECTOR) ||
            size == 0 || size > len - MARKER_BYTES) {
            ret = -EIO;
            goto out;
        }
        data = cbuf + MARKER_BYTES;
    }
    ret = inflate_grain(data, size, grain, e->grain_size);
out:
    free(cbuf);
    return ret;
}

int coroutine_fn vmdk_stream_write_grain(VmdkExtent *e, uint64_t grain_index,
                                         const uint8_t *grain, uint32_t *sector)
{
    uint64_t cap = max_stored(e), hdr = e->markers ? MARKER_BYTES : 0, total;
    uLongf clen = (uLongf)(cap - hdr);
    uint8_t *buf;
    int ret;

    if ((e->next_alloc + cap) / VMDK_SECTOR > UINT32_MAX) {
        return -ENOSPC;
    }
    buf = malloc(cap);
    if (!buf) {
        return -ENOMEM;
    }
    if (compress2(buf + hdr, &clen, grain, (uLong)e->grain_size, Z_DEFAULT_COMPRESSION) !=
        Z_OK) {
        free(buf);
        return -EIO;
    }
    if (e->markers) {
        st_le64(buf, grain_index * (e->grain_size / VMDK_SECTOR));
        st_le32(buf + 8, (uint32_t)clen);
    }
    total = round_up_u64(hdr + clen, VMDK_SECTOR);
    memset(buf + hdr + clen, 0, total - hdr - clen);
    ret = vmdk_co_pwrite(e->child, e->next_alloc, buf, total);
    free(buf);
    if (ret < 0) {
        return ret;
    }
    *sector = (uint32_t)(e->next_alloc / VMDK_SECTOR);
    e->next_alloc += total;
    e->stream_written = e->markers;
    return 0;
}

static int64_t coroutine_fn finish_co(void *opaque)
{
    VmdkExtent *e = opaque;
    static const uint8_t eos[VMDK_SECTOR];
    int ret = vmdk_co_pwrite(e->child, e->next_alloc, eos, sizeof(eos));

    return ret < 0 ? ret : bdrv_co_flush(e->child->bs);
}

int vmdk_stream_finish_sync(VmdkExtent *e)
{
    int ret;

    if (!e->stream_written) {
        return 0;
    }
    ret = (int)bdrv_run_co(e->child->bs->aio_context, finish_co, e);
    e->stream_written = ret < 0;
    return ret;
}
