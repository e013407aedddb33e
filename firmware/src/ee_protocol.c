#include "ee_protocol.h"

void ee_line_reset(ee_line_t *line) {
    line->len = 0;
    line->overflow = 0;
    line->binary = 0;
    line->buf[0] = '\0';
}

ee_line_status_t ee_line_feed(ee_line_t *line, char c) {
    if (c == '\r') return EE_LINE_PENDING;
    if (c == '\n') {
        ee_line_status_t st = EE_LINE_READY;
        if (line->overflow) st = EE_LINE_OVERFLOW;
        else if (line->binary) st = EE_LINE_BINARY;
        line->buf[line->len < EE_LINE_MAX ? line->len : EE_LINE_MAX - 1] = '\0';
        if (st != EE_LINE_READY) ee_line_reset(line);
        else line->len = 0, line->overflow = 0, line->binary = 0; /* buf stays valid until the next feed */
        return st;
    }
    if (line->overflow) return EE_LINE_PENDING;
    if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e) line->binary = 1;
    if (line->len >= EE_LINE_MAX - 1) {
        line->overflow = 1;
        return EE_LINE_PENDING;
    }
    line->buf[line->len++] = c;
    return EE_LINE_PENDING;
}

int ee_split(char *line, char **argv, int max) {
    int argc = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '\0') return argc;
        if (argc == max) return -1;
        argv[argc++] = p;
        while (*p != ' ' && *p != '\0') p++;
        if (*p == '\0') return argc;
        *p++ = '\0';
    }
}

int ee_parse_u32(const char *s, uint32_t *out) {
    uint32_t v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        uint32_t d;
        if (*s < '0' || *s > '9') return -1;
        d = (uint32_t)(*s - '0');
        if (v > (UINT32_MAX - d) / 10u) return -1;
        v = v * 10u + d;
    }
    *out = v;
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ee_parse_hex_u32(const char *s, uint32_t *out) {
    uint32_t v = 0;
    int n = 0;
    if (!s) return -1;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2;
    for (; *s; s++, n++) {
        int d = hex_digit(*s);
        if (d < 0 || n >= 8) return -1;
        v = (v << 4) | (uint32_t)d;
    }
    if (n == 0) return -1;
    *out = v;
    return 0;
}

int ee_hex_decode(const char *hex, uint8_t *out, size_t cap) {
    size_t n = 0;
    while (hex[0] != '\0') {
        int hi, lo;
        if (hex[1] == '\0') return -1; /* odd number of digits */
        hi = hex_digit(hex[0]);
        lo = hex_digit(hex[1]);
        if (hi < 0 || lo < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)((hi << 4) | lo);
        hex += 2;
    }
    return (int)n;
}

void ee_hex_encode(const uint8_t *data, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Nibble-table CRC: 64 bytes of table instead of 1 KB, fast enough for serial-rate data. */
uint32_t ee_crc32(uint32_t crc, const void *data, size_t n) {
    static const uint32_t table[16] = {
        0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
        0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu, 0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
    };
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ table[crc & 15];
        crc = (crc >> 4) ^ table[crc & 15];
    }
    return ~crc;
}
