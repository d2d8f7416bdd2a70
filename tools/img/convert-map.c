/*
 * coblk-img convert: data read in place from the source's page cache
 * (opt-in: COBLK_CONVERT_MAP=1).
 *
 * A data range whose bytes sit as they are in a file (block status
 * OFFSET_VALID with a node of the "file" protocol: raw images, plain qcow2
 * clusters) is not read into the worker's buffer: the source file is mapped
 * read-only (MAP_SHARED) and the target write takes its bytes from the
 * mapping, when all of it is in the page cache (mincore(2)): it is used in
 * the loop thread, which must not wait for the disk. A buffered convert then
 * copies each byte once (page cache to page cache, in the target's writer)
 * instead of twice (page cache to the buffer in the loop thread, then buffer
 * to page cache).
 *
 * Why it is not the default (convert -m 8 of the benchmark's 1 GiB of random
 * data, under chrt -f 10 so that both CPUs are free, 5 interleaved rounds):
 * the CPU goes down (-O raw 0.50 -> 0.42 s, -O qcow2 0.51 -> 0.40 s: the
 * loop thread's ~0.25 s copy is gone), but the wall time goes up (-O raw
 * 278-292 -> 319-352 ms, -O qcow2 309-331 -> 323-350 ms). The writer is the
 * critical path: it copied from a buffer the loop thread had just filled
 * (in the L2/L3 cache) and now copies from page cache pages in memory, its
 * run time going from ~265 ms to ~310 ms. Reading the range ahead in the loop
 * thread (one load per cache line) costs as much CPU as the copy it saves.
 * It helps where CPUs are short (a loaded host).
 *
 * The range's page tables are filled by madvise(MADV_POPULATE_READ) before
 * the range is used: it reads what is not cached (errors come back as
 * -errno, here EFAULT past the end of the file, not as SIGBUS) and saves a
 * fault per 64 KiB in the zero scan. Only ranges inside the file's length
 * when it was mapped are used. Reads that cannot go this way (no mapping, a
 * failed populate, a node that is not a file, a file under a filter node
 * such as blkdebug, whose reads must go through it, O_DIRECT sources:
 * cache.direct=on keeps the page cache out) take the normal read path,
 * which reports errors as before.
 *
 * The mapping stays valid while the source is open: the block layer holds
 * the image's OFD read lock without the write permission for others, so
 * cooperating writers stay away. A source file shrunk behind that lock by
 * another program would make the zero scan fault (SIGBUS), where a read
 * gives short data; convert of an image that is being truncated is not
 * supported either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <coblk/block-driver.h>

#include "img.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define SRCMAP_MAX_FILES 16
#define SRCMAP_MAX_CHUNK (16LL << 20)   /* longest range mapped at once */

typedef struct SrcMapFile {
    BlockDriverState *bs;
    uint8_t *base;          /* NULL: not mappable (tried once) */
    int64_t len;
} SrcMapFile;

struct ImgSrcMap {
    int nfiles;
    int64_t page;
    unsigned char vec[SRCMAP_MAX_CHUNK / 4096 + 2];   /* mincore() of one range */
    SrcMapFile f[SRCMAP_MAX_FILES];
};

ImgSrcMap *img_srcmap_new(void)
{
    ImgSrcMap *m = calloc(1, sizeof(*m));

    if (m) {
        long p = sysconf(_SC_PAGESIZE);

        m->page = p > 0 ? p : 4096;
    }
    return m;
}

void img_srcmap_free(ImgSrcMap *m)
{
    if (!m) {
        return;
    }
    for (int i = 0; i < m->nfiles; i++) {
        if (m->f[i].base) {
            munmap(m->f[i].base, (size_t)m->f[i].len);
        }
    }
    free(m);
}

/*
 * A file node, buffered, and the file child of src or of a node of its
 * backing chain: block status may name a file below filters (blkdebug,
 * throttle, ...), whose reads must go through them.
 */
static bool srcmap_node_ok(const BlockDriverState *src, const BlockDriverState *bs)
{
    bool direct = false;

    for (const BlockDriverState *n = src; n && !direct; n = bdrv_backing_bs(n)) {
        direct = n->file && n->file->bs == bs;
    }
    return direct && bs->drv && bs->drv->format_name &&
           strcmp(bs->drv->format_name, "file") == 0 && bs->filename[0] &&
           !(bs->open_flags & BDRV_O_NOCACHE);
}

/* Maps the whole file of bs once; NULL entry base if it cannot be. */
static SrcMapFile *srcmap_file(ImgSrcMap *m, BlockDriverState *src, BlockDriverState *bs)
{
    SrcMapFile *f;
    struct stat st;
    int fd;

    for (int i = 0; i < m->nfiles; i++) {
        if (m->f[i].bs == bs) {
            return &m->f[i];
        }
    }
    if (m->nfiles == SRCMAP_MAX_FILES) {
        return NULL;
    }
    f = &m->f[m->nfiles++];
    f->bs = bs;
    if (!srcmap_node_ok(src, bs)) {
        return f;
    }
    fd = open(bs->filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return f;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size <= SIZE_MAX) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);

        if (p != MAP_FAILED) {
            f->base = p;
            f->len = st.st_size;
        }
    }
    close(fd);
    return f;
}

const uint8_t *img_srcmap_get(ImgSrcMap *m, BlockDriverState *src, BlockDriverState *file,
                              int64_t map, int64_t n)
{
    SrcMapFile *f = srcmap_file(m, src, file);
    int64_t start, end;

    if (!f || !f->base || map < 0 || n <= 0 || map > f->len || n > f->len - map) {
        return NULL;
    }
    start = map & ~(m->page - 1);
    end = map + n;
    if (end - start > SRCMAP_MAX_CHUNK || (size_t)((end - start + m->page - 1) / m->page) >
        sizeof(m->vec)) {
        return NULL;
    }
    /* Not all cached: the normal read path reads it without blocking the loop. */
    if (mincore(f->base + start, (size_t)(end - start), m->vec) < 0) {
        return NULL;
    }
    for (int64_t i = 0; i < (end - start + m->page - 1) / m->page; i++) {
        if (!(m->vec[i] & 1)) {
            return NULL;
        }
    }
    if (madvise(f->base + start, (size_t)(end - start), MADV_POPULATE_READ) < 0) {
        return NULL;
    }
    return f->base + map;
}
