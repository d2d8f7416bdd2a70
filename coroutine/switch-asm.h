/*
 * coblk - context switch implemented in assembly (switch-<arch>.S).
 *
 * The whole saved state lives on the suspended coroutine's own stack; the
 * context is just the saved stack pointer. Not installed.
 */
#ifndef COBLK_COROUTINE_SWITCH_ASM_H
#define COBLK_COROUTINE_SWITCH_ASM_H

typedef struct CoSwitchCtx {
    void *sp; /* stack pointer of the suspended context */
} CoSwitchCtx;

/* Saves the current context into from and resumes to (switch-<arch>.S). */
void co_switch(CoSwitchCtx *from, CoSwitchCtx *to);

/*
 * Builds an initial frame below stack_top (switch-<arch>.S) so that the first
 * co_switch() into ctx lands in a trampoline that calls fn(arg). The frame
 * takes the caller's current floating-point control modes.
 */
void co_switch_prepare(CoSwitchCtx *ctx, void *stack_top, CoSwitchFn *fn, void *arg);

static inline void co_switch_init(CoSwitchCtx *ctx, void *stack, size_t size, CoSwitchFn *fn,
                                  void *arg)
{
    co_switch_prepare(ctx, (char *)stack + size, fn, arg);
}

#endif /* COBLK_COROUTINE_SWITCH_ASM_H */
