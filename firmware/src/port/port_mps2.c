/* QEMU mps2-an386 (Cortex-M4F) / mps2-an500 (Cortex-M7): CMSDK UART0 and SysTick.
 *
 * DWT CYCCNT reads 0 under QEMU, so timing uses SysTick. Run QEMU with
 * `-icount shift=0,align=off,sleep=off`: virtual time then advances by instructions executed, so the tick
 * counts are exactly repeatable and proportional to instructions. They are reported as `icount_ticks`,
 * never as cycles or seconds. */
#include "th_port.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10u))
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0x00FFFFFFu

#ifndef TH_BOARD_NAME
#define TH_BOARD_NAME "qemu-mps2"
#endif
#define MPS2_SYSCLK_HZ 25000000u /* FPGA system clock of the MPS2 images QEMU models */

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

const char *th_board_name(void) { return TH_BOARD_NAME; }

void th_init(void) {
    UART_BAUDDIV = MPS2_SYSCLK_HZ / 115200u;
    UART_CTRL = 3u; /* TX and RX enable */
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, wrap interrupt, enable */
}

void th_putc(char c) {
    while (UART_STATE & UART_STATE_TXFULL) {
    }
    UART_DATA = (uint8_t)c;
}

int th_getc(void) {
    while (!(UART_STATE & UART_STATE_RXFULL)) {
    }
    return (int)(UART_DATA & 0xFFu);
}

/* 24-bit down counter extended by the wrap count. Read with interrupts masked; a wrap that happened but
 * whose interrupt is still pending (ICSR.PENDSTSET) is counted here, so the value never steps back. */
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)

uint64_t th_timer_read(void) {
    uint32_t hi, v, primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask) : : "memory");
    hi = systick_wraps;
    v = SYST_CVR;
    if (SCB_ICSR & ICSR_PENDSTSET) {
        v = SYST_CVR; /* re-read: it has certainly reloaded by now */
        hi++;
    }
    __asm__ volatile("msr primask, %0" : : "r"(primask) : "memory");
    return (uint64_t)hi * (SYST_RELOAD + 1u) + (SYST_RELOAD - v);
}

const char *th_timer_unit(void) { return "icount_ticks"; }
uint32_t th_timer_hz(void) { return 0; } /* not a time base under -icount */
uint32_t th_clock_hz(void) { return MPS2_SYSCLK_HZ; }

void th_exit(int code) {
    /* Semihosting SYS_EXIT (0x18); reason 0x20026 = ADP_Stopped_ApplicationExit (exit status 0). */
    register uint32_t r0 __asm__("r0") = 0x18u;
    register uint32_t r1 __asm__("r1") = code == 0 ? 0x20026u : 0x20023u;
    __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}
