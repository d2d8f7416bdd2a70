/*
 * vmdk: rewriting the descriptor so that a crash leaves the old or the new
 * one, never a mix.
 *
 * A descriptor file on a local file (the "file" protocol) is replaced, not
 * rewritten: the new text goes to a unique temporary sibling (mkstemp, the
 * old file's permissions), which is fsynced and renamed over the
 * descriptor, and the directory is fsynced. rename() is atomic, so the name
 * gives the old or the new text. The rename is done by the file node
 * (bdrv_replace_file): it locks the temporary file as it locks its own
 * before the rename, then takes it as its file, so the image locks stay
 * on the file that has the descriptor's name (another process cannot open
 * the image while it is in use). Over any other protocol the file is
 * rewritten in place and truncated (atomic only within one sector).
 *
 * The descriptor embedded in a hosted sparse file sits in a fixed area
 * (desc_size sectors from desc_offset, 20 as qemu-img and VMware create
 * them) that a reader parses up to the first NUL byte. Neither the VMDK
 * specification nor qemu (which rewrites the area in place) protects a
 * multi-sector update; VMware's own behaviour is not documented. coblk
 * treats a one-sector write as atomic and orders the rest:
 *  - at most one sector changes: that sector is written;
 *  - the old text ends in the first sector: the new text's later sectors
 *    are written first (a reader stops at the old NUL in sector 0), flushed,
 *    then sector 0;
 *  - the new text ends in the first sector: sector 0 first, flushed, then
 *    the old tail is zeroed;
 *  - else both span sectors: the new text carries a checksum line
 *    ("# coblk-crc32: xxxxxxxx", a comment every reader skips) as its second
 *    line, in sector 0. A copy of it is written to the upper half of the
 *    area (past both texts' ends, where no reader looks) and flushed, then
 *    sector 0, flushed, then the other sectors. A crash leaves the old text,
 *    the new one, or a sector 0 whose checksum does not match the sectors
 *    after it: vmdk_desc_recover() (at open) then takes the copy, whose own
 *    checksum must match and equal the primary's, and an image opened
 *    read-write gets it written back. If the texts do not fit in half of
 *    the area the update is refused with -ENOSPC.
 * Qemu and VMware read such a torn area as whatever it holds, as they read
 * their own torn updates; coblk's first read-write open repairs it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "block/image-meta.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define CRC_TAG "# coblk-crc32: "
#define CRC_LINE_LEN (sizeof(CRC_TAG) - 1 + 8 + 1)

/* The checksum line of text, or NULL. */
static const char *find_crc_line(const char *text)
{
    const char *p = text;

    while (p && *p) {
        if (!strncmp(p, CRC_TAG, sizeof(CRC_TAG) - 1)) {
            return p;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return NULL;
}

/* text without its checksum line (malloc'd, NULL: out of memory). */
static char *strip_crc(const char *text)
{
    const char *line = find_crc_line(text), *end;
    size_t len = strlen(text);
    char *out;

    if (!line) {
        return strdup(text);
    }
    end = strchr(line, '\n');
    end = end ? end + 1 : line + strlen(line);
    out = malloc(len + 1);
    if (out) {
        memcpy(out, text, (size_t)(line - text));
        strcpy(out + (line - text), end);
    }
    return out;
}

/* The crc32 of the text (without its checksum line). */
static int text_crc(const char *text, uint32_t *crc)
{
    char *plain = strip_crc(text);

    if (!plain) {
        return -ENOMEM;
    }
    *crc = (uint32_t)crc32(0L, (const Bytef *)plain, (uInt)strlen(plain));
    free(plain);
    return 0;
}

/* text with a fresh checksum line as its second line (malloc'd). */
static char *with_crc(const char *text)
{
    char *plain = strip_crc(text), *out, *nl;
    uint32_t crc;
    size_t head;

    if (!plain) {
        return NULL;
    }
    crc = (uint32_t)crc32(0L, (const Bytef *)plain, (uInt)strlen(plain));
    nl = strchr(plain, '\n');
    head = nl ? (size_t)(nl + 1 - plain) : 0;
    out = malloc(strlen(plain) + CRC_LINE_LEN + 1);
    if (out) {
        memcpy(out, plain, head);
        sprintf(out + head, CRC_TAG "%08" PRIx32 "\n%s", crc, plain + head);
    }
    free(plain);
    return out;
}

/* The value of text's checksum line; false if it has none or it is malformed. */
static bool crc_value(const char *text, uint32_t *v)
{
    const char *line = find_crc_line(text);
    char hex[9];

    if (!line) {
        return false;
    }
    memcpy(hex, line + sizeof(CRC_TAG) - 1, 8);
    hex[8] = 0;
    return strnlen(line, CRC_LINE_LEN) == CRC_LINE_LEN && line[CRC_LINE_LEN - 1] == '\n' &&
           strspn(hex, "0123456789abcdef") == 8 && sscanf(hex, "%" SCNx32, v) == 1;
}

/* ---------------------------------------------------------------------- */
/* A descriptor file */

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Replaces path, the file of node file, by one holding text (see the file comment). */
static int replace_file(BlockDriverState *file, const char *path, const char *text)
{
    struct stat st;
    char *tmp;
    int fd, ret;

    if (asprintf(&tmp, "%s.coblk-XXXXXX", path) < 0) {
        return -ENOMEM;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        ret = -errno;
        free(tmp);
        return ret;
    }
    ret = stat(path, &st) == 0 ? fchmod(fd, st.st_mode & 07777) : 0;
    ret = ret < 0 ? -errno : write_all(fd, text, strlen(text));
    if (ret == 0 && fsync(fd) < 0) {
        ret = -errno;
    }
    close(fd);
    if (ret == 0) {
        ret = bdrv_replace_file(file, tmp, path);
    }
    if (ret < 0) {
        unlink(tmp);
    } else {
        ret = coblk_sync_dir_of(path);
    }
    free(tmp);
    return ret;
}

static bool is_local_file(BlockDriverState *bs)
{
    return bs->file->bs->drv && !strcmp(bs->file->bs->drv->format_name, "file");
}

/* ---------------------------------------------------------------------- */
/* The embedded descriptor */

static int coroutine_fn put_sectors(BlockDriverState *bs, const char *area, uint64_t first,
                                    uint64_t end)
{
    BDRVVmdkState *s = bs->opaque;

    if (first >= end) {
        return 0;
    }
    return vmdk_co_pwrite(bs->file, s->desc_offset + first * VMDK_SECTOR,
                          area + first * VMDK_SECTOR, (size_t)((end - first) * VMDK_SECTOR));
}

static int coroutine_fn flush(BlockDriverState *bs)
{
    return bdrv_co_flush(bs->file->bs);
}

/* Writes area (span sectors, the new text padded with zeroes) over old in a safe order. */
static int coroutine_fn put_ordered(BlockDriverState *bs, const char *area, const char *old,
                                    uint64_t so, uint64_t sn, uint64_t span)
{
    BDRVVmdkState *s = bs->opaque;
    uint64_t cap = s->desc_capacity / VMDK_SECTOR, half = cap / 2, changed = 0, last = 0;
    int ret;

    for (uint64_t i = 0; i < span; i++) {
        if (memcmp(area + i * VMDK_SECTOR, old + i * VMDK_SECTOR, VMDK_SECTOR)) {
            changed++;
            last = i;
        }
    }
    if (changed <= 1) {
        return changed ? put_sectors(bs, area, last, last + 1) : 0;
    }
    if (so == 1) {
        ret = put_sectors(bs, area, 1, span);
        ret = ret ? ret : flush(bs);
        return ret ? ret : put_sectors(bs, area, 0, 1);
    }
    if (sn == 1) {
        ret = put_sectors(bs, area, 0, 1);
        ret = ret ? ret : flush(bs);
        return ret ? ret : put_sectors(bs, area, 1, span);
    }
    if (span > half || sn > cap - half) {
        return -ENOSPC;
    }
    ret = vmdk_co_pwrite(bs->file, s->desc_offset + half * VMDK_SECTOR, area,
                         (size_t)(sn * VMDK_SECTOR));
    ret = ret ? ret : flush(bs);
    ret = ret ? ret : put_sectors(bs, area, 0, 1);
    ret = ret ? ret : flush(bs);
    return ret ? ret : put_sectors(bs, area, 1, span);
}

static int coroutine_fn put_embedded(BlockDriverState *bs, const char *text)
{
    BDRVVmdkState *s = bs->opaque;
    size_t cap = (size_t)s->desc_capacity, ln, lo;
    char *n = strlen(text) + 1 > VMDK_SECTOR ? with_crc(text) : strip_crc(text);
    char *old = NULL, *area = NULL;
    uint64_t so, sn, span;
    int ret;

    if (!n) {
        return -ENOMEM;
    }
    ln = strlen(n) + 1;
    if (ln > cap) {
        ret = -ENOSPC;
        goto out;
    }
    old = calloc(1, cap);
    area = calloc(1, cap);
    if (!old || !area) {
        ret = -ENOMEM;
        goto out;
    }
    ret = vmdk_co_pread(bs->file, s->desc_offset, old, cap);
    if (ret < 0) {
        goto out;
    }
    lo = strnlen(old, cap) + 1;
    lo = lo > cap ? cap : lo;
    so = div_round_up_u64(lo, VMDK_SECTOR);
    sn = div_round_up_u64(ln, VMDK_SECTOR);
    span = so > sn ? so : sn;
    memcpy(area, n, ln);
    ret = put_ordered(bs, area, old, so, sn, span);
out:
    free(n);
    free(old);
    free(area);
    return ret;
}

/* ---------------------------------------------------------------------- */

int coroutine_fn vmdk_put_desc(BlockDriverState *bs, const char *path, const char *text)
{
    BDRVVmdkState *s = bs->opaque;
    size_t len = strlen(text);
    int ret;

    if (s->desc_embedded) {
        return put_embedded(bs, text);
    }
    if (is_local_file(bs)) {
        return replace_file(bs->file->bs, path ? path : bs->file->bs->filename, text);
    }
    ret = vmdk_co_pwrite(bs->file, 0, text, len);
    return ret < 0 ? ret : bdrv_co_truncate(bs->file, (int64_t)len, true, PREALLOC_MODE_OFF, 0,
                                            NULL);
}

int coroutine_fn vmdk_write_desc(BlockDriverState *bs, const char *text)
{
    int ret = vmdk_put_desc(bs, NULL, text);

    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

typedef struct Repair {
    BlockDriverState *bs;
    const char *text;
} Repair;

static int64_t coroutine_fn repair_co(void *opaque)
{
    Repair *r = opaque;

    return vmdk_write_desc(r->bs, r->text);
}

int vmdk_desc_recover(BlockDriverState *bs, char *area, size_t cap, Error **errp)
{
    size_t half = cap / VMDK_SECTOR / 2 * VMDK_SECTOR, blen;
    uint32_t want, got, bwant, bgot;
    const char *backup = area + half;
    Repair r = { bs, area };
    int ret;

    if (!crc_value(area, &want)) {
        return 0; /* no checksum: written by one-sector updates or another program */
    }
    ret = text_crc(area, &got);
    if (ret < 0 || got == want) {
        return ret;
    }
    blen = strnlen(backup, cap - half);
    if (half == 0 || blen == cap - half || !crc_value(backup, &bwant) || bwant != want ||
        text_crc(backup, &bgot) < 0 || bgot != want) {
        error_setg(errp, "vmdk: %s: the embedded descriptor fails its checksum (%08" PRIx32
                   ", computed %08" PRIx32 "): torn by an interrupted update, and its copy "
                   "is not usable", bs->filename, want, got);
        return -EINVAL;
    }
    memmove(area, backup, blen);
    memset(area + blen, 0, cap - blen);
    if (!(bs->open_flags & BDRV_O_RDWR)) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->file->bs->aio_context, repair_co, &r);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vmdk: %s: could not repair the torn embedded descriptor",
                         bs->filename);
    }
    return ret;
}
