/* Framing and encoding of the benchmark serial protocol (portable C99, no board code, no allocation).
 *
 * A frame is one line of printable ASCII ending in '\n' ('\r' is ignored). A line longer than
 * EE_LINE_MAX-1 bytes is an overflow: the rest of it is dropped and the caller replies with an error, so
 * a flood of garbage can never overrun a buffer or leave the device waiting for a line that never ends.
 * Binary data travels as hex with a CRC-32 (the zlib/IEEE polynomial, so Python's zlib.crc32 matches).
 */
#ifndef EE_PROTOCOL_H
#define EE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EE_PROTO_VERSION 1
#define EE_LINE_MAX 640     /* bytes in one command line, including the terminator */
#define EE_CHUNK_MAX 256    /* data bytes in one `load` or `results` chunk (512 hex digits) */
#define EE_MAX_ARGS 8

typedef enum {
    EE_LINE_PENDING = 0,  /* byte consumed, no complete line yet */
    EE_LINE_READY = 1,    /* a complete line is in buf (NUL-terminated, without '\n') */
    EE_LINE_OVERFLOW = 2, /* the line that just ended was too long; it was discarded */
    EE_LINE_BINARY = 3    /* the line that just ended held a non-printable byte; it was discarded */
} ee_line_status_t;

typedef struct {
    char buf[EE_LINE_MAX];
    size_t len;
    int overflow; /* set while dropping the tail of an oversize line */
    int binary;   /* set once the current line held a non-printable byte */
} ee_line_t;

void ee_line_reset(ee_line_t *line);
/* Feeds one received byte. */
ee_line_status_t ee_line_feed(ee_line_t *line, char c);

/* Splits `line` in place at spaces. Returns the argument count, or -1 if there are more than `max`. */
int ee_split(char *line, char **argv, int max);

/* Strict parsers: the whole string must be a number that fits (no sign, no spaces, no empty string). */
int ee_parse_u32(const char *s, uint32_t *out);     /* decimal */
int ee_parse_hex_u32(const char *s, uint32_t *out); /* 1-8 hex digits, optional 0x */

/* Decodes hex digits into bytes. Returns the byte count or -1 (odd length, bad digit, too long). */
int ee_hex_decode(const char *hex, uint8_t *out, size_t cap);
/* Writes 2*n hex digits (lower case) and a NUL; `out` must hold 2*n+1 chars. */
void ee_hex_encode(const uint8_t *data, size_t n, char *out);

/* CRC-32 (IEEE 802.3, reflected, as zlib). Start with crc = 0; chain calls to continue. */
uint32_t ee_crc32(uint32_t crc, const void *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* EE_PROTOCOL_H */
