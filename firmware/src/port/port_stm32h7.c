/* NUCLEO-H743ZI, bare metal: USART3 on PD8/PD9 (the ST-Link virtual COM port), DWT cycle counter.
 *
 * Full clock: PLL1 from HSI (64 MHz / 4 = 16 MHz reference, x60 = 960 MHz VCO, /2) = 480 MHz core on
 * silicon revision V (VOS0 overdrive, 4 flash wait states at AXI 240 MHz), 400 MHz on revision Y (no VOS0:
 * VOS1, x50, 2 wait states). HSI rather than HSE so no board solder-bridge option matters. AHB/AXI = core/2,
 * all APBs = core/4. I- and D-cache on (weights are read from flash through the AXI bus; the D-cache is what
 * makes that fast). DWT CYCCNT counts core cycles; th_timer_hz() reports the clock actually set. */
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

#define PWR_BASE 0x58024800u
#define PWR_CSR1 REG(PWR_BASE + 0x04u)
#define PWR_CR3 REG(PWR_BASE + 0x0Cu)
#define PWR_D3CR REG(PWR_BASE + 0x18u)
#define PWR_CSR1_ACTVOSRDY (1u << 13)
#define PWR_D3CR_VOSRDY (1u << 13)
#define SYSCFG_PWRCR REG(0x58000400u + 0x2Cu)
#define FLASH_ACR REG(0x52002000u)
#define RCC_CR REG(RCC_BASE + 0x000u)
#define RCC_CFGR REG(RCC_BASE + 0x010u)
#define RCC_D1CFGR REG(RCC_BASE + 0x018u)
#define RCC_D2CFGR REG(RCC_BASE + 0x01Cu)
#define RCC_D3CFGR REG(RCC_BASE + 0x020u)
#define RCC_PLLCKSELR REG(RCC_BASE + 0x028u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x02Cu)
#define RCC_PLL1DIVR REG(RCC_BASE + 0x030u)
#define RCC_APB4ENR REG(RCC_BASE + 0x0F4u)
#define RCC_CR_PLL1ON (1u << 24)
#define RCC_CR_PLL1RDY (1u << 25)
#define DBGMCU_IDCODE REG(0x5C001000u)
#define REV_ID_Y 0x1003u

#define SCB_CCR REG(0xE000ED14u)
#define SCB_CCSIDR REG(0xE000ED80u)
#define SCB_CSSELR REG(0xE000ED84u)
#define SCB_ICIALLU REG(0xE000EF50u)
#define SCB_DCISW REG(0xE000EF60u)
#define SCB_CCR_DC (1u << 16)
#define SCB_CCR_IC (1u << 17)

#define HSI_HZ 64000000u
#define PLL_REF_HZ (HSI_HZ / 4u)

static uint32_t core_hz = HSI_HZ;

static inline void barrier(void) { __asm volatile("dsb 0xF\n isb 0xF" ::: "memory"); }

/* RM0433 order: supply (LDO) -> voltage scale -> flash wait states -> PLL -> bus prescalers -> switch. */
static void clock_full_speed(void) {
    const int rev_y = (DBGMCU_IDCODE >> 16) == REV_ID_Y;
    const uint32_t mul = rev_y ? 50u : 60u; /* VCO 800 / 960 MHz */
    PWR_CR3 = (PWR_CR3 & ~1u) | (1u << 1); /* LDOEN, no bypass: the Nucleo's supply */
    while (!(PWR_CSR1 & PWR_CSR1_ACTVOSRDY)) {
    }
    PWR_D3CR = (PWR_D3CR & ~(3u << 14)) | (3u << 14); /* VOS1 */
    while (!(PWR_D3CR & PWR_D3CR_VOSRDY)) {
    }
    if (!rev_y) {
        RCC_APB4ENR |= 1u << 1; /* SYSCFG clock, for the overdrive bit */
        (void)RCC_APB4ENR;
        SYSCFG_PWRCR |= 1u; /* ODEN: VOS1 + overdrive = VOS0 */
        while (!(PWR_D3CR & PWR_D3CR_VOSRDY)) {
        }
    }
    /* AXI at 240 MHz (VOS0) needs 4 wait states, at 200 MHz (VOS1) 2; WRHIGHFREQ = 2 for both */
    FLASH_ACR = (rev_y ? 2u : 4u) | (2u << 4);
    while ((FLASH_ACR & 0xFu) != (rev_y ? 2u : 4u)) {
    }
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~((0x3Fu << 4) | 3u)) | (4u << 4); /* HSI, DIVM1 = 4 */
    /* PLL1: integer mode, wide VCO, reference range 8-16 MHz, P output only */
    RCC_PLLCFGR = (RCC_PLLCFGR & ~0xFu & ~(7u << 16)) | (3u << 2) | (1u << 16);
    RCC_PLL1DIVR = (mul - 1u) | ((2u - 1u) << 9) | ((2u - 1u) << 16) | ((2u - 1u) << 24); /* N, P = Q = R = 2 */
    RCC_CR |= RCC_CR_PLL1ON;
    while (!(RCC_CR & RCC_CR_PLL1RDY)) {
    }
    RCC_D1CFGR = (4u << 4) | 8u;      /* D1PPRE /2 (APB3), HPRE /2 (AXI/AHB) */
    RCC_D2CFGR = (4u << 8) | (4u << 4); /* APB2, APB1 /2 */
    RCC_D3CFGR = 4u << 4;             /* APB4 /2 */
    RCC_CFGR = (RCC_CFGR & ~7u) | 3u; /* system clock = PLL1 P */
    while (((RCC_CFGR >> 3) & 7u) != 3u) {
    }
    core_hz = PLL_REF_HZ * mul / 2u;
}

static void caches_on(void) {
    uint32_t sets, ways, s, w;
    barrier();
    SCB_ICIALLU = 0u; /* invalidate, then enable */
    barrier();
    SCB_CCR |= SCB_CCR_IC;
    barrier();
    SCB_CSSELR = 0u; /* level 1 data cache geometry */
    barrier();
    sets = ((SCB_CCSIDR >> 13) & 0x7FFFu) + 1u;
    ways = ((SCB_CCSIDR >> 3) & 0x3FFu) + 1u;
    for (s = 0; s < sets; ++s) {
        for (w = 0; w < ways; ++w) {
            SCB_DCISW = (s << 5) | (w << 30); /* 32-byte lines, 4 ways */
        }
    }
    barrier();
    SCB_CCR |= SCB_CCR_DC;
    barrier();
}

void SysTick_Handler(void) {}

const char *th_board_name(void) { return "nucleo_h743zi"; }

void th_init(void) {
    clock_full_speed();
    caches_on();
    RCC_AHB4ENR |= 1u << 3;   /* GPIOD */
    RCC_APB1LENR |= 1u << 18; /* USART3 */
    (void)RCC_APB1LENR;       /* read back: the clock must be running before the peripheral is touched */
    /* PD8 (TX), PD9 (RX): alternate function 7. */
    GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16);
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;
    USART3_BRR = (core_hz / 4u + 57600u) / 115200u; /* kernel clock = PCLK1 = core / 4 */
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

/* 32-bit CYCCNT extended to 64 bits; correct as long as it is read at least once per wrap (8.9 s at
 * 480 MHz), which holds because every invocation is timed separately and takes well under that. */
uint64_t th_timer_read(void) {
    static uint32_t last, high;
    uint32_t now = DWT_CYCCNT;
    if (now < last) high++;
    last = now;
    return ((uint64_t)high << 32) | now;
}

const char *th_timer_unit(void) { return "cycles"; }
uint32_t th_timer_hz(void) { return core_hz; }
uint32_t th_clock_hz(void) { return core_hz; }

void th_exit(int code) {
    (void)code;
    for (;;) {
    }
}
