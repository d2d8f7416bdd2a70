/*
 * coblk - portable context switch: makecontext() builds the first frame,
 * _setjmp()/_longjmp() switch (no signal-mask system call per switch).
 * Not installed.
 */
#ifndef COBLK_COROUTINE_SWITCH_UCONTEXT_H
#define COBLK_COROUTINE_SWITCH_UCONTEXT_H

#include <fenv.h>
#include <setjmp.h>

typedef struct CoSwitchCtx {
    jmp_buf env;  /* callee-saved registers and stack pointer */
    fenv_t fenv;  /* floating-point modes; setjmp does not keep them */
} CoSwitchCtx;

/* Saves the current context into from and resumes to (switch-ucontext.c). */
void co_switch(CoSwitchCtx *from, CoSwitchCtx *to);

/* Prepares ctx so that the first co_switch() into it calls fn(arg) on the stack. */
void co_switch_init(CoSwitchCtx *ctx, void *stack, size_t size, CoSwitchFn *fn, void *arg);

#endif /* COBLK_COROUTINE_SWITCH_UCONTEXT_H */
