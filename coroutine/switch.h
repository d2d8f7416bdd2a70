/*
 * coblk - machine context of a coroutine, for the backend chosen by meson.
 *
 * Both backends provide the same two operations:
 *
 *   co_switch_init(ctx, stack, size, fn, arg)
 *       prepares ctx so that the first co_switch() into it calls fn(arg) on
 *       the given stack. fn must never return.
 *   co_switch(from, to)
 *       saves the callee-saved machine state (including the floating-point
 *       control modes, which the ABIs make callee-saved) into from and resumes
 *       to. Returns when something switches back into from.
 *
 * Not installed.
 */
#ifndef COBLK_COROUTINE_SWITCH_H
#define COBLK_COROUTINE_SWITCH_H

#include <stddef.h>

#include "coblk-config.h"

typedef void CoSwitchFn(void *arg);

#if COBLK_COROUTINE_ASM
#include "coroutine/switch-asm.h"
#else
#include "coroutine/switch-ucontext.h"
#endif

#endif /* COBLK_COROUTINE_SWITCH_H */
