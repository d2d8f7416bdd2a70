/*
 * coblk - floating-point control modes for the ucontext switch on x86-64:
 * MXCSR and the x87 control word, the two the System V ABI makes callee-saved.
 */
#include "coblk-config.h"

#include "coroutine/switch.h"

void co_fp_save(CoFpMode *mode)
{
    uint32_t mxcsr;
    uint16_t cw;

    __asm__ __volatile__("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(cw));
    mode->bits = ((uint64_t)cw << 32) | mxcsr;
}

void co_fp_restore(const CoFpMode *mode)
{
    uint32_t mxcsr = (uint32_t)mode->bits;
    uint16_t cw = (uint16_t)(mode->bits >> 32);

    __asm__ __volatile__("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(cw));
}
