/* ESP32-S3 (Arduino framework, PlatformIO env `esp32s3`): Serial (UART0 via the DevKitC USB bridge),
 * CCOUNT cycle counter, pool in PSRAM when present. Compiled only in that env (see platformio.ini). */
#if defined(ARDUINO) && defined(ESP32)
#include <Arduino.h>
#include <esp_heap_caps.h>

extern "C" {
#include "ee_harness.h"
#include "th_port.h"
}

#ifndef TH_POOL_BYTES /* pool_bytes of boards/esp32s3.json, passed by tools/pio_board_pool.py */
#error "TH_POOL_BYTES is not set: build with the esp32s3 env of platformio.ini"
#endif

static uint8_t *pool;
static uint32_t pool_size;

extern "C" {

const char *th_board_name(void) { return "esp32s3"; }

void th_init(void) {
    Serial.setRxBufferSize(2048);
    Serial.begin(115200);
    pool_size = TH_POOL_BYTES;
    pool = (uint8_t *)heap_caps_aligned_alloc(16, pool_size, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
    for (; !pool && pool_size >= 4096; pool_size /= 2) /* no PSRAM: the largest internal block */
        pool = (uint8_t *)heap_caps_aligned_alloc(16, pool_size, MALLOC_CAP_8BIT);
    if (!pool) pool_size = 0;
}

void th_putc(char c) { Serial.write((uint8_t)c); }

int th_getc(void) {
    while (!Serial.available()) delay(1); /* yields to FreeRTOS so the idle task and watchdog run */
    return Serial.read();
}

/* CCOUNT is 32 bits at 240 MHz (wraps every 17.9 s); extended as on STM32. */
uint64_t th_timer_read(void) {
    static uint32_t last, high;
    uint32_t now = ESP.getCycleCount();
    if (now < last) high++;
    last = now;
    return ((uint64_t)high << 32) | now;
}

const char *th_timer_unit(void) { return "cycles"; }
uint32_t th_timer_hz(void) { return (uint32_t)getCpuFrequencyMhz() * 1000000u; }
uint32_t th_clock_hz(void) { return (uint32_t)getCpuFrequencyMhz() * 1000000u; }

uint8_t *th_pool(uint32_t *size_bytes) {
    *size_bytes = pool_size;
    return pool;
}

uint32_t th_flash_used(void) { return ESP.getSketchSize(); }
uint32_t th_ram_used(void) { return ESP.getHeapSize() - ESP.getFreeHeap(); }

void th_exit(int code) {
    (void)code;
    for (;;) delay(1000);
}

void th_panic(const char *what) {
    Serial.print("err fault ");
    Serial.println(what);
    th_exit(3);
}

} /* extern "C" */

void setup() {
    th_init();
    ee_main_loop(); /* never returns: th_getc blocks */
}

void loop() {}
#endif
