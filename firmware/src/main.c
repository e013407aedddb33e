/* Firmware entry for bare-metal and host builds (the ESP32-S3 build enters through its own port file). */
#include "ee_harness.h"
#include "th_port.h"

int main(void) {
    th_init();
    ee_main_loop();
    return 0;
}
