/*
 * coblk - helpers shared by the coroutine locks (lock.c, rwlock.c).
 * Not installed.
 */
#ifndef COBLK_COROUTINE_LOCK_INT_H
#define COBLK_COROUTINE_LOCK_INT_H

#include <stdatomic.h>

#include "coroutine/co-thread.h"

#if defined(__x86_64__) || defined(__i386__)
#define co_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define co_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define co_cpu_relax() ((void)0)
#endif

/*
 * The `spin` word of a lock: held for a handful of instructions while its
 * queue is edited, so that coroutines of several threads can share the lock.
 * It never covers a wait for the lock itself, nor a wake-up.
 */
static inline void co_spin_lock(int *spin)
{
    _Atomic int *s = (_Atomic int *)spin;

    while (atomic_exchange_explicit(s, 1, memory_order_acquire) != 0) {
        while (atomic_load_explicit(s, memory_order_relaxed) != 0) {
            co_cpu_relax();
        }
    }
}

static inline void co_spin_unlock(int *spin)
{
    atomic_store_explicit((_Atomic int *)spin, 0, memory_order_release);
}

/* Appends w to the FIFO head/tail. */
static inline void co_wait_push(CoWaitRecord **head, CoWaitRecord **tail, CoWaitRecord *w)
{
    w->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = w;
    } else {
        *head = w;
    }
    *tail = w;
}

/* Removes and returns the first record of head/tail, or NULL. */
static inline CoWaitRecord *co_wait_pop(CoWaitRecord **head, CoWaitRecord **tail)
{
    CoWaitRecord *w = *head;

    if (w != NULL) {
        *head = w->next;
        if (*head == NULL) {
            *tail = NULL;
        }
    }
    return w;
}

/* Wakes the records of a detached chain, reading each link before its owner can run. */
static inline void co_wait_wake_chain(CoWaitRecord *w)
{
    while (w != NULL) {
        CoWaitRecord *next = w->next;

        coroutine_wake_internal(w->co);
        w = next;
    }
}

/* The running coroutine; locks may only wait in coroutine context. */
static inline Coroutine *co_lock_self(const char *fn)
{
    Coroutine *self = coroutine_self();

    if (self == NULL) {
        co_die("%s() called outside coroutine context", fn);
    }
    return self;
}

#endif /* COBLK_COROUTINE_LOCK_INT_H */
