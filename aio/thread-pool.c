/*
 * A bounded pool of worker threads per AioContext, for blocking calls.
 *
 * Workers are started lazily while there is more queued work than idle
 * workers, up to the context's bound, and exit after sitting idle for a few
 * seconds. A finished work item goes on a done list and a reusable BH of the
 * submitting context runs its completion there. Work items belong to the
 * submitter (no allocation per request).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "aio/engine-int.h"

#define THREAD_POOL_DEFAULT_MAX 64
#define THREAD_POOL_IDLE_SECONDS 5

struct ThreadPool {
    AioContext *ctx;

    pthread_mutex_t lock;      /* protects everything down to stopping */
    pthread_cond_t work_cond;  /* signalled when work is queued */
    pthread_cond_t exit_cond;  /* signalled when the last worker exits */
    ThreadPoolWork *queue_head;
    ThreadPoolWork *queue_tail;
    unsigned queued;
    int threads;               /* live workers */
    int idle_threads;          /* workers not running a work item */
    int max_threads;
    bool stopping;

    pthread_mutex_t done_lock; /* protects done_head */
    ThreadPoolWork *done_head; /* LIFO of finished items */
    AioBH *done_bh;
};

static void thread_pool_push_done(ThreadPool *pool, ThreadPoolWork *w)
{
    bool first;

    pthread_mutex_lock(&pool->done_lock);
    first = !pool->done_head;
    w->next = pool->done_head;
    pool->done_head = w;
    pthread_mutex_unlock(&pool->done_lock);
    /* A non-empty list means the BH is scheduled and has not taken it yet. */
    if (first) {
        aio_bh_schedule(pool->done_bh);
    }
}

/* BH in the submitting context: runs completions in submission order. */
static void thread_pool_done_bh(void *opaque)
{
    ThreadPool *pool = opaque;
    ThreadPoolWork *list, *fifo = NULL;

    pthread_mutex_lock(&pool->done_lock);
    list = pool->done_head;
    pool->done_head = NULL;
    pthread_mutex_unlock(&pool->done_lock);

    while (list) {
        ThreadPoolWork *next = list->next;

        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        ThreadPoolWork *next = fifo->next;

        /* done may wake a coroutine that frees fifo: read next first. */
        fifo->done(fifo);
        fifo = next;
    }
}

/* Called with pool->lock held; returns NULL when the worker should exit. */
static ThreadPoolWork *thread_pool_wait_work(ThreadPool *pool)
{
    struct timespec deadline;
    ThreadPoolWork *w;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += THREAD_POOL_IDLE_SECONDS;
    while (!pool->queue_head) {
        if (pool->stopping || pool->threads > pool->max_threads) {
            return NULL;
        }
        if (pthread_cond_timedwait(&pool->work_cond, &pool->lock, &deadline) == ETIMEDOUT &&
            !pool->queue_head) {
            return NULL;
        }
    }
    w = pool->queue_head;
    pool->queue_head = w->next;
    if (!pool->queue_head) {
        pool->queue_tail = NULL;
    }
    pool->queued--;
    return w;
}

static void *thread_pool_worker(void *opaque)
{
    ThreadPool *pool = opaque;
    ThreadPoolWork *w;

    pthread_mutex_lock(&pool->lock);
    while ((w = thread_pool_wait_work(pool)) != NULL) {
        pool->idle_threads--;
        pthread_mutex_unlock(&pool->lock);

        w->ret = w->fn(w->opaque);
        thread_pool_push_done(pool, w);

        pthread_mutex_lock(&pool->lock);
        pool->idle_threads++;
    }
    pool->idle_threads--;
    pool->threads--;
    if (pool->threads == 0) {
        pthread_cond_broadcast(&pool->exit_cond);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Starts one detached worker with every signal blocked. Called with lock held. */
static int thread_pool_spawn(ThreadPool *pool)
{
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int ret;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ret = pthread_create(&tid, &attr, thread_pool_worker, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (ret != 0) {
        return -ret;
    }
    pthread_setname_np(tid, "coblk-worker");
    pool->threads++;
    pool->idle_threads++;
    return 0;
}

/*
 * Runs the queue inline when no worker exists and none can be started, so
 * that every queued item still completes. Called with lock held.
 */
static void thread_pool_run_inline(ThreadPool *pool)
{
    while (pool->queue_head) {
        ThreadPoolWork *w = pool->queue_head;

        pool->queue_head = w->next;
        pool->queued--;
        w->ret = w->fn(w->opaque);
        thread_pool_push_done(pool, w);
    }
    pool->queue_tail = NULL;
}

/* Starts workers while queued work outnumbers idle ones. Called with lock held. */
static void thread_pool_grow(ThreadPool *pool)
{
    while ((unsigned)pool->idle_threads < pool->queued && pool->threads < pool->max_threads) {
        if (thread_pool_spawn(pool) < 0) {
            break;
        }
    }
    if (pool->threads == 0) {
        thread_pool_run_inline(pool);
    }
}

static int thread_pool_max_of(AioContext *ctx)
{
    return ctx->thread_pool_max > 0 ? ctx->thread_pool_max : THREAD_POOL_DEFAULT_MAX;
}

static ThreadPool *thread_pool_new(AioContext *ctx)
{
    ThreadPool *pool = calloc(1, sizeof(*pool));
    pthread_condattr_t cattr;

    if (!pool) {
        abort();
    }
    pool->ctx = ctx;
    pool->max_threads = thread_pool_max_of(ctx);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_mutex_init(&pool->done_lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &cattr);
    pthread_cond_init(&pool->exit_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pool->done_bh = aio_bh_new(ctx, thread_pool_done_bh, pool);
    return pool;
}

static ThreadPool *thread_pool_get(AioContext *ctx)
{
    if (!ctx->thread_pool) {
        ctx->thread_pool = thread_pool_new(ctx);
    }
    return ctx->thread_pool;
}

unsigned thread_pool_submit_chain(AioContext *ctx, ThreadPoolWork *head)
{
    ThreadPool *pool = thread_pool_get(ctx);
    ThreadPoolWork *tail = head;
    unsigned n = 1;

    assert(head);
    while (tail->next) {
        tail = tail->next;
        n++;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->queue_tail) {
        pool->queue_tail->next = head;
    } else {
        pool->queue_head = head;
    }
    pool->queue_tail = tail;
    pool->queued += n;
    /* One wake-up per item: a broadcast would wake every idle worker for a few items. */
    for (unsigned i = 0; i < n && i < (unsigned)pool->idle_threads; i++) {
        pthread_cond_signal(&pool->work_cond);
    }
    thread_pool_grow(pool);
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void thread_pool_free(ThreadPool *pool)
{
    if (!pool) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->threads > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);

    /* Completions still on the done list never ran: the context was not idle. */
    assert(!pool->done_head);
    aio_bh_delete(pool->done_bh);
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->exit_cond);
    pthread_mutex_destroy(&pool->done_lock);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

void aio_thread_pool_set_max(AioContext *ctx, int max_threads)
{
    ThreadPool *pool = ctx->thread_pool;

    if (max_threads < 1) {
        max_threads = 1;
    }
    ctx->thread_pool_max = max_threads;
    if (!pool) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->max_threads = max_threads;
    /* Idle workers above the new bound notice it and exit. */
    pthread_cond_broadcast(&pool->work_cond);
    thread_pool_grow(pool);
    pthread_mutex_unlock(&pool->lock);
}

void thread_pool_get_stats(AioContext *ctx, ThreadPoolStats *stats)
{
    ThreadPool *pool = ctx->thread_pool;

    stats->max_threads = thread_pool_max_of(ctx);
    stats->threads = 0;
    stats->idle_threads = 0;
    if (!pool) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    stats->threads = pool->threads;
    stats->idle_threads = pool->idle_threads;
    stats->max_threads = pool->max_threads;
    pthread_mutex_unlock(&pool->lock);
}

/* ---------------------------------------------------------------------- */
/* Coroutine front end */

typedef struct ThreadPoolCoWork {
    ThreadPoolWork w;
    Coroutine *co;
    bool done;
} ThreadPoolCoWork;

static void thread_pool_co_done(ThreadPoolWork *w)
{
    ThreadPoolCoWork *cw = (ThreadPoolCoWork *)w;

    cw->done = true;
    aio_co_wake(cw->co);
}

int64_t coroutine_fn thread_pool_co_run(AioContext *ctx, ThreadPoolFunc *fn, void *opaque)
{
    ThreadPoolCoWork cw = {
        .w = { .fn = fn, .opaque = opaque, .done = thread_pool_co_done },
        .co = coroutine_self(),
    };

    assert(cw.co);
    thread_pool_submit_chain(ctx, &cw.w);
    while (!cw.done) {
        coroutine_yield();
    }
    return cw.w.ret;
}
