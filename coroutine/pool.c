/*
 * coblk - coroutine stacks and their pools.
 *
 * A coroutine is one anonymous mapping: a guard page at the bottom, the stack,
 * and the Coroutine structure itself at the top, so creating one costs one
 * mmap() and no malloc(). Terminated coroutines go to the calling thread's
 * free list (no lock); beyond CO_POOL_LOCAL_MAX a batch moves to a shared
 * overflow pool (mutex, capped), from which threads with an empty list refill
 * a batch at a time. A thread that exits hands its list to the shared pool.
 * With pools compiled out every create maps and every terminate unmaps, so
 * that ASan sees use after free.
 */
#include "coblk-config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#if COBLK_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

#include "coroutine/co-sanitizer.h"
#include "coroutine/co-thread.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif

#define CO_STACK_DEFAULT (1024u * 1024u)
#define CO_STACK_MIN (16u * 1024u)
#define CO_STACK_MAX ((size_t)1 << 36)
/* The Coroutine structure sits at the top of the mapping, cache-line aligned. */
#define CO_HEADER_SIZE ((sizeof(Coroutine) + 63) & ~(size_t)63)

_Atomic size_t co_map_size;

static _Atomic uint64_t co_created;
static _Atomic uint64_t co_destroyed;
/* Guard pages: true = madvise(MADV_GUARD_INSTALL), which does not split the mapping. */
static _Atomic bool co_guard_light;

static struct {
    pthread_mutex_t lock;
    Coroutine *head;
    size_t count;
} co_shared = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_key_t co_pool_key;
static pthread_once_t co_pool_once = PTHREAD_ONCE_INIT;

static size_t co_page_size(void)
{
    static size_t page;

    if (page == 0) {
        page = (size_t)sysconf(_SC_PAGESIZE);
    }
    return page;
}

static size_t co_map_size_for(size_t stack_bytes)
{
    size_t page = co_page_size();

    return ((stack_bytes + page - 1) & ~(page - 1)) + page;
}

static size_t co_current_map_size(void)
{
    size_t size = atomic_load_explicit(&co_map_size, memory_order_relaxed);

    if (size == 0) {
        size_t dflt = co_map_size_for(CO_STACK_DEFAULT);

        atomic_compare_exchange_strong(&co_map_size, &size, dflt);
        size = atomic_load_explicit(&co_map_size, memory_order_relaxed);
    }
    return size;
}

/*
 * Whether madvise(MADV_GUARD_INSTALL) really makes a page fault. Emulators
 * (qemu-user) accept unknown advice and do nothing, so trust the call only if
 * reading a guarded page through the kernel fails with EFAULT.
 */
static void co_guard_probe(void)
{
    size_t page = co_page_size();
    char *p;
    char byte;
    struct iovec local = { &byte, 1 };
    struct iovec remote;
    bool works = false;

    p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return;
    }
    remote = (struct iovec){ p, 1 };
    if (madvise(p, page, MADV_GUARD_INSTALL) == 0) {
        works = process_vm_readv(getpid(), &local, 1, &remote, 1, 0) < 0 && errno == EFAULT;
    }
    munmap(p, page);
    atomic_store_explicit(&co_guard_light, works, memory_order_relaxed);
}

/*
 * Makes the lowest page of a stack inaccessible. A lightweight guard region
 * keeps the mapping whole, so 100k stacks do not need 200k kernel mappings
 * (vm.max_map_count is 65530 by default); older kernels get mprotect().
 */
static int co_guard_install(void *base, size_t len)
{
    static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

    pthread_once(&probe_once, co_guard_probe);
    if (atomic_load_explicit(&co_guard_light, memory_order_relaxed) &&
        madvise(base, len, MADV_GUARD_INSTALL) == 0) {
        return 0;
    }
    if (mprotect(base, len, PROT_NONE) < 0) {
        return -errno;
    }
    return 0;
}

static Coroutine *co_stack_new(size_t map_size)
{
    size_t page = co_page_size();
    char *base;
    Coroutine *co;
    int ret;

    base = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) {
        co_die("cannot map a %zu-byte coroutine stack: %s", map_size, strerror(errno));
    }
    ret = co_guard_install(base, page);
    if (ret < 0) {
        co_die("cannot install a coroutine stack guard page: %s", strerror(-ret));
    }
    co = (Coroutine *)(base + map_size - CO_HEADER_SIZE);
    co->map_base = base;
    co->map_size = map_size;
    co->stack = base + page;
    co->stack_size = (size_t)((char *)co - (base + page));
#if COBLK_HAVE_VALGRIND
    co->valgrind_stack_id =
        VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + co->stack_size);
#endif
    co_context_init(co);
    atomic_fetch_add_explicit(&co_created, 1, memory_order_relaxed);
    return co;
}

static void co_stack_free(Coroutine *co)
{
#if COBLK_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
#endif
    co_san_unmap(co);
    munmap(co->map_base, co->map_size);
    atomic_fetch_add_explicit(&co_destroyed, 1, memory_order_relaxed);
}

static void co_free_list(Coroutine *co)
{
    while (co != NULL) {
        Coroutine *next = co->pool_next;

        co_stack_free(co);
        co = next;
    }
}

/* Moves up to max coroutines from the front of *list to the shared pool. */
static void co_shared_give(Coroutine **list, size_t *count, size_t max)
{
    Coroutine *rest = NULL;

    pthread_mutex_lock(&co_shared.lock);
    while (*list != NULL && max > 0) {
        Coroutine *co = *list;

        *list = co->pool_next;
        (*count)--;
        max--;
        if (co_shared.count < CO_POOL_SHARED_MAX) {
            co->pool_next = co_shared.head;
            co_shared.head = co;
            co_shared.count++;
        } else {
            co->pool_next = rest;
            rest = co;
        }
    }
    pthread_mutex_unlock(&co_shared.lock);
    co_free_list(rest);
}

/* Moves a batch from the shared pool to t's list; returns how many. */
static size_t co_shared_take(CoThread *t)
{
    size_t n = 0;

    pthread_mutex_lock(&co_shared.lock);
    while (co_shared.head != NULL && n < CO_POOL_BATCH) {
        Coroutine *co = co_shared.head;

        co_shared.head = co->pool_next;
        co_shared.count--;
        co->pool_next = t->pool_head;
        t->pool_head = co;
        t->pool_count++;
        n++;
    }
    pthread_mutex_unlock(&co_shared.lock);
    return n;
}

static void co_pool_thread_exit(void *arg)
{
    CoThread *t = arg;

    co_shared_give(&t->pool_head, &t->pool_count, SIZE_MAX);
    t->pool_key_set = false;
}

static void co_pool_key_create(void)
{
    if (pthread_key_create(&co_pool_key, co_pool_thread_exit) != 0) {
        co_die("cannot create the coroutine pool thread key");
    }
}

/* Arms the destructor that hands t's pool over when the thread exits. */
static void co_pool_arm(CoThread *t)
{
    if (t->pool_key_set) {
        return;
    }
    pthread_once(&co_pool_once, co_pool_key_create);
    if (pthread_setspecific(co_pool_key, t) != 0) {
        co_die("cannot register the coroutine pool of a thread");
    }
    t->pool_key_set = true;
}

Coroutine *co_pool_get_slow(CoThread *t)
{
    size_t want = co_current_map_size();

    if (!COBLK_POOLS) {
        return co_stack_new(want);
    }
    for (;;) {
        Coroutine *co = t->pool_head;

        if (co != NULL) {
            t->pool_head = co->pool_next;
            t->pool_count--;
            if (co->map_size == want) {
                return co;
            }
            co_stack_free(co); /* left over from an older stack size */
            continue;
        }
        if (co_shared_take(t) == 0) {
            break;
        }
    }
    co_pool_arm(t);
    return co_stack_new(want);
}

void co_pool_put_slow(CoThread *t, Coroutine *co)
{
    if (!COBLK_POOLS || co->map_size != co_current_map_size()) {
        co_stack_free(co);
        return;
    }
    co_shared_give(&t->pool_head, &t->pool_count, CO_POOL_BATCH);
    co->pool_next = t->pool_head;
    t->pool_head = co;
    t->pool_count++;
}

/* Unmaps the coroutines of *list whose mapping size is not keep (all if keep is 0). */
static void co_filter_list(Coroutine **list, size_t *count, size_t keep)
{
    Coroutine **link = list;

    while (*link != NULL) {
        Coroutine *co = *link;

        if (keep != 0 && co->map_size == keep) {
            link = &co->pool_next;
            continue;
        }
        *link = co->pool_next;
        (*count)--;
        co_stack_free(co);
    }
}

static void co_pool_filter(size_t keep)
{
    CoThread *t = co_thread();
    Coroutine *shared;
    size_t shared_count;

    co_filter_list(&t->pool_head, &t->pool_count, keep);

    /* Unmap outside the lock: take the list, filter it, put back what is kept. */
    pthread_mutex_lock(&co_shared.lock);
    shared = co_shared.head;
    shared_count = co_shared.count;
    co_shared.head = NULL;
    co_shared.count = 0;
    pthread_mutex_unlock(&co_shared.lock);

    co_filter_list(&shared, &shared_count, keep);
    co_shared_give(&shared, &shared_count, SIZE_MAX);
}

int coroutine_set_stack_size(size_t bytes)
{
    size_t map_size;

    if (bytes > CO_STACK_MAX) {
        return -EINVAL;
    }
    if (bytes < CO_STACK_MIN) {
        bytes = CO_STACK_MIN;
    }
    map_size = co_map_size_for(bytes);
    atomic_store_explicit(&co_map_size, map_size, memory_order_relaxed);
    co_pool_filter(map_size);
    return 0;
}

void coroutine_pool_stats(CoroutinePoolStats *stats)
{
    CoThread *t = co_thread();

    stats->created = atomic_load_explicit(&co_created, memory_order_relaxed);
    stats->destroyed = atomic_load_explicit(&co_destroyed, memory_order_relaxed);
    stats->local_free = t->pool_count;
    pthread_mutex_lock(&co_shared.lock);
    stats->shared_free = co_shared.count;
    pthread_mutex_unlock(&co_shared.lock);
}

void coroutine_pool_drain(void)
{
    co_pool_filter(0);
}
