/*
 * coblk - coroutine context switch for x86-64 (System V ABI).
 *
 * Callee-saved state per the ABI: rbx, rbp, r12-r15, rsp, the control bits
 * of MXCSR and the x87 control word. A suspended context keeps all of it on
 * its own stack, in this frame (lowest address first), and CoSwitchCtx holds
 * only the stack pointer:
 *
 *     sp+0   MXCSR (4 bytes), x87 control word (2 bytes), padding
 *     sp+8   r15, r14, r13, r12, rbx, rbp
 *     sp+56  return address
 *
 * Both sides of a switch use the same frame layout, so the CFI below stays
 * valid across the stack change.
 */

    .text

/* void co_switch(CoSwitchCtx *from, CoSwitchCtx *to) */
    .globl  co_switch
    .hidden co_switch
    .type   co_switch, @function
    .p2align 4
co_switch:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    subq    $8, %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw  4(%rsp)

    movq    %rsp, (%rdi)
    movq    (%rsi), %rsp

    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    /*
     * This return goes to the other context's call site, so the return-stack
     * predictor misses here, once per switch. Replacing it with pop + jmp
     * only moves the miss to the caller's own return (measured: slower).
     */
    ret
    .cfi_endproc
    .size   co_switch, . - co_switch

/*
 * First code run by a new context: co_switch() "returns" here with rbx = arg
 * and r12 = fn, and rsp 16-byte aligned. fn never returns.
 */
    .type   co_switch_trampoline, @function
    .p2align 4
co_switch_trampoline:
    .cfi_startproc
    .cfi_undefined %rip
    xorl    %ebp, %ebp
    movq    %rbx, %rdi
    callq   *%r12
    ud2
    .cfi_endproc
    .size   co_switch_trampoline, . - co_switch_trampoline

/*
 * void co_switch_prepare(CoSwitchCtx *ctx, void *stack_top, CoSwitchFn *fn, void *arg)
 *
 * rdi = ctx, rsi = stack_top, rdx = fn, rcx = arg. Builds the frame described
 * above so that popping it leaves rsp 16-byte aligned at the trampoline.
 */
    .globl  co_switch_prepare
    .hidden co_switch_prepare
    .type   co_switch_prepare, @function
    .p2align 4
co_switch_prepare:
    .cfi_startproc
    andq    $-16, %rsi
    subq    $16, %rsi
    leaq    co_switch_trampoline(%rip), %rax
    movq    %rax, -8(%rsi)
    movq    $0, -16(%rsi)
    movq    %rcx, -24(%rsi)
    movq    %rdx, -32(%rsi)
    movq    $0, -40(%rsi)
    movq    $0, -48(%rsi)
    movq    $0, -56(%rsi)
    movq    $0, -64(%rsi)
    stmxcsr -64(%rsi)
    fnstcw  -60(%rsi)
    leaq    -64(%rsi), %rax
    movq    %rax, (%rdi)
    ret
    .cfi_endproc
    .size   co_switch_prepare, . - co_switch_prepare

    .section .note.GNU-stack, "", @progbits
