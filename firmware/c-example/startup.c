/* Start-up for QEMU mps2-an386 (Cortex-M4F): the vector table, the reset handler (enable the
 * FPU, copy .data, zero .bss, paint the stack, call main, exit with its status through
 * semihosting) and the fault handlers (report and exit non-zero). */
#include <stdint.h>

#include "semihost.h"
#include "startup.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
extern int main(void);

/* The paint pattern of the stack (as the Rust firmware's firmware/app/src/mem.rs). */
#define STACK_PAINT 0x5EEDC0DEu
/* Bytes left unpainted below the stack pointer read by paint_stack (its own frame). */
#define PAINT_MARGIN 256u


/* Before anything else: the library is built hard-float, and the compiler may use FP
 * registers anywhere (even in the copy loops below), so the FPU is enabled first. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        /* CPACR (0xE000ED88): CP10 and CP11, the FPU, full access. */
        "movw r0, #0xED88\n"
        "movt r0, #0xE000\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b reset_c\n");
}

static uintptr_t paint_bottom;

__attribute__((noinline)) void paint_stack(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    volatile uint32_t *p = (volatile uint32_t *)(((uintptr_t)_ebss + 3u) & ~(uintptr_t)3u);
    uintptr_t end = (sp - PAINT_MARGIN) & ~(uintptr_t)3u;
    paint_bottom = (uintptr_t)p;
    while ((uintptr_t)p < end) {
        *p++ = STACK_PAINT;
    }
}

uint32_t stack_high_water(void)
{
    volatile const uint32_t *p = (volatile const uint32_t *)paint_bottom;
    uintptr_t top = (uintptr_t)_estack & ~(uintptr_t)7u;
    while ((uintptr_t)p < top && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)(top - (uintptr_t)p);
}

uint32_t static_ram_bytes(void)
{
    return (uint32_t)((uintptr_t)_ebss - (uintptr_t)_sdata);
}

__attribute__((noreturn, used)) void reset_c(void)
{
    /* Volatile accesses, so these loops stay loops (no call before .data exists). */
    volatile uint32_t *src = _sidata;
    volatile uint32_t *dst = _sdata;
    while (dst < _edata) {
        *dst++ = *src++;
    }
    for (volatile uint32_t *b = _sbss; b < _ebss;) {
        *b++ = 0u;
    }
    paint_stack();
    int rc = main();
    sh_exit((uint32_t)rc);
}

static void put_hex32(char *out, uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 8; i++) {
        out[2 + i] = digits[(v >> (28 - 4 * i)) & 0xFu];
    }
    out[10] = '\0';
}

/* frame: the exception's stacked r0-r3, r12, lr, pc, xpsr. */
__attribute__((noreturn, used)) void hard_fault_c(const uint32_t *frame)
{
    char pc[11];
    put_hex32(pc, frame[6]);
    sh_write0("firmware: HARDFAULT at pc=");
    sh_write0(pc);
    sh_write0("\n");
    sh_exit(EXIT_HARD_FAULT);
}

__attribute__((naked, noreturn)) void HardFault_Handler(void)
{
    /* The frame is on the stack the faulting code used. */
    __asm__ volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b hard_fault_c\n");
}

__attribute__((noreturn)) static void Unexpected_Handler(void)
{
    sh_write0("firmware: unexpected exception\n");
    sh_exit(EXIT_UNEXPECTED);
}

/* The vector table: initial stack pointer, then the Cortex-M exception handlers (no device
 * interrupts are enabled, so none are listed). */
__attribute__((section(".vector_table"), used)) static void (*const vector_table[16])(void) = {
    (void (*)(void))_estack,
    Reset_Handler,
    Unexpected_Handler, /* NMI */
    HardFault_Handler,
    Unexpected_Handler, /* MemManage */
    Unexpected_Handler, /* BusFault */
    Unexpected_Handler, /* UsageFault */
    0,
    0,
    0,
    0,
    Unexpected_Handler, /* SVCall */
    Unexpected_Handler, /* DebugMonitor */
    0,
    Unexpected_Handler, /* PendSV */
    Unexpected_Handler, /* SysTick */
};
