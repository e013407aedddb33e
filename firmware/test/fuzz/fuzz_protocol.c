/* Fuzzer for the serial protocol: any byte stream fed to the harness must give, for every line it ends,
 * exactly one printable reply line starting with `ok ` or `err ` — never a crash, an out-of-bounds access
 * (run under ASan/UBSan) or silence.
 *
 * Two drivers share the check:
 *  - libFuzzer (clang -fsanitize=fuzzer): LLVMFuzzerTestOneInput below;
 *  - TK_FUZZ_STANDALONE (any compiler): a bounded random-frame generator mixing valid commands, mutated
 *    commands, random bytes and oversize lines. Usage: fuzz_protocol [seconds] [seed]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee_harness.h"
#include "ee_protocol.h"

static unsigned long long frames_total;
static size_t replies, reply_bytes_in_line;
static int reply_line_bad, reply_started;
static char reply_head[4];

static void check_sink(const char *text, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        char c = text[i];
        if (c == '\n') {
            if (reply_bytes_in_line < 3 || !(memcmp(reply_head, "ok ", 3) == 0 || memcmp(reply_head, "err", 3) == 0))
                reply_line_bad = 1;
            replies++;
            reply_bytes_in_line = 0;
            continue;
        }
        if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e) reply_line_bad = 1;
        if (reply_bytes_in_line < 3) reply_head[reply_bytes_in_line] = c;
        reply_bytes_in_line++;
        reply_started = 1;
    }
}

static void run_stream(const uint8_t *data, size_t size) {
    size_t i, lines = 0;
    replies = 0;
    reply_bytes_in_line = 0;
    reply_line_bad = 0;
    reply_started = 0;
    ee_init();
    ee_set_sink(check_sink);
    for (i = 0; i < size; i++) {
        size_t before = replies;
        ee_feed((char)data[i]);
        if (data[i] == '\n') {
            lines++;
            if (replies != before + 1) {
                fprintf(stderr, "fuzz: line %zu got %zu replies (want 1)\n", lines, replies - before);
                abort();
            }
        } else if (replies != before) {
            fprintf(stderr, "fuzz: reply without a complete line at byte %zu\n", i);
            abort();
        }
    }
    if (reply_line_bad || reply_bytes_in_line != 0) {
        fprintf(stderr, "fuzz: malformed reply line\n");
        abort();
    }
    frames_total += lines;
}

static void report(void) { printf("fuzz: %llu frames tried, every one answered with one ok/err line\n", frames_total); }

#ifndef TK_FUZZ_STANDALONE

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    atexit(report);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run_stream(data, size);
    return 0;
}

#else /* standalone bounded random-frame generator */

#include <time.h>

static uint32_t rng = 0x9e3779b9u;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static const char *const words[] = {
    "name", "help", "info", "model", "load", "infer", "results", "timing", "selftest", "tiny", "huge", "0", "1",
    "pipeline", "frame", "anonymize", "frame_out", "768", "767",
    "2", "32", "256", "4294967295", "4294967296", "-1", "0x", "ffffffff", "00", "zz", "", " ", "  ",
};

/* Appends one frame: a valid command, a mutation of one, random bytes, or an oversize line. */
static size_t make_frame(uint8_t *buf, size_t cap) {
    size_t n = 0, i;
    uint32_t kind = rnd() % 9;
    if (kind < 4) { /* word soup, often valid */
        int w = 1 + (int)(rnd() % 6);
        while (w-- && n + 40 < cap) {
            const char *s = words[rnd() % (sizeof words / sizeof *words)];
            if (n) buf[n++] = ' ';
            memcpy(buf + n, s, strlen(s));
            n += strlen(s);
        }
    } else if (kind == 4) { /* a well-formed load chunk with a right or wrong crc */
        uint8_t data[64];
        char hex[129], line[200];
        size_t k = 1 + rnd() % 40;
        for (i = 0; i < k; i++) data[i] = (uint8_t)rnd();
        ee_hex_encode(data, k, hex);
        snprintf(line, sizeof line, "load tiny %u %s %08x", (unsigned)(rnd() % 40), hex,
                 (unsigned)(ee_crc32(0, data, k) ^ (rnd() % 4 == 0)));
        n = strlen(line);
        memcpy(buf, line, n);
    } else if (kind == 5) { /* random bytes, newline-free */
        size_t k = rnd() % 200;
        for (i = 0; i < k && n < cap; i++) {
            uint8_t c = (uint8_t)rnd();
            buf[n++] = c == '\n' ? ' ' : c;
        }
    } else if (kind == 6) { /* oversize */
        size_t k = EE_LINE_MAX - 8 + rnd() % 3000;
        for (i = 0; i < k && n < cap; i++) buf[n++] = (uint8_t)('a' + rnd() % 26);
    } else if (kind == 8) { /* a whole 16x16 test frame (bright or dark), then anonymize and read back */
        uint8_t data[256];
        char hex[513];
        uint32_t off, fill = rnd() % 4 == 0 ? 0u : (uint32_t)(rnd() & 255u);
        for (off = 0; off < 768 && n + 600 < cap; off += 256) {
            for (i = 0; i < 256; i++) data[i] = (uint8_t)(rnd() % 8 == 0 ? rnd() : fill);
            ee_hex_encode(data, 256, hex);
            n += (size_t)snprintf((char *)buf + n, cap - n, "frame %u %s %08x\n", (unsigned)off, hex,
                                  (unsigned)ee_crc32(0, data, 256));
        }
        if (n + 64 < cap)
            n += (size_t)snprintf((char *)buf + n, cap - n, "anonymize %u\nframe_out %u %u", (unsigned)rnd(),
                                  (unsigned)(rnd() % 800), (unsigned)(rnd() % 300));
    } else { /* printable random */
        size_t k = rnd() % 120;
        for (i = 0; i < k && n < cap; i++) buf[n++] = (uint8_t)(0x20 + rnd() % 95);
    }
    if (n < cap) buf[n++] = '\n';
    return n;
}

int main(int argc, char **argv) {
    static uint8_t stream[1 << 16];
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    clock_t end;
    if (argc > 2) rng = (uint32_t)strtoul(argv[2], NULL, 0) | 1u;
    end = clock() + (clock_t)(seconds * CLOCKS_PER_SEC);
    while (clock() < end) {
        size_t n = 0;
        int frames = 1 + (int)(rnd() % 32);
        while (frames-- && n + 4096 < sizeof stream) n += make_frame(stream + n, sizeof stream - n);
        run_stream(stream, n);
    }
    report();
    return 0;
}
#endif
