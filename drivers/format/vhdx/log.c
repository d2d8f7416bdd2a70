/*
 * vhdx: the metadata log ([MS-VHDX] section "Log").
 *
 * Open: when the header's LogGuid is set, the log is scanned for valid
 * entries (signature "loge", the header's LogGuid, a good CRC-32C over the
 * entry, descriptors that match the data sectors and the entry's sequence
 * number). The active sequence is the one ending at the valid entry with
 * the highest sequence number whose chain from its Tail entry has
 * consecutive sequence numbers. A writable open replays it (data and zero
 * descriptors, then the file is extended to LastFileOffset), flushes and
 * clears LogGuid; a read-only open of a dirty image fails with a message.
 *
 * Writes (open option metadata-log=on, the default): every metadata update (a BAT
 * sector, or the BAT sectors of all blocks allocated since the last commit,
 * alloc.c) is written as one log entry at the log head, flushed, then
 * written in place and flushed, so the entry's tail is the entry itself.
 * LogGuid is set in the headers before the first entry of a session and
 * cleared at a clean close; a crash (or a failed close) in between leaves an
 * image that the next writable open replays, which read-only opens and
 * qemu-img check refuse until then (the crash tests open such an image
 * read-write once, which is the recovery). With metadata-log=off BAT
 * entries are written in place after the data they point at is flushed:
 * one 8-byte entry inside one sector, which a torn write cannot split, and
 * LogGuid stays zero, for users who need read-only opens after a crash.
 *
 * Limits: the log is at most VHDX_MAX_LOG; an entry at most
 * VHDX_MAX_LOG_ENTRY (32 MiB); replayed writes end below VHDX_MAX_FILE.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define VHDX_MAX_LOG_ENTRY (32 * VHDX_MiB)
#define ENTRY_HDR 64
#define DESC_SIZE 32

typedef struct LogEntry {
    uint64_t pos;
    uint64_t seq;
    uint32_t len;
    uint32_t tail;
    uint64_t last_file_offset;
} LogEntry;

/* Reads len bytes of the circular log from pos (wrapping at its end). */
static int read_log(BlockDriverState *bs, uint64_t pos, uint8_t *buf, uint64_t len)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t first = len < s->hdr.log_length - pos ? len : s->hdr.log_length - pos;
    int ret = vhdx_pread_sync(bs->file, s->hdr.log_offset + pos, buf, first);

    if (ret == 0 && first < len) {
        ret = vhdx_pread_sync(bs->file, s->hdr.log_offset, buf + first, len - first);
    }
    return ret;
}

static uint64_t desc_area(uint32_t count)
{
    return round_up_u64(ENTRY_HDR + (uint64_t)count * DESC_SIZE, VHDX_LOG_SECTOR);
}

/* Checks the descriptors and data sectors of a whole entry. */
static bool check_descriptors(const uint8_t *buf, uint32_t len, uint32_t count, uint64_t seq)
{
    uint64_t area = desc_area(count), data = 0;

    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = buf + ENTRY_HDR + (size_t)i * DESC_SIZE;
        uint64_t foff = ld_le64(d + 16);

        if (ld_le64(d + 24) != seq || foff % VHDX_LOG_SECTOR || foff >= VHDX_MAX_FILE) {
            return false;
        }
        if (!memcmp(d, "desc", 4)) {
            const uint8_t *sec = buf + area + data * VHDX_LOG_SECTOR;

            if (area + (data + 1) * VHDX_LOG_SECTOR > len || memcmp(sec, "data", 4) ||
                ld_le32(sec + 4) != (uint32_t)(seq >> 32) ||
                ld_le32(sec + 4092) != (uint32_t)seq) {
                return false;
            }
            data++;
        } else if (memcmp(d, "zero", 4) || ld_le64(d + 8) % VHDX_LOG_SECTOR ||
                   ld_le64(d + 8) > VHDX_MAX_FILE - foff) {
            return false;
        }
    }
    return area + data * VHDX_LOG_SECTOR == len;
}

/* Reads and validates the entry at pos; *buf gets it (malloc'd) on success. */
static bool read_entry(BlockDriverState *bs, uint64_t pos, LogEntry *e, uint8_t **buf)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t hdr[ENTRY_HDR], *b;
    uint32_t count;

    *buf = NULL;
    if (read_log(bs, pos, hdr, sizeof(hdr)) < 0 || memcmp(hdr, "loge", 4) ||
        memcmp(hdr + 32, s->hdr.log_guid.b, 16)) {
        return false;
    }
    e->pos = pos;
    e->len = ld_le32(hdr + 8);
    e->tail = ld_le32(hdr + 12);
    e->seq = ld_le64(hdr + 16);
    count = ld_le32(hdr + 24);
    e->last_file_offset = ld_le64(hdr + 56);
    if (e->len == 0 || e->len % VHDX_LOG_SECTOR || e->len > s->hdr.log_length ||
        e->len > VHDX_MAX_LOG_ENTRY || e->tail % VHDX_LOG_SECTOR ||
        e->tail >= s->hdr.log_length || desc_area(count) > e->len ||
        e->last_file_offset > VHDX_MAX_FILE) {
        return false;
    }
    b = malloc(e->len);
    if (!b || read_log(bs, pos, b, e->len) < 0 ||
        (FMT_VERIFY_CHECKSUMS && ld_le32(b + 4) != vhdx_checksum(b, e->len, 4)) ||
        !check_descriptors(b, e->len, count, e->seq)) {
        free(b);
        return false;
    }
    *buf = b;
    return true;
}

/*
 * Finds the active sequence: fills chain (up to max entries) from tail to
 * head and returns its length, 0 if the log holds none.
 */
static int find_sequence(BlockDriverState *bs, LogEntry *chain, int max)
{
    BDRVVhdxState *s = bs->opaque;
    LogEntry best = { 0 }, e;
    bool have = false;
    uint8_t *buf;
    int n = 0;

    for (uint64_t pos = 0; pos < s->hdr.log_length; pos += VHDX_LOG_SECTOR) {
        if (read_entry(bs, pos, &e, &buf)) {
            free(buf);
            if (!have || e.seq > best.seq) {
                best = e;
                have = true;
            }
        }
    }
    if (!have) {
        return 0;
    }
    for (uint64_t pos = best.tail; n < max; pos = (pos + e.len) % s->hdr.log_length) {
        if (!read_entry(bs, pos, &e, &buf)) {
            return 0;
        }
        free(buf);
        if (n && e.seq != chain[n - 1].seq + 1) {
            return 0;
        }
        chain[n++] = e;
        if (e.pos == best.pos) {
            return e.seq == best.seq ? n : 0;
        }
    }
    return 0;
}

typedef struct Replay {
    BlockDriverState *bs;
    LogEntry *chain;
    int n;
} Replay;

static int coroutine_fn replay_entry(BlockDriverState *bs, const uint8_t *buf)
{
    uint8_t sector[VHDX_LOG_SECTOR];
    uint32_t count = ld_le32(buf + 24);
    uint64_t area = desc_area(count), data = 0;
    int ret = 0;

    for (uint32_t i = 0; i < count && ret == 0; i++) {
        const uint8_t *d = buf + ENTRY_HDR + (size_t)i * DESC_SIZE;
        uint64_t foff = ld_le64(d + 16);

        if (!memcmp(d, "desc", 4)) {
            const uint8_t *sec = buf + area + data++ * VHDX_LOG_SECTOR;

            memcpy(sector, d + 8, 8);                 /* LeadingBytes */
            memcpy(sector + 8, sec + 8, 4084);
            memcpy(sector + 4092, d + 4, 4);          /* TrailingBytes */
            ret = vhdx_co_pwrite(bs->file, foff, sector, sizeof(sector));
        } else {
            ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)foff, (int64_t)ld_le64(d + 8), 0);
        }
    }
    return ret;
}

static int64_t coroutine_fn replay_co(void *opaque)
{
    Replay *r = opaque;
    BlockDriverState *bs = r->bs;
    BDRVVhdxState *s = bs->opaque;
    uint64_t last = r->chain[r->n - 1].last_file_offset;
    int64_t len;
    int ret = 0;

    for (int i = 0; i < r->n && ret == 0; i++) {
        LogEntry e;
        uint8_t *buf;

        if (!read_entry(bs, r->chain[i].pos, &e, &buf)) {
            return -EIO;
        }
        ret = replay_entry(bs, buf);
        free(buf);
    }
    len = bdrv_co_getlength(bs->file->bs);
    if (ret == 0 && len >= 0 && (uint64_t)len < last) {
        ret = bdrv_co_truncate(bs->file, (int64_t)last, false, PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        memset(&s->hdr.log_guid, 0, sizeof(s->hdr.log_guid));
        ret = vhdx_update_headers(bs, NULL);
    }
    return ret;
}

int vhdx_log_open(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t max = s->hdr.log_length / VHDX_LOG_SECTOR;
    Replay r = { .bs = bs };
    int ret;

    if (vhdx_guid_is_zero(&s->hdr.log_guid)) {
        return 0;
    }
    r.chain = calloc(max, sizeof(*r.chain));
    if (!r.chain) {
        return -ENOMEM;
    }
    r.n = find_sequence(bs, r.chain, (int)max);
    if (r.n == 0) {
        free(r.chain);
        return 0; /* LogGuid set but no valid entry: nothing to replay */
    }
    if (bs->read_only) {
        error_setg(errp, "vhdx: %s: the log holds %d entries that must be replayed, but the "
                   "image is opened read-only (open it read-write once)", bs->filename, r.n);
        free(r.chain);
        return -EPERM;
    }
    ret = (int)bdrv_run_co(bs->aio_context, replay_co, &r);
    free(r.chain);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vhdx: %s: log replay failed", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Writing through the log */

/*
 * Sets new write GUIDs (and, with metadata-log=on, a LogGuid) in both
 * headers, once per session.
 */
int coroutine_fn vhdx_log_start(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    if (s->guids_updated) {
        return 0;
    }
    vhdx_guid_generate(&s->hdr.file_write_guid);
    vhdx_guid_generate(&s->hdr.data_write_guid);
    if (s->metadata_log) {
        vhdx_guid_generate(&s->hdr.log_guid);
    }
    ret = vhdx_update_headers(bs, NULL);
    if (ret == 0) {
        s->guids_updated = true;
        s->log_guid_set = s->metadata_log;
        s->log_seq = 1;
        s->log_head = 0;
    }
    return ret;
}

/* File offset of sector i of an update: offs[i], or off + i sectors when offs is NULL. */
static uint64_t sector_off(const uint64_t *offs, uint64_t off, uint32_t i)
{
    return offs ? offs[i] : off + (uint64_t)i * VHDX_LOG_SECTOR;
}

static uint8_t *build_entry(BDRVVhdxState *s, const uint64_t *offs, uint64_t off,
                            const uint8_t *data, uint32_t n, uint64_t file_len,
                            uint32_t *entry_len)
{
    uint64_t area = desc_area(n), seq = s->log_seq;
    uint8_t *b;

    *entry_len = (uint32_t)(area + (uint64_t)n * VHDX_LOG_SECTOR);
    b = calloc(1, *entry_len);
    if (!b) {
        return NULL;
    }
    memcpy(b, "loge", 4);
    st_le32(b + 8, *entry_len);
    st_le32(b + 12, (uint32_t)s->log_head); /* tail: everything before is in place */
    st_le64(b + 16, seq);
    st_le32(b + 24, n);
    memcpy(b + 32, s->hdr.log_guid.b, 16);
    st_le64(b + 48, file_len);
    st_le64(b + 56, file_len);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = b + ENTRY_HDR + (size_t)i * DESC_SIZE;
        uint8_t *sec = b + area + (size_t)i * VHDX_LOG_SECTOR;
        const uint8_t *src = data + (size_t)i * VHDX_LOG_SECTOR;

        memcpy(d, "desc", 4);
        memcpy(d + 4, src + 4092, 4);
        memcpy(d + 8, src, 8);
        st_le64(d + 16, sector_off(offs, off, i));
        st_le64(d + 24, seq);
        memcpy(sec, "data", 4);
        st_le32(sec + 4, (uint32_t)(seq >> 32));
        memcpy(sec + 8, src + 8, 4084);
        st_le32(sec + 4092, (uint32_t)seq);
    }
    st_le32(b + 4, vhdx_checksum(b, *entry_len, 4));
    return b;
}

/* Writes the n sectors in place (one write when they are contiguous). */
static int coroutine_fn write_in_place(BlockDriverState *bs, const uint64_t *offs, uint64_t off,
                                       const uint8_t *buf, uint32_t n)
{
    int ret = 0;

    if (!offs) {
        return vhdx_co_pwrite(bs->file, off, buf, (size_t)n * VHDX_LOG_SECTOR);
    }
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        ret = vhdx_co_pwrite(bs->file, offs[i], buf + (size_t)i * VHDX_LOG_SECTOR,
                             VHDX_LOG_SECTOR);
    }
    return ret;
}

/*
 * One log entry for n 4 KiB sectors at offs[i] (or off + i sectors): the
 * entry, flush, the sectors in place, flush. Called with s->lock held.
 */
static int coroutine_fn log_write(BlockDriverState *bs, const uint64_t *offs, uint64_t off,
                                  const uint8_t *buf, uint32_t n)
{
    BDRVVhdxState *s = bs->opaque;
    int64_t file_len;
    uint32_t entry_len;
    uint8_t *entry;
    int ret = vhdx_log_start(bs);

    if (ret < 0) {
        return ret;
    }
    file_len = bdrv_co_getlength(bs->file->bs);
    if (file_len < 0) {
        return (int)file_len;
    }
    entry = build_entry(s, offs, off, buf, n, (uint64_t)file_len, &entry_len);
    if (!entry) {
        return -ENOMEM;
    }
    if (entry_len > s->hdr.log_length) {
        free(entry);
        return -ENOSPC;
    }
    if (s->log_head + entry_len > s->hdr.log_length) {
        s->log_head = 0;
        st_le32(entry + 12, 0);
        st_le32(entry + 4, vhdx_checksum(entry, entry_len, 4));
    }
    ret = vhdx_co_pwrite(bs->file, s->hdr.log_offset + s->log_head, entry, entry_len);
    free(entry);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs); /* the entry is durable before the update */
    }
    if (ret == 0) {
        ret = write_in_place(bs, offs, off, buf, n);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        s->log_head += entry_len;
        s->log_seq++;
    }
    return ret;
}

int coroutine_fn vhdx_log_write(BlockDriverState *bs, uint64_t off, const uint8_t *buf,
                                size_t len)
{
    return log_write(bs, NULL, off, buf, (uint32_t)(len / VHDX_LOG_SECTOR));
}

int coroutine_fn vhdx_log_write_sectors(BlockDriverState *bs, const uint64_t *offs,
                                        const uint8_t *buf, uint32_t n)
{
    return log_write(bs, offs, 0, buf, n);
}
