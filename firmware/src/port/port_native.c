/* Host port (PlatformIO `native` env): stdin/stdout as the serial port, CLOCK_MONOTONIC as the timer.
 * `toolkit bench --board native` runs this program and talks to it through pipes. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c11 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "th_port.h"

#ifndef TH_NATIVE_POOL_BYTES
#define TH_NATIVE_POOL_BYTES (64u * 1024u * 1024u)
#endif

static uint8_t pool[TH_NATIVE_POOL_BYTES] __attribute__((aligned(16)));

const char *th_board_name(void) { return "native"; }

void th_init(void) { setvbuf(stdout, NULL, _IOFBF, 1 << 16); }

void th_putc(char c) {
    putchar(c);
    if (c == '\n') fflush(stdout); /* one reply = one flush: the host waits for whole lines */
}

int th_getc(void) {
    int c = getchar();
    return c == EOF ? -1 : c;
}

uint64_t th_timer_read(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *th_timer_unit(void) { return "ns"; }
uint32_t th_timer_hz(void) { return 1000000000u; }
uint32_t th_clock_hz(void) { return 0; }

uint8_t *th_pool(uint32_t *size_bytes) {
    *size_bytes = TH_NATIVE_POOL_BYTES;
    return pool;
}

uint32_t th_flash_used(void) { return 0; } /* not meaningful on the host */
uint32_t th_ram_used(void) { return 0; }

void th_exit(int code) {
    fflush(stdout);
    exit(code);
}

void th_panic(const char *what) {
    fprintf(stdout, "err fault %s\n", what);
    fflush(stdout);
    abort();
}
