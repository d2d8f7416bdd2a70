/* Built against an installed libcoblk through pkg-config: the install works. */
#include <stdio.h>

#include <coblk/coblk.h>

static int done;

static void coroutine_fn hello(void *opaque)
{
    co_sleep_ns(1000);
    done = 1;
}

int main(void)
{
    Error *err = NULL;
    AioContext *ctx = aio_context_new(&err);

    if (!ctx) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    aio_co_enter(ctx, coroutine_create(hello, NULL));
    while (!done) {
        aio_poll(ctx, true);
    }
    aio_context_unref(ctx);
    printf("1 passed, 0 failed: installed libcoblk runs a coroutine\n");
    return 0;
}
