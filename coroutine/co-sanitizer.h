/*
 * coblk - AddressSanitizer fiber annotations around every context switch.
 *
 * ASan must know which stack is live to tell stack accesses from wild ones:
 * before a switch we announce the target stack, after it we confirm the
 * arrival. A coroutine that terminates passes no fake-stack slot so ASan
 * frees its fake frames. The thread's own stack bounds are learnt from the
 * first switch away from it. Everything here compiles to nothing without ASan.
 * Not installed.
 */
#ifndef COBLK_COROUTINE_CO_SANITIZER_H
#define COBLK_COROUTINE_CO_SANITIZER_H

#include "coroutine/co-thread.h"

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif

#ifdef CO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

/* Announces a switch from `from` (NULL slot if it is terminating) to `to`. */
static inline void co_san_leave(Coroutine *from, Coroutine *to, bool dying)
{
    __sanitizer_start_switch_fiber(dying ? NULL : &from->asan_fake_stack, to->stack,
                                   to->stack_size);
}

/* Confirms that `self` runs again; learns the thread stack if we came from it. */
static inline void co_san_arrive(Coroutine *self)
{
    const void *bottom;
    size_t size;

    __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
    self->asan_fake_stack = NULL;
    if (self->map_base != NULL && self->caller == NULL) {
        Coroutine *leader = &co_thread_fresh()->leader;
        if (leader->stack == NULL) {
            leader->stack = (void *)bottom;
            leader->stack_size = size;
        }
    }
}

/* Clears the shadow of a stack about to be unmapped, so a new mapping starts clean. */
static inline void co_san_unmap(Coroutine *co)
{
    __asan_unpoison_memory_region(co->stack, co->stack_size);
}

/*
 * The boot of a ucontext stack (switch-ucontext.c): jump onto the new stack,
 * learn the old one there, and jump back, dropping the boot's fake frames.
 */
static inline void co_san_boot_start(void **fake, const void *stack, size_t size)
{
    __sanitizer_start_switch_fiber(fake, stack, size);
}

static inline void co_san_boot_arrive(const void **old_stack, size_t *old_size)
{
    __sanitizer_finish_switch_fiber(NULL, old_stack, old_size);
}

static inline void co_san_boot_leave(const void *old_stack, size_t old_size)
{
    __sanitizer_start_switch_fiber(NULL, old_stack, old_size);
}

static inline void co_san_boot_done(void *fake)
{
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
}
#else
static inline void co_san_leave(Coroutine *from, Coroutine *to, bool dying)
{
}

static inline void co_san_arrive(Coroutine *self)
{
}

static inline void co_san_unmap(Coroutine *co)
{
}

static inline void co_san_boot_start(void **fake, const void *stack, size_t size)
{
}

static inline void co_san_boot_arrive(const void **old_stack, size_t *old_size)
{
}

static inline void co_san_boot_leave(const void *old_stack, size_t old_size)
{
}

static inline void co_san_boot_done(void *fake)
{
}
#endif

#endif /* COBLK_COROUTINE_CO_SANITIZER_H */
