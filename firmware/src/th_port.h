/* What each board provides to the benchmark harness (MLPerf Tiny style: `th_*` = "test harness" port,
 * implemented once per board under src/port/; `ee_*` = the portable harness that uses it).
 * The port layer is deliberately thin: a byte UART, a monotonic counter and a memory pool. */
#ifndef TH_PORT_H
#define TH_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Board identity reported by `name`/`info` (e.g. "qemu-m7", "nucleo_h743zi"). */
const char *th_board_name(void);

/* Bring up clocks, UART and the counter. Called once before anything else. */
void th_init(void);

/* Blocking byte I/O on the benchmark serial port. th_getc returns -1 when the port is closed for good
 * (host stdin EOF); embedded ports never return -1. */
void th_putc(char c);
int th_getc(void);

/* Monotonic counter for timing. `th_timer_unit()` names what it counts: "cycles" (DWT CYCCNT, CCOUNT),
 * "icount_ticks" (SysTick under QEMU -icount: proportional to instructions, not to wall time) or "ns"
 * (host clock). th_timer_hz() is the counter rate (0 when the unit is not time-like). */
uint64_t th_timer_read(void);
const char *th_timer_unit(void);
uint32_t th_timer_hz(void);

/* Core clock in Hz (0 if unknown, e.g. on the host). */
uint32_t th_clock_hz(void);

/* RAM the harness may carve input, output and model arena from (everything the linker left free). */
uint8_t *th_pool(uint32_t *size_bytes);

/* Bytes of flash (read-only image) and static RAM the firmware image occupies. */
uint32_t th_flash_used(void);
uint32_t th_ram_used(void);

/* Ends the program where that means something (host: exit; QEMU: semihosting exit, needs
 * `-semihosting-config enable=on,target=native`); on real boards it spins. Used by the unit-test build. */
void th_exit(int code);

/* Reports a fatal error as a protocol error line (so the host sees a reply, not silence), then stops. */
void th_panic(const char *what);

#ifdef __cplusplus
}
#endif

#endif /* TH_PORT_H */
