/*
 * coblk - pooled aligned bounce buffers for the request layer.
 *
 * Each thread keeps a few freed buffers (a coroutine that moved threads
 * simply returns its buffer to the new thread's pool). In steady state a
 * padded or bounced request takes a buffer from the pool and gives it back,
 * without calling the allocator. With -Dpools=false every buffer is fresh,
 * so the sanitizers see use-after-free.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coblk-config.h"
#include "block/io-int.h"

#define BOUNCE_POOL_SLOTS 8
#define ZERO_BUF_ALIGN 4096

typedef struct BounceSlot {
    void *buf;
    size_t len;
    size_t align;
} BounceSlot;

typedef struct BouncePool {
    BounceSlot slot[BOUNCE_POOL_SLOTS];
    int n;
} BouncePool;

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

/* bss: costs nothing until read, and reads map the shared zero page. */
static uint8_t bounce_zeroes[BDRV_BOUNCE_MAX] __attribute__((aligned(ZERO_BUF_ALIGN)));

static void bounce_pool_free(void *opaque)
{
    BouncePool *pool = opaque;

    for (int i = 0; i < pool->n; i++) {
        free(pool->slot[i].buf);
    }
    free(pool);
}

static void bounce_key_init(void)
{
    if (pthread_key_create(&bounce_key, bounce_pool_free) != 0) {
        abort();
    }
}

static BouncePool *bounce_pool(bool create)
{
    BouncePool *pool;

    pthread_once(&bounce_once, bounce_key_init);
    pool = pthread_getspecific(bounce_key);
    if (!pool && create) {
        pool = calloc(1, sizeof(*pool));
        if (pool && pthread_setspecific(bounce_key, pool) != 0) {
            free(pool);
            pool = NULL;
        }
    }
    return pool;
}

void *bdrv_bounce_get(size_t len, size_t align)
{
    BouncePool *pool = COBLK_POOLS ? bounce_pool(false) : NULL;
    void *buf = NULL;

    if (align < sizeof(void *)) {
        align = sizeof(void *);
    }
    for (int i = 0; pool && i < pool->n; i++) {
        BounceSlot *s = &pool->slot[i];

        if (s->len >= len && s->align >= align) {
            buf = s->buf;
            *s = pool->slot[--pool->n];
            return buf;
        }
    }
    if (posix_memalign(&buf, align, len ? len : 1) != 0) {
        return NULL;
    }
    return buf;
}

void bdrv_bounce_put(void *buf, size_t len, size_t align)
{
    BouncePool *pool;

    if (!buf) {
        return;
    }
    pool = (COBLK_POOLS && len <= BDRV_BOUNCE_MAX) ? bounce_pool(true) : NULL;
    if (!pool) {
        free(buf);
        return;
    }
    if (align < sizeof(void *)) {
        align = sizeof(void *);
    }
    if (pool->n == BOUNCE_POOL_SLOTS) {
        /* Keep the bigger buffers: replace the smallest one if it is smaller. */
        int min = 0;

        for (int i = 1; i < pool->n; i++) {
            if (pool->slot[i].len < pool->slot[min].len) {
                min = i;
            }
        }
        if (pool->slot[min].len >= len) {
            free(buf);
            return;
        }
        free(pool->slot[min].buf);
        pool->slot[min] = pool->slot[--pool->n];
    }
    pool->slot[pool->n++] = (BounceSlot){ .buf = buf, .len = len, .align = align };
}

void *bdrv_zero_buf(size_t align)
{
    return align <= ZERO_BUF_ALIGN ? bounce_zeroes : NULL;
}

size_t bdrv_bounce_align(const BlockDriverState *bs)
{
    size_t a = bs->bl.opt_mem_alignment;

    if (bs->bl.min_mem_alignment > a) {
        a = bs->bl.min_mem_alignment;
    }
    return a ? a : 1;
}
