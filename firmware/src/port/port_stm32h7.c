/* NUCLEO-H743ZI, bare metal: USART3 on PD8/PD9 (the ST-Link virtual COM port), DWT cycle counter.
 *
 * Runs from the reset clock (HSI 64 MHz): no PLL set-up, so timings are core cycles at 64 MHz. Cycle
 * counts do not depend on the clock except through flash wait states, which the reset value (7) keeps
 * safe for any frequency. */
#include "th_port.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define RCC_BASE 0x58024400u
#define RCC_AHB4ENR REG(RCC_BASE + 0x0E0u)
#define RCC_APB1LENR REG(RCC_BASE + 0x0E8u)
#define GPIOD_BASE 0x58020C00u
#define GPIOD_MODER REG(GPIOD_BASE + 0x00u)
#define GPIOD_AFRH REG(GPIOD_BASE + 0x24u)
#define USART3_BASE 0x40004800u
#define USART3_CR1 REG(USART3_BASE + 0x00u)
#define USART3_BRR REG(USART3_BASE + 0x0Cu)
#define USART3_ISR REG(USART3_BASE + 0x1Cu)
#define USART3_ICR REG(USART3_BASE + 0x20u)
#define USART3_RDR REG(USART3_BASE + 0x24u)
#define USART3_TDR REG(USART3_BASE + 0x28u)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TXE (1u << 7)

#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

#define HSI_HZ 64000000u

void SysTick_Handler(void) {}

const char *th_board_name(void) { return "nucleo_h743zi"; }

void th_init(void) {
    RCC_AHB4ENR |= 1u << 3;   /* GPIOD */
    RCC_APB1LENR |= 1u << 18; /* USART3 */
    (void)RCC_APB1LENR;       /* read back: the clock must be running before the peripheral is touched */
    /* PD8 (TX), PD9 (RX): alternate function 7. */
    GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16);
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;
    USART3_BRR = (HSI_HZ + 57600u) / 115200u; /* kernel clock = PCLK1 = HSI after reset */
    USART3_CR1 = (1u << 3) | (1u << 2) | 1u; /* TE, RE, UE */

    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

void th_putc(char c) {
    while (!(USART3_ISR & USART_ISR_TXE)) {
    }
    USART3_TDR = (uint8_t)c;
}

int th_getc(void) {
    for (;;) {
        uint32_t isr = USART3_ISR;
        if (isr & USART_ISR_ORE) USART3_ICR = USART_ISR_ORE; /* a lost byte shows up as a CRC error */
        if (isr & USART_ISR_RXNE) return (int)(USART3_RDR & 0xFFu);
    }
}

/* 32-bit CYCCNT extended to 64 bits; correct as long as it is read at least once per wrap (67 s at
 * 64 MHz), which holds because every invocation is timed separately. */
uint64_t th_timer_read(void) {
    static uint32_t last, high;
    uint32_t now = DWT_CYCCNT;
    if (now < last) high++;
    last = now;
    return ((uint64_t)high << 32) | now;
}

const char *th_timer_unit(void) { return "cycles"; }
uint32_t th_timer_hz(void) { return HSI_HZ; }
uint32_t th_clock_hz(void) { return HSI_HZ; }

void th_exit(int code) {
    (void)code;
    for (;;) {
    }
}
