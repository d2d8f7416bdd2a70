/*
 * coblk - I/O vectors (include/coblk/iov.h).
 *
 * Vectors made by iovector_init_buf() and iovector_init_external() borrow
 * their storage (nalloc == -1) and never allocate; only iovector_init()
 * vectors grow on the heap.
 */
#include <stdlib.h>
#include <string.h>

#include <coblk/iov.h>

/* Aborts on allocation failure, as the rest of the non-I/O paths do. */
static void *iov_xrealloc(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        abort();
    }
    p = realloc(p, n * size);
    if (!p) {
        abort();
    }
    return p;
}

void iovector_init(IOVector *v, int alloc_hint)
{
    memset(v, 0, sizeof(*v));
    if (alloc_hint > 0) {
        v->iov = iov_xrealloc(NULL, (size_t)alloc_hint, sizeof(struct iovec));
        v->nalloc = alloc_hint;
    }
}

void iovector_init_buf(IOVector *v, void *buf, size_t len)
{
    v->local_iov.iov_base = buf;
    v->local_iov.iov_len = len;
    v->iov = &v->local_iov;
    v->niov = 1;
    v->nalloc = -1;
    v->size = len;
}

void iovector_init_external(IOVector *v, struct iovec *iov, int niov)
{
    size_t size = 0;

    for (int i = 0; i < niov; i++) {
        size += iov[i].iov_len;
    }
    v->iov = iov;
    v->niov = niov;
    v->nalloc = -1;
    v->size = size;
    v->local_iov.iov_base = NULL;
    v->local_iov.iov_len = 0;
}

void iovector_add(IOVector *v, void *base, size_t len)
{
    if (v->nalloc < 0) {
        abort(); /* borrowed storage cannot grow */
    }
    if (v->niov == v->nalloc) {
        int n = v->nalloc ? v->nalloc * 2 : 4;

        v->iov = iov_xrealloc(v->iov, (size_t)n, sizeof(struct iovec));
        v->nalloc = n;
    }
    v->iov[v->niov].iov_base = base;
    v->iov[v->niov].iov_len = len;
    v->niov++;
    v->size += len;
}

/*
 * Finds the entry holding byte offset of v; returns its index (v->niov if
 * offset == v->size) and the offset inside it in *skip.
 */
static int iov_find(const IOVector *v, size_t offset, size_t *skip)
{
    int i = 0;

    while (i < v->niov && offset >= v->iov[i].iov_len) {
        offset -= v->iov[i].iov_len;
        i++;
    }
    *skip = offset;
    return i;
}

void iovector_concat(IOVector *dst, const IOVector *src, size_t offset, size_t bytes)
{
    size_t skip;
    int i = iov_find(src, offset, &skip);

    for (; i < src->niov && bytes > 0; i++) {
        size_t len = src->iov[i].iov_len - skip;

        if (len > bytes) {
            len = bytes;
        }
        if (len > 0) {
            iovector_add(dst, (char *)src->iov[i].iov_base + skip, len);
        }
        bytes -= len;
        skip = 0;
    }
}

void iovector_reset(IOVector *v)
{
    if (v->nalloc >= 0) {
        v->niov = 0;
        v->size = 0;
    }
}

void iovector_destroy(IOVector *v)
{
    if (v->nalloc >= 0) {
        free(v->iov);
    }
    memset(v, 0, sizeof(*v));
}

/* Calls fn on each piece of v in [offset, offset + bytes); returns bytes walked. */
typedef bool IovWalkFn(void *piece, size_t len, size_t done, void *opaque);

static size_t iov_walk(const IOVector *v, size_t offset, size_t bytes, IovWalkFn *fn,
                       void *opaque)
{
    size_t skip;
    size_t done = 0;
    int i = iov_find(v, offset, &skip);

    for (; i < v->niov && done < bytes; i++) {
        size_t len = v->iov[i].iov_len - skip;

        if (len > bytes - done) {
            len = bytes - done;
        }
        if (len > 0 && !fn((char *)v->iov[i].iov_base + skip, len, done, opaque)) {
            break;
        }
        done += len;
        skip = 0;
    }
    return done;
}

static bool walk_from_buf(void *piece, size_t len, size_t done, void *opaque)
{
    memcpy(piece, (const char *)opaque + done, len);
    return true;
}

static bool walk_to_buf(void *piece, size_t len, size_t done, void *opaque)
{
    memcpy((char *)opaque + done, piece, len);
    return true;
}

static bool walk_memset(void *piece, size_t len, size_t done, void *opaque)
{
    memset(piece, *(int *)opaque, len);
    return true;
}

size_t iovector_from_buf(const IOVector *v, size_t offset, const void *buf, size_t bytes)
{
    return iov_walk(v, offset, bytes, walk_from_buf, (void *)buf);
}

size_t iovector_to_buf(const IOVector *v, size_t offset, void *buf, size_t bytes)
{
    return iov_walk(v, offset, bytes, walk_to_buf, buf);
}

size_t iovector_memset(const IOVector *v, size_t offset, int c, size_t bytes)
{
    return iov_walk(v, offset, bytes, walk_memset, &c);
}

/* True if len bytes at p are zero; word-at-a-time once aligned. */
static bool buf_is_zero(const unsigned char *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & (sizeof(uint64_t) - 1)) != 0) {
        if (*p) {
            return false;
        }
        p++;
        len--;
    }
    while (len >= 4 * sizeof(uint64_t)) {
        const uint64_t *w = (const uint64_t *)(const void *)p;

        if (w[0] | w[1] | w[2] | w[3]) {
            return false;
        }
        p += 4 * sizeof(uint64_t);
        len -= 4 * sizeof(uint64_t);
    }
    while (len > 0) {
        if (*p) {
            return false;
        }
        p++;
        len--;
    }
    return true;
}

static bool walk_is_zero(void *piece, size_t len, size_t done, void *opaque)
{
    if (!buf_is_zero(piece, len)) {
        *(bool *)opaque = false;
        return false;
    }
    return true;
}

bool iovector_is_zero(const IOVector *v, size_t offset, size_t bytes)
{
    bool zero = true;
    size_t done = iov_walk(v, offset, bytes, walk_is_zero, &zero);

    return zero && done == bytes;
}

int64_t iovector_compare(const IOVector *a, const IOVector *b)
{
    size_t sa;
    size_t sb;
    size_t pos = 0;
    int ia = iov_find(a, 0, &sa);
    int ib = iov_find(b, 0, &sb);

    while (ia < a->niov && ib < b->niov) {
        const unsigned char *pa = (const unsigned char *)a->iov[ia].iov_base + sa;
        const unsigned char *pb = (const unsigned char *)b->iov[ib].iov_base + sb;
        size_t la = a->iov[ia].iov_len - sa;
        size_t lb = b->iov[ib].iov_len - sb;
        size_t n = la < lb ? la : lb;

        if (n > 0 && memcmp(pa, pb, n) != 0) {
            while (*pa == *pb) {
                pa++;
                pb++;
                pos++;
            }
            return (int64_t)pos;
        }
        pos += n;
        sa += n;
        sb += n;
        if (sa == a->iov[ia].iov_len) {
            ia++;
            sa = 0;
        }
        if (sb == b->iov[ib].iov_len) {
            ib++;
            sb = 0;
        }
    }
    return a->size == b->size ? -1 : (int64_t)pos;
}
