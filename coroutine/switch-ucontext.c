/*
 * coblk - portable coroutine context switch on top of ucontext.
 *
 * makecontext() is only used once per stack, to get a first frame on it:
 * the new context immediately records itself with _setjmp() and jumps back.
 * Every later switch is a _setjmp()/_longjmp() pair, which (unlike
 * swapcontext()) makes no signal-mask system call. _setjmp() does not keep
 * the floating-point modes, so they are saved beside the jump buffer.
 *
 * Under ASan the two switches of the boot sequence are announced like any
 * other (see co-sanitizer.h); the new context gives up its boot frames.
 */
#include "coblk-config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include "coroutine/co-sanitizer.h"
#include "coroutine/switch.h"

/* Handed to the new context while co_switch_init() waits for it. */
typedef struct CoBoot {
    CoSwitchCtx *ctx;
    CoSwitchFn *fn;
    void *arg;
    jmp_buf back;
    const void *back_stack;   /* ASan: the stack of co_switch_init() */
    size_t back_size;
} CoBoot;

/* makecontext() passes int arguments only: the pointer comes in two halves. */
static void co_switch_boot(unsigned int lo, unsigned int hi)
{
    CoBoot *boot = (CoBoot *)(uintptr_t)(((uint64_t)hi << 32) | lo);
    CoSwitchCtx *ctx = boot->ctx;
    CoSwitchFn *fn = boot->fn;
    void *arg = boot->arg;

    co_san_boot_arrive(&boot->back_stack, &boot->back_size);
    if (_setjmp(ctx->env) == 0) {
        co_san_boot_leave(boot->back_stack, boot->back_size);
        _longjmp(boot->back, 1);
    }
    /* boot is gone by now: only the copies above are used. */
    co_fp_restore(&ctx->fp);
    fn(arg);
    abort();
}

void co_switch_init(CoSwitchCtx *ctx, void *stack, size_t size, CoSwitchFn *fn, void *arg)
{
    CoBoot boot = { .ctx = ctx, .fn = fn, .arg = arg };
    ucontext_t first;
    uint64_t p = (uintptr_t)&boot;
    void *fake = NULL; /* ASan: our fake stack while the boot runs */

    if (getcontext(&first) < 0) {
        fprintf(stderr, "coblk: getcontext failed\n");
        abort();
    }
    first.uc_stack.ss_sp = stack;
    first.uc_stack.ss_size = size;
    first.uc_link = NULL;
    makecontext(&first, (void (*)(void))co_switch_boot, 2, (unsigned int)p,
                (unsigned int)(p >> 32));
    co_fp_save(&ctx->fp);
    if (_setjmp(boot.back) == 0) {
        co_san_boot_start(&fake, stack, size);
        setcontext(&first);
    }
    co_san_boot_done(fake);
}

void co_switch(CoSwitchCtx *from, CoSwitchCtx *to)
{
    co_fp_save(&from->fp);
    if (_setjmp(from->env) == 0) {
        _longjmp(to->env, 1);
    }
    co_fp_restore(&from->fp);
}
