/*
 * coblk - coroutine context switch for AArch64 (AAPCS64).
 *
 * Callee-saved state per the procedure call standard: x19-x28, the frame
 * pointer x29, the link register x30, sp, the low 64 bits of v8-v15 (d8-d15)
 * and the FPCR modes. A suspended context keeps all of it on its own stack in
 * this 176-byte frame, and CoSwitchCtx holds only the stack pointer:
 *
 *     sp+0    x19 x20 x21 x22 x23 x24 x25 x26 x27 x28 x29 x30
 *     sp+96   d8 d9 d10 d11 d12 d13 d14 d15
 *     sp+160  FPCR, padding
 */

#define FRAME 176

    .text

/* void co_switch(CoSwitchCtx *from, CoSwitchCtx *to) */
    .globl  co_switch
    .hidden co_switch
    .type   co_switch, %function
    .p2align 4
co_switch:
    .cfi_startproc
    sub     sp, sp, #FRAME
    .cfi_adjust_cfa_offset FRAME
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    .cfi_rel_offset x29, 80
    .cfi_rel_offset x30, 88
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x10, fpcr
    str     x10, [sp, #160]

    mov     x9, sp
    str     x9, [x0]
    ldr     x9, [x1]
    mov     sp, x9

    /* Writing FPCR can stall the pipeline: skip it when nothing changes. */
    ldr     x9, [sp, #160]
    cmp     x9, x10
    b.eq    1f
    msr     fpcr, x9
1:
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #FRAME
    .cfi_adjust_cfa_offset -FRAME
    .cfi_restore x29
    .cfi_restore x30
    ret
    .cfi_endproc
    .size   co_switch, . - co_switch

/*
 * First code run by a new context: co_switch() "returns" here with x19 = arg,
 * x20 = fn and sp 16-byte aligned. fn never returns.
 */
    .type   co_switch_trampoline, %function
    .p2align 4
co_switch_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    mov     x29, xzr
    mov     x0, x19
    blr     x20
    brk     #0
    .cfi_endproc
    .size   co_switch_trampoline, . - co_switch_trampoline

/*
 * void co_switch_prepare(CoSwitchCtx *ctx, void *stack_top, CoSwitchFn *fn, void *arg)
 *
 * x0 = ctx, x1 = stack_top, x2 = fn, x3 = arg.
 */
    .globl  co_switch_prepare
    .hidden co_switch_prepare
    .type   co_switch_prepare, %function
    .p2align 4
co_switch_prepare:
    .cfi_startproc
    and     x1, x1, #~15
    sub     x1, x1, #FRAME
    stp     x3, x2, [x1, #0]
    stp     xzr, xzr, [x1, #16]
    stp     xzr, xzr, [x1, #32]
    stp     xzr, xzr, [x1, #48]
    stp     xzr, xzr, [x1, #64]
    adr     x9, co_switch_trampoline
    stp     xzr, x9, [x1, #80]
    stp     xzr, xzr, [x1, #96]
    stp     xzr, xzr, [x1, #112]
    stp     xzr, xzr, [x1, #128]
    stp     xzr, xzr, [x1, #144]
    mrs     x9, fpcr
    stp     x9, xzr, [x1, #160]
    str     x1, [x0]
    ret
    .cfi_endproc
    .size   co_switch_prepare, . - co_switch_prepare

    .section .note.GNU-stack, "", %progbits
