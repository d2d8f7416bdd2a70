/*
 * coblk - floating-point control modes for the ucontext switch on
 * architectures without a dedicated file: the whole C99 floating-point
 * environment (it also carries the status flags, which is harmless).
 */
#include "coblk-config.h"

#include "coroutine/switch.h"

void co_fp_save(CoFpMode *mode)
{
    fegetenv(&mode->env);
}

void co_fp_restore(const CoFpMode *mode)
{
    fesetenv(&mode->env);
}
