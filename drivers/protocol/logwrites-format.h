/*
 * The write-log format shared by the blklogwrites filter and the replay
 * tool: the on-disk layout of Linux's dm-log-writes target (see the
 * kernel's Documentation/admin-guide/device-mapper/log-writes.rst), all
 * fields little-endian:
 *
 *   sector 0:       super  { u64 magic, u64 version (1), u64 nr_entries, u32 sectorsize }
 *   then entries:   one sector { u64 sector, u64 nr_sectors, u64 flags, u64 data_len }
 *                   followed by the entry's data:
 *                     a write:   nr_sectors * sectorsize bytes
 *                     a mark:    data_len bytes of name, padded to a sector
 *                     flush / discard: nothing
 *
 * Sectors and nr_sectors count sectorsize units. Meanings in coblk's logs:
 * a FLUSH entry is logged when the flush starts, so every write logged
 * before it completed before the flush was issued and is durable once the
 * flush succeeds; a DISCARD entry also stands for write-zeroes (the range
 * reads as zeroes afterwards); a FUA write is durable when it completes.
 *
 * coblk's own entries ride in MARK entries whose name starts with
 * LOGW_RESERVED_PREFIX ("coblk:"), so that other readers of the format skip
 * them as marks; user marks may not start with it. One kind exists:
 *   "coblk:truncate=<length>": the file was truncated (grown or shrunk) to
 *   <length> bytes, decimal digits only, at most LOGW_MAX_FILE_LEN. It is
 *   logged when the truncate completed. Like a write, it is durable only once
 *   a later FLUSH succeeds: a cut before that leaves the file at its old
 *   length or at the new one (a grown part reads as zeroes, a cut part is
 *   gone), so a replay treats it as one more entry that may or may not land.
 */
#ifndef COBLK_LOGWRITES_FORMAT_H
#define COBLK_LOGWRITES_FORMAT_H

#define LOGW_MAGIC 0x6a736677736872ULL
#define LOGW_VERSION 1ULL

#define LOGW_FLUSH (1ULL << 0)
#define LOGW_FUA (1ULL << 1)
#define LOGW_DISCARD (1ULL << 2)
#define LOGW_MARK (1ULL << 3)
#define LOGW_METADATA (1ULL << 4)

#define LOGW_SUPER_SIZE 28
#define LOGW_ENTRY_SIZE 32

/* Limits a reader enforces on a log (it may come from elsewhere). */
#define LOGW_MIN_SECTOR 512
#define LOGW_MAX_SECTOR 65536
#define LOGW_MAX_MARK 4096
#define LOGW_MAX_ENTRIES (1ULL << 26)
#define LOGW_MAX_WRITE_SECTORS (1ULL << 24)
#define LOGW_MAX_FILE_LEN (1ULL << 62) /* a truncate entry's length (fits off_t) */

#define LOGW_RESERVED_PREFIX "coblk:"
#define LOGW_TRUNCATE_MARK "coblk:truncate="

#endif /* COBLK_LOGWRITES_FORMAT_H */
