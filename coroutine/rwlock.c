/*
 * coblk - CoRwlock: a readers-writer lock for coroutines.
 *
 * One FIFO holds readers and writers alike. A reader gets in at once only
 * when no writer holds the lock and nobody queues; otherwise it waits its
 * turn, so a queued writer is never starved by readers arriving after it.
 * Whoever releases the lock grants it to the head of the queue: one writer,
 * or every reader up to the next writer. Grants are made on behalf of the
 * waiter (its count is taken before it is woken), as with CoMutex.
 */
#include "coblk-config.h"

#include "coroutine/lock-int.h"

enum {
    CO_WAIT_READ = 0,
    CO_WAIT_WRITE = 1,
};

void co_rwlock_init(CoRwlock *l)
{
    l->spin = 0;
    l->readers = 0;
    l->head = NULL;
    l->tail = NULL;
}

/*
 * Called under l->spin after the lock's state changed: grants the lock to the
 * longest waiters it can satisfy, detaches them from the queue and returns
 * them as a chain for co_wait_wake_chain() once the spin word is released.
 */
static CoWaitRecord *co_rwlock_grant(CoRwlock *l)
{
    CoWaitRecord *first = l->head;
    CoWaitRecord *last = NULL;
    CoWaitRecord *w;

    while ((w = l->head) != NULL) {
        if (w->kind == CO_WAIT_WRITE) {
            if (l->readers != 0) {
                break;
            }
            l->readers = -1;
        } else {
            if (l->readers < 0) {
                break;
            }
            l->readers++;
        }
        co_wait_pop(&l->head, &l->tail);
        last = w;
        if (l->readers < 0) {
            break;
        }
    }
    if (last == NULL) {
        return NULL;
    }
    last->next = NULL;
    return first;
}

/* Queues self at the tail (or the head) of l, releases the spin word and waits. */
static void co_rwlock_wait(CoRwlock *l, int kind, bool at_head)
{
    CoWaitRecord w = { .co = co_lock_self("co_rwlock_lock"), .kind = kind };

    if (at_head) {
        w.next = l->head;
        /* The record lives on this coroutine's stack until it is woken and unlinked. */
        /* cppcheck-suppress autoVariables */
        l->head = &w;
        if (l->tail == NULL) {
            /* cppcheck-suppress autoVariables */
            l->tail = &w;
        }
    } else {
        co_wait_push(&l->head, &l->tail, &w);
    }
    co_spin_unlock(&l->spin);
    coroutine_yield();
}

void co_rwlock_rdlock(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (l->readers >= 0 && l->head == NULL) {
        l->readers++;
        co_spin_unlock(&l->spin);
        return;
    }
    co_rwlock_wait(l, CO_WAIT_READ, false);
}

void co_rwlock_wrlock(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (l->readers == 0 && l->head == NULL) {
        l->readers = -1;
        co_spin_unlock(&l->spin);
        return;
    }
    co_rwlock_wait(l, CO_WAIT_WRITE, false);
}

void co_rwlock_unlock(CoRwlock *l)
{
    CoWaitRecord *woken;

    co_spin_lock(&l->spin);
    if (l->readers == 0) {
        co_spin_unlock(&l->spin);
        co_die("co_rwlock_unlock(%p): the lock is not held", (void *)l);
    }
    if (l->readers < 0) {
        l->readers = 0;
    } else {
        l->readers--;
    }
    woken = co_rwlock_grant(l);
    co_spin_unlock(&l->spin);
    co_wait_wake_chain(woken);
}

void co_rwlock_downgrade(CoRwlock *l)
{
    CoWaitRecord *woken;

    co_spin_lock(&l->spin);
    if (l->readers != -1) {
        co_spin_unlock(&l->spin);
        co_die("co_rwlock_downgrade(%p): the lock is not write-locked", (void *)l);
    }
    l->readers = 1;
    woken = co_rwlock_grant(l);
    co_spin_unlock(&l->spin);
    co_wait_wake_chain(woken);
}

/*
 * The sole reader becomes the writer at once. Otherwise the caller gives up
 * its read hold and waits as a writer at the head of the queue: nobody can
 * get in before it, and two upgraders cannot deadlock by each waiting for the
 * other's read hold (the second one to queue goes first).
 */
void co_rwlock_upgrade(CoRwlock *l)
{
    co_spin_lock(&l->spin);
    if (l->readers <= 0) {
        co_spin_unlock(&l->spin);
        co_die("co_rwlock_upgrade(%p): the lock is not read-locked", (void *)l);
    }
    if (l->readers == 1) {
        l->readers = -1;
        co_spin_unlock(&l->spin);
        return;
    }
    l->readers--;
    co_rwlock_wait(l, CO_WAIT_WRITE, true);
}
