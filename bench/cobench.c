/*
 * coblk-cobench - micro-benchmark of the coroutine runtime (not a test).
 *
 * Prints, for the context-switch backend built in:
 *   switch     ns per context switch (an enter + yield round trip is two)
 *   lifecycle  ns per pooled create + enter + terminate
 *
 * Usage: coblk-cobench [iterations]   (default 20000000)
 * Each figure is the best of five runs, to keep scheduler noise out.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <coblk/coroutine.h>

#include "coblk-config.h"

#define RUNS 5

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void coroutine_fn bench_yield_loop(void *opaque)
{
    const uint64_t *iters = opaque;

    for (uint64_t i = 0; i < *iters; i++) {
        coroutine_yield();
    }
}

static void coroutine_fn bench_nop(void *opaque)
{
    (void)opaque;
}

/* ns per switch: the coroutine yields, we enter it again, iters times. */
static double bench_switch(uint64_t iters)
{
    Coroutine *co = coroutine_create(bench_yield_loop, &iters);
    uint64_t start = now_ns();

    for (uint64_t i = 0; i <= iters; i++) {
        coroutine_enter(co);
    }
    return (double)(now_ns() - start) / (double)(2 * (iters + 1));
}

/* ns per create + enter + terminate of a pooled coroutine. */
static double bench_lifecycle(uint64_t iters)
{
    uint64_t start = now_ns();

    for (uint64_t i = 0; i < iters; i++) {
        coroutine_enter(coroutine_create(bench_nop, NULL));
    }
    return (double)(now_ns() - start) / (double)iters;
}

static double best_of(double (*fn)(uint64_t), uint64_t iters)
{
    double best = 1e9;

    (void)fn(iters / 10); /* warm-up: fills the pool, faults the stacks in */
    for (int i = 0; i < RUNS; i++) {
        double v = fn(iters);

        if (v < best) {
            best = v;
        }
    }
    return best;
}

int main(int argc, char **argv)
{
    uint64_t iters = argc > 1 ? strtoull(argv[1], NULL, 0) : 20000000ULL;
    CoroutinePoolStats before;
    CoroutinePoolStats after;
    double sw;
    double life;

    if (iters == 0) {
        fprintf(stderr, "usage: %s [iterations]\n", argv[0]);
        return 2;
    }
    sw = best_of(bench_switch, iters);
    coroutine_pool_stats(&before);
    life = best_of(bench_lifecycle, iters);
    coroutine_pool_stats(&after);

    printf("backend=%s pools=%d iterations=%" PRIu64 "\n", COBLK_COROUTINE_BACKEND,
           COBLK_POOLS, iters);
    printf("switch: %.2f ns\n", sw);
    printf("lifecycle: %.2f ns (create+enter+terminate; %" PRIu64 " stacks mapped)\n", life,
           after.created - before.created);
    return 0;
}
