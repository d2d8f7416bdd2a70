/*
 * coblk - portable context switch: makecontext() builds the first frame,
 * _setjmp()/_longjmp() switch (no signal-mask system call per switch).
 * Not installed.
 */
#ifndef COBLK_COROUTINE_SWITCH_UCONTEXT_H
#define COBLK_COROUTINE_SWITCH_UCONTEXT_H

#include <fenv.h>
#include <setjmp.h>
#include <stdint.h>

/*
 * Floating-point control modes, which _setjmp() does not keep. fpmode-<arch>.c
 * keeps just the control registers in bits; fpmode-fenv.c, for other
 * architectures, the whole environment.
 */
typedef union CoFpMode {
    uint64_t bits;
    fenv_t env;
} CoFpMode;

typedef struct CoSwitchCtx {
    jmp_buf env;   /* callee-saved registers and stack pointer */
    CoFpMode fp;
} CoSwitchCtx;

/* Saves the current context into from and resumes to (switch-ucontext.c). */
void co_switch(CoSwitchCtx *from, CoSwitchCtx *to);

/* Prepares ctx so that the first co_switch() into it calls fn(arg) on the stack. */
void co_switch_init(CoSwitchCtx *ctx, void *stack, size_t size, CoSwitchFn *fn, void *arg);

/* fpmode-*.c: saves / restores the calling thread's floating-point control modes. */
void co_fp_save(CoFpMode *mode);
void co_fp_restore(const CoFpMode *mode);

#endif /* COBLK_COROUTINE_SWITCH_UCONTEXT_H */
