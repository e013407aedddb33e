/* Startup and memory accounting shared by the bare-metal Cortex-M ports (mps2 under QEMU, STM32H743).
 * The linker scripts in firmware/ld/ define the symbols used here. */
#include <stdint.h>
#include <string.h>

#include "th_port.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
extern uint8_t __flash_start, __flash_end, __ram_start, __ram_end, __pool_start, __pool_end;

int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void) {
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access: the build uses the hardware FPU */
    __asm volatile("dsb\n isb");
#endif
    main();
    for (;;) {
    }
}

static void fault(const char *name) { th_panic(name); }
static void NMI_Handler(void) { fault("nmi"); }
static void HardFault_Handler(void) { fault("hardfault"); }
static void MemManage_Handler(void) { fault("memmanage"); }
static void BusFault_Handler(void) { fault("busfault"); }
static void UsageFault_Handler(void) { fault("usagefault"); }
static void Unused_Handler(void) { fault("unexpected_irq"); }

typedef void (*vector_t)(void);

/* Core exceptions only: the firmware polls its UART and uses no peripheral interrupt. */
__attribute__((section(".isr_vector"), used)) const vector_t tk_vectors[16] = {
    (vector_t)(uintptr_t)&__stack_top,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0,
    0,
    0,
    0,
    Unused_Handler, /* SVC */
    Unused_Handler, /* DebugMon */
    0,
    Unused_Handler, /* PendSV */
    SysTick_Handler,
};

uint8_t *th_pool(uint32_t *size_bytes) {
    *size_bytes = (uint32_t)(&__pool_end - &__pool_start);
    return &__pool_start;
}

uint32_t th_flash_used(void) { return (uint32_t)(&__flash_end - &__flash_start); }
uint32_t th_ram_used(void) { return (uint32_t)(&__ram_end - &__ram_start); }

/* newlib's memcpy/memset are used by the engine; nothing else of libc is needed (no heap, no stdio). */
void th_panic(const char *what) {
    const char *p = "err fault ";
    while (*p) th_putc(*p++);
    while (*what) th_putc(*what++);
    th_putc('\n');
    th_exit(3);
}
