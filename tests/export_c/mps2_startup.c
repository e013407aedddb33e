/* TEST ONLY: minimal Cortex-M startup for running generated models under qemu-system-arm (mps2-an386 /
 * mps2-an500) with semihosting (newlib rdimon: argv, files, exit code come from the host). */
#include <stdint.h>

extern void _start(void); /* newlib/rdimon crt0: zeroes .bss, sets up the heap, calls main and exit */
extern uint32_t __StackTop;

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler"))); /* the harness may count ticks */

void Reset_Handler(void)
{
    /* the hard-float ABI needs the FPU on before the first VFP instruction (CPACR CP10/CP11 full access) */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm volatile("dsb\n isb");
    _start();
    for (;;) {
    }
}

void Default_Handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) const void *const tk_test_vectors[16] = {
    &__StackTop, (const void *)Reset_Handler, (const void *)Default_Handler, (const void *)Default_Handler,
    (const void *)Default_Handler, (const void *)Default_Handler, (const void *)Default_Handler, 0, 0, 0, 0,
    (const void *)Default_Handler, (const void *)Default_Handler, 0, (const void *)Default_Handler,
    (const void *)SysTick_Handler,
};
