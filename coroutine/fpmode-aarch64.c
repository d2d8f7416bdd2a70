/*
 * coblk - floating-point control modes for the ucontext switch on AArch64:
 * the FPCR, which AAPCS64 makes callee-saved.
 */
#include "coblk-config.h"

#include "coroutine/switch.h"

void co_fp_save(CoFpMode *mode)
{
    uint64_t fpcr;

    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    mode->bits = fpcr;
}

void co_fp_restore(const CoFpMode *mode)
{
    uint64_t fpcr;

    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    if (fpcr != mode->bits) {
        __asm__ __volatile__("msr fpcr, %0" : : "r"(mode->bits));
    }
}
