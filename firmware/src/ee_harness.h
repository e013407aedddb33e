/* The portable benchmark harness: reads command lines from th_getc, answers each with exactly one line.
 *
 * Commands (arguments separated by single spaces; see docs/firmware.md for the full grammar):
 *   name | help | info | model <name|index>
 *   load <model> <offset> <hex> <crc32>     input chunk (<= EE_CHUNK_MAX bytes), loaded in order
 *   infer <model> <n>                       n timed invocations on the loaded input
 *   results [<offset> <n>]                  output digest, or one hex chunk of it
 *   timing                                  timing of the last `infer`
 *   selftest [<model>]                      built-in input through each model, output CRC-32
 *   pipeline                                the built-in anonymization pipeline and its memory
 *   frame <offset> <hex> <crc32>            frame chunk (<= EE_CHUNK_MAX bytes), loaded in order
 *   anonymize <seed>                        the pipeline on the loaded frame (fail closed: no face -> wiped)
 *   frame_out [<offset> <n>]                the anonymized frame's digest, or one hex chunk of it
 * Replies: `ok <command> key=value ...` or `err <code> <message>`.
 */
#ifndef EE_HARNESS_H
#define EE_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EE_FIRMWARE_ID "tinyml-bench"

/* Resets harness state (loaded input, output, timing). */
void ee_init(void);

/* Feeds one received byte; when it completes a line, the reply is written with the output sink. */
void ee_feed(char c);

/* Handles one complete line (modified in place) and writes one reply line. */
void ee_handle_line(char *line);

/* Where replies go; th_putc by default. Tests and the fuzzer capture replies through it. */
typedef void (*ee_sink_t)(const char *text, size_t n);
void ee_set_sink(ee_sink_t sink);

/* Main loop for the firmware: banner, then commands until th_getc reports end of input. */
void ee_main_loop(void);

/* The built-in self-test input (xorshift32 bytes; toolkit.bench.protocol.selftest_input matches). */
void ee_selftest_input(int8_t *dst, uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* EE_HARNESS_H */
