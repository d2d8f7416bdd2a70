/*
 * coblk - CoQueue and CoMutex.
 *
 * Waiters are CoWaitRecord nodes on the waiting coroutine's stack. A queue
 * edit happens under the lock's spin word; the wake-up happens after it is
 * released, since waking may enter the waiter at once.
 *
 * A waiter publishes its record, releases the spin word and only then
 * yields, so a coroutine of another thread may dequeue and wake it before it
 * has yielded. That is safe because such a wake goes through the remote-wake
 * hook to the waiter's home context, which cannot run it before the waiter
 * yields to it.
 */
#include "coblk-config.h"

#include "coroutine/lock-int.h"

/* ------------------------------------------------------------------------ */
/* CoQueue: protected by the CoMutex passed to co_queue_wait(), or used by  */
/* coroutines of one thread only.                                           */

void co_queue_init(CoQueue *q)
{
    q->head = NULL;
    q->tail = NULL;
}

void co_queue_wait(CoQueue *q, CoMutex *m)
{
    CoWaitRecord w = { .co = co_lock_self("co_queue_wait") };

    co_wait_push(&q->head, &q->tail, &w);
    if (m != NULL) {
        co_mutex_unlock(m);
    }
    coroutine_yield();
    if (m != NULL) {
        co_mutex_lock(m);
    }
}

bool co_queue_next(CoQueue *q)
{
    CoWaitRecord *w = co_wait_pop(&q->head, &q->tail);

    if (w == NULL) {
        return false;
    }
    coroutine_wake_internal(w->co);
    return true;
}

void co_queue_restart_all(CoQueue *q)
{
    CoWaitRecord *w = q->head;

    q->head = NULL;
    q->tail = NULL;
    co_wait_wake_chain(w);
}

bool co_queue_empty(const CoQueue *q)
{
    return q->head == NULL;
}

/* ------------------------------------------------------------------------ */
/* CoMutex: unlock hands the lock to the first waiter, which never retries. */

void co_mutex_init(CoMutex *m)
{
    m->spin = 0;
    m->locked = 0;
    m->holder = NULL;
    m->head = NULL;
    m->tail = NULL;
}

void co_mutex_lock(CoMutex *m)
{
    Coroutine *self = co_lock_self("co_mutex_lock");
    CoWaitRecord w = { .co = self };

    co_spin_lock(&m->spin);
    if (!m->locked) {
        m->locked = 1;
        m->holder = self;
        co_spin_unlock(&m->spin);
        return;
    }
    co_wait_push(&m->head, &m->tail, &w);
    co_spin_unlock(&m->spin);

    /* co_mutex_unlock() made us the holder before waking us. */
    coroutine_yield();
}

bool co_mutex_trylock(CoMutex *m)
{
    bool taken = false;

    co_spin_lock(&m->spin);
    if (!m->locked) {
        m->locked = 1;
        m->holder = coroutine_self();
        taken = true;
    }
    co_spin_unlock(&m->spin);
    return taken;
}

void co_mutex_unlock(CoMutex *m)
{
    CoWaitRecord *w;
    Coroutine *next = NULL;

    co_spin_lock(&m->spin);
    if (!m->locked) {
        co_spin_unlock(&m->spin);
        co_die("co_mutex_unlock(%p): the mutex is not locked", (void *)m);
    }
    w = co_wait_pop(&m->head, &m->tail);
    if (w != NULL) {
        next = w->co;
        m->holder = next;
    } else {
        m->locked = 0;
        m->holder = NULL;
    }
    co_spin_unlock(&m->spin);

    if (next != NULL) {
        coroutine_wake_internal(next);
    }
}

bool co_mutex_is_locked(const CoMutex *m)
{
    return atomic_load_explicit((const _Atomic unsigned *)&m->locked, memory_order_relaxed) != 0;
}
