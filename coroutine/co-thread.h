/*
 * coblk - per-thread state of the coroutine runtime, shared by coroutine.c
 * (switching) and pool.c (stacks and pools). Not installed.
 */
#ifndef COBLK_COROUTINE_CO_THREAD_H
#define COBLK_COROUTINE_CO_THREAD_H

#include <stdbool.h>
#include <stdnoreturn.h>

#include "coroutine/coroutine-int.h"

#if defined(__GNUC__)
#define co_likely(x) __builtin_expect(!!(x), 1)
#define co_unlikely(x) __builtin_expect(!!(x), 0)
#else
#define co_likely(x) (x)
#define co_unlikely(x) (x)
#endif

/* The local pool is refilled from and spilled to the shared one in batches. */
#define CO_POOL_LOCAL_MAX 256
#define CO_POOL_BATCH 64
#define CO_POOL_SHARED_MAX 1024

typedef struct CoThread {
    Coroutine *current;        /* running coroutine; NULL on the thread's own stack */
    struct AioContext *ctx;    /* coroutine_thread_ctx() */
    Coroutine *pool_head;      /* free coroutines of this thread */
    size_t pool_count;
    bool pool_key_set;         /* the thread-exit destructor is armed */
    /*
     * Stands for the thread's own stack when switching back to it: only its
     * sw field and the sanitizer bookkeeping (stack bounds, fake stack) are used.
     */
    Coroutine leader;
} CoThread;

/*
 * initial-exec: one %fs/tpidr-relative access instead of a __tls_get_addr()
 * call. The block is small, so the library can still be dlopen()ed.
 *
 * A coroutine may be resumed on another thread, and a compiler may keep the
 * address of a thread-local variable in a register for the length of a
 * function: code that can resume after a switch in another thread must not
 * use an address taken before it (see co_terminate()).
 */
extern __thread CoThread co_thread_tls __attribute__((tls_model("initial-exec")));

static inline CoThread *co_thread(void)
{
    return &co_thread_tls;
}

/* As co_thread(), but never folded with an address computed before a switch. */
CoThread *co_thread_fresh(void) __attribute__((noinline));

/* Mapping size (stack + guard page) of new coroutines; see coroutine_set_stack_size(). */
extern _Atomic size_t co_map_size;

/* pool.c: slow paths, taken when the local pool is empty, full or stale. */
Coroutine *co_pool_get_slow(CoThread *t);
void co_pool_put_slow(CoThread *t, Coroutine *co);

/* coroutine.c: gives a newly mapped coroutine its first machine context. */
void co_context_init(Coroutine *co);

/* Prints "coblk: <msg>" to stderr and aborts. */
noreturn void co_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), cold));

#endif /* COBLK_COROUTINE_CO_THREAD_H */
