/* Firmware unit tests: protocol framing, encodings, CRC, model table and the whole command set against
 * the hand-written test model (test/support/tiny_model.c). The same file runs on the host and under QEMU
 * (test/run_all.sh); it prints one line per failure and a final `N passed, N failed` line. */
#include <stdint.h>
#include <string.h>

#include "ee_harness.h"
#include "ee_protocol.h"
#include "th_port.h"
#include "tk_frame.h"
#include "tk_registry.h"

/* ---- tiny test framework: output through th_putc, no libc stdio needed on the target ------------- */

static unsigned passed, failed;
static const char *current;

static void t_puts(const char *s) {
    while (*s) th_putc(*s++);
}

static void t_putu(uint32_t v) {
    char b[11];
    int i = 10;
    b[i] = '\0';
    do {
        b[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    t_puts(b + i);
}

static int check(int ok, const char *what, int line) {
    if (ok) {
        passed++;
    } else {
        failed++;
        t_puts("FAIL ");
        t_puts(current);
        t_puts(" line ");
        t_putu((uint32_t)line);
        t_puts(": ");
        t_puts(what);
        t_puts("\n");
    }
    return ok;
}
#define CHECK(cond) check((cond) ? 1 : 0, #cond, __LINE__)

/* ---- reply capture -------------------------------------------------------------------------------- */

static char cap[4096];
static size_t cap_len;

static void capture_sink(const char *text, size_t n) {
    if (cap_len + n >= sizeof cap) n = sizeof cap - 1 - cap_len;
    memcpy(cap + cap_len, text, n);
    cap_len += n;
    cap[cap_len] = '\0';
}

/* Sends `line` + '\n' byte by byte, as the UART would, and returns the captured reply. */
static const char *send(const char *line) {
    cap_len = 0;
    cap[0] = '\0';
    while (*line) ee_feed(*line++);
    ee_feed('\n');
    return cap;
}

static int count_char(const char *s, char c) {
    int n = 0;
    for (; *s; s++) n += (*s == c);
    return n;
}

/* One reply line per command, starting with `ok <cmd>` or `err`. */
static int one_line(const char *r) { return count_char(r, '\n') == 1 && r[strlen(r) - 1] == '\n'; }
static int starts(const char *r, const char *prefix) { return strncmp(r, prefix, strlen(prefix)) == 0; }
static int has(const char *r, const char *part) { return strstr(r, part) != NULL; }

/* Value of `key=` in a reply, copied into out. */
static const char *field(const char *r, const char *key, char *out, size_t cap_out) {
    char pat[32];
    const char *p;
    size_t n = 0;
    strcpy(pat, " ");
    strncat(pat, key, sizeof pat - 3);
    strcat(pat, "=");
    p = strstr(r, pat);
    out[0] = '\0';
    if (!p) return out;
    p += strlen(pat);
    while (*p && *p != ' ' && *p != '\n' && n + 1 < cap_out) out[n++] = *p++;
    out[n] = '\0';
    return out;
}

/* ---- reference of the test model (what tiny_model.c must compute) ------------------------------- */

static void tiny_reference(const int8_t *in, int8_t *out) {
    static const int bias[2] = {3, -5};
    int i, c;
    int8_t tmp[32];
    for (i = 0; i < 16; i++)
        for (c = 0; c < 2; c++) {
            int v = 2 * in[i * 2 + c] + bias[c];
            tmp[i * 2 + c] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    for (i = 0; i < 16; i++) {
        out[i * 2] = tmp[i * 2 + 1];
        out[i * 2 + 1] = tmp[i * 2];
    }
}

static void load_cmd(char *dst, const char *model, uint32_t offset, const int8_t *data, size_t n, uint32_t crc) {
    char hex[2 * EE_CHUNK_MAX + 1];
    char num[12];
    int i = 11;
    uint32_t v = offset;
    ee_hex_encode((const uint8_t *)data, n, hex);
    num[i] = '\0';
    do {
        num[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    strcpy(dst, "load ");
    strcat(dst, model);
    strcat(dst, " ");
    strcat(dst, num + i);
    strcat(dst, " ");
    strcat(dst, hex);
    strcat(dst, " ");
    {
        char h[9];
        int d;
        for (d = 7; d >= 0; d--, crc >>= 4) h[d] = "0123456789abcdef"[crc & 15];
        h[8] = '\0';
        strcat(dst, h);
    }
}

static uint32_t hexfield(const char *r, const char *key) {
    char v[16];
    uint32_t x = 0;
    field(r, key, v, sizeof v);
    if (ee_parse_hex_u32(v, &x) != 0) return 0xFFFFFFFFu;
    return x;
}

/* `frame <offset> <hex> <crc32>` for a chunk of a frame. */
static void frame_cmd(char *dst, uint32_t offset, const uint8_t *data, size_t n) {
    char hex[2 * EE_CHUNK_MAX + 1], num[12], crc[9];
    int i = 11, d;
    uint32_t v = offset, c = ee_crc32(0, data, n);
    ee_hex_encode(data, n, hex);
    num[i] = '\0';
    do {
        num[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    for (d = 7; d >= 0; d--, c >>= 4) crc[d] = "0123456789abcdef"[c & 15];
    crc[8] = '\0';
    strcpy(dst, "frame ");
    strcat(dst, num + i);
    strcat(dst, " ");
    strcat(dst, hex);
    strcat(dst, " ");
    strcat(dst, crc);
}

/* ---- tests ---------------------------------------------------------------------------------------- */

static void test_crc32(void) {
    current = "crc32";
    CHECK(ee_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(ee_crc32(0, "", 0) == 0);
    /* chained == one shot */
    CHECK(ee_crc32(ee_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);
}

static void test_hex(void) {
    uint8_t buf[4];
    char out[9];
    const uint8_t data[3] = {0x00, 0xAB, 0x7F};
    current = "hex";
    CHECK(ee_hex_decode("00aB7f", buf, sizeof buf) == 3 && buf[1] == 0xAB && buf[2] == 0x7F);
    CHECK(ee_hex_decode("abc", buf, sizeof buf) == -1);        /* odd */
    CHECK(ee_hex_decode("zz", buf, sizeof buf) == -1);         /* not hex */
    CHECK(ee_hex_decode("0011223344", buf, sizeof buf) == -1); /* longer than the buffer */
    CHECK(ee_hex_decode("", buf, sizeof buf) == 0);
    ee_hex_encode(data, 3, out);
    CHECK(strcmp(out, "00ab7f") == 0);
}

static void test_numbers(void) {
    uint32_t v = 0;
    current = "numbers";
    CHECK(ee_parse_u32("0", &v) == 0 && v == 0);
    CHECK(ee_parse_u32("4294967295", &v) == 0 && v == 4294967295u);
    CHECK(ee_parse_u32("4294967296", &v) == -1);
    CHECK(ee_parse_u32("", &v) == -1);
    CHECK(ee_parse_u32("-1", &v) == -1);
    CHECK(ee_parse_u32("12a", &v) == -1);
    CHECK(ee_parse_hex_u32("0xCBF43926", &v) == 0 && v == 0xCBF43926u);
    CHECK(ee_parse_hex_u32("123456789", &v) == -1); /* 9 digits */
    CHECK(ee_parse_hex_u32("0x", &v) == -1);
}

static void test_split(void) {
    char line[64];
    char *argv[4];
    current = "split";
    strcpy(line, "  infer   tiny 3 ");
    CHECK(ee_split(line, argv, 4) == 3 && strcmp(argv[0], "infer") == 0 && strcmp(argv[2], "3") == 0);
    strcpy(line, "a b c d e");
    CHECK(ee_split(line, argv, 4) == -1);
    strcpy(line, "   ");
    CHECK(ee_split(line, argv, 4) == 0);
}

static void test_framing(void) {
    ee_line_t l;
    size_t i;
    ee_line_status_t s = EE_LINE_PENDING;
    current = "framing";
    ee_line_reset(&l);
    for (i = 0; i < 5; i++) s = ee_line_feed(&l, "info\r"[i]);
    CHECK(s == EE_LINE_PENDING);
    CHECK(ee_line_feed(&l, '\n') == EE_LINE_READY && strcmp(l.buf, "info") == 0);
    for (i = 0; i < 3 * EE_LINE_MAX; i++) s = ee_line_feed(&l, 'x');
    CHECK(s == EE_LINE_PENDING && l.len == EE_LINE_MAX - 1);
    CHECK(ee_line_feed(&l, '\n') == EE_LINE_OVERFLOW);
    /* the next line is clean again */
    ee_line_feed(&l, 'o');
    ee_line_feed(&l, 'k');
    CHECK(ee_line_feed(&l, '\n') == EE_LINE_READY && strcmp(l.buf, "ok") == 0);
    ee_line_feed(&l, 'a');
    ee_line_feed(&l, (char)0x00);
    CHECK(ee_line_feed(&l, '\n') == EE_LINE_BINARY);
}

static void test_model_table(void) {
    uint32_t i;
    current = "model_table";
    CHECK(tk_model_count == 2);
    CHECK(tk_models[tk_model_count] == NULL);
    for (i = 0; i < tk_model_count; i++) {
        const tk_model_t *m = tk_models[i];
        CHECK(m->name && m->invoke);
        CHECK(m->input_size == (uint32_t)(m->input_shape[0] * m->input_shape[1] * m->input_shape[2] *
                                          m->input_shape[3]));
    }
}

static void test_commands(void) {
    const char *r;
    char v[64];
    char line[EE_LINE_MAX];
    int8_t in[48], expect[32], got[32]; /* in: room for the deliberately oversize chunk below */
    uint8_t buf[EE_CHUNK_MAX];
    int i;
    current = "commands";
    ee_init();
    ee_set_sink(capture_sink);

    r = send("name");
    CHECK(one_line(r) && starts(r, "ok name fw=tinyml-bench proto=1 board="));
    r = send("info");
    CHECK(one_line(r) && starts(r, "ok info") && has(r, " models=2 ") && has(r, " names=tiny,huge"));
    CHECK(strcmp(field(r, "timer", v, sizeof v), th_timer_unit()) == 0);
    r = send("model tiny");
    CHECK(one_line(r) && has(r, " input=32 ") && has(r, " in_shape=1x4x4x2 ") && has(r, " in_zp=-1"));
    CHECK(has(r, " in_scale=3f000000 ")); /* 0.5f */
    r = send("model 1");
    CHECK(has(r, " name=huge "));

    /* errors are replies, one line each */
    r = send("frobnicate");
    CHECK(one_line(r) && starts(r, "err unknown_command"));
    r = send("");
    CHECK(one_line(r) && starts(r, "err syntax"));
    r = send("a b c d e f g h i j");
    CHECK(one_line(r) && starts(r, "err syntax"));
    r = send("model nosuch");
    CHECK(starts(r, "err unknown_model"));
    r = send("results");
    CHECK(starts(r, "err no_output"));
    r = send("timing");
    CHECK(starts(r, "err no_timing"));
    r = send("infer tiny 1");
    CHECK(starts(r, "err no_input"));
    r = send("infer tiny 0");
    CHECK(starts(r, "err bad_number"));
    r = send("infer huge 1");
    CHECK(starts(r, "err nomem"));

    /* load in two chunks, with a bad CRC and an out-of-order chunk in between */
    for (i = 0; i < 32; i++) in[i] = (int8_t)(i * 9 - 100);
    load_cmd(line, "tiny", 0, in, 20, ee_crc32(0, in, 20) ^ 1u);
    r = send(line);
    CHECK(starts(r, "err bad_crc"));
    load_cmd(line, "tiny", 0, in, 20, ee_crc32(0, in, 20));
    r = send(line);
    CHECK(one_line(r) && starts(r, "ok load") && has(r, " have=20 total=32"));
    load_cmd(line, "tiny", 24, in + 24, 8, ee_crc32(0, in + 24, 8));
    r = send(line);
    CHECK(starts(r, "err order") && has(r, "offset 20"));
    r = send("infer tiny 1");
    CHECK(starts(r, "err no_input"));
    load_cmd(line, "tiny", 20, in + 20, 16, ee_crc32(0, in + 20, 16)); /* runs past the end */
    r = send(line);
    CHECK(starts(r, "err range"));
    load_cmd(line, "tiny", 20, in + 20, 12, ee_crc32(0, in + 20, 12));
    r = send(line);
    CHECK(has(r, " have=32 total=32"));
    r = send("load tiny 0 0g 0");
    CHECK(starts(r, "err bad_hex"));

    /* infer, then read the output back in two chunks and compare with the reference */
    tiny_reference(in, expect);
    r = send("infer tiny 3");
    CHECK(one_line(r) && starts(r, "ok infer model=tiny") && has(r, " n=3 "));
    CHECK(hexfield(r, "crc") == ee_crc32(0, expect, 32));
    r = send("results");
    CHECK(has(r, " total=32 ") && hexfield(r, "crc") == ee_crc32(0, expect, 32));
    r = send("results 0 16");
    CHECK(ee_hex_decode(field(r, "data", line, sizeof line), buf, sizeof buf) == 16);
    memcpy(got, buf, 16);
    CHECK(hexfield(r, "crc") == ee_crc32(0, buf, 16));
    r = send("results 16 16");
    CHECK(ee_hex_decode(field(r, "data", line, sizeof line), buf, sizeof buf) == 16);
    memcpy(got + 16, buf, 16);
    CHECK(memcmp(got, expect, 32) == 0);
    r = send("results 16 17");
    CHECK(starts(r, "err range"));
    r = send("results 0 257");
    CHECK(starts(r, "err range"));
    r = send("timing");
    CHECK(one_line(r) && has(r, " n=3 ") && has(r, " model=tiny"));

    /* a failing invoke is an error reply, and leaves no output to read */
    in[0] = 127;
    in[1] = -128;
    load_cmd(line, "tiny", 0, in, 32, ee_crc32(0, in, 32));
    r = send(line);
    CHECK(starts(r, "ok load"));
    r = send("infer tiny 2");
    CHECK(starts(r, "err model_failed") && has(r, "returned 7"));
    r = send("results");
    CHECK(starts(r, "err no_output"));

    /* self-test: built-in input, output CRC must match the reference on the same input */
    ee_selftest_input(in, 32);
    tiny_reference(in, expect);
    r = send("selftest tiny");
    CHECK(one_line(r) && hexfield(r, "crc") == ee_crc32(0, expect, 32));
    r = send("selftest");
    CHECK(one_line(r) && starts(r, "err nomem")); /* `huge` cannot run: the whole self-test says so */

    /* an oversize line gets exactly one error reply, and the link works afterwards */
    cap_len = 0;
    for (i = 0; i < 2000; i++) ee_feed('7');
    ee_feed('\n');
    CHECK(one_line(cap) && starts(cap, "err overflow"));
    r = send("name");
    CHECK(starts(r, "ok name"));
    ee_set_sink(NULL);
}

/* Integer helpers of the pipeline (twins in toolkit/onboard/reference.py). */
static void test_frame_helpers(void) {
    uint32_t state, i;
    int8_t sel[4];
    int64_t sum = 0, sq = 0;
    int in_range = 1;
    current = "frame_helpers";
    CHECK(tk_rshr(5, 1) == 3 && tk_rshr(-5, 1) == -3 && tk_rshr(3, 1) == 2 && tk_rshr(-3, 1) == -2);
    CHECK(tk_rshr(6, 2) == 2 && tk_rshr(-6, 2) == -2 && tk_rshr(5, 2) == 1 && tk_rshr(-5, 2) == -1);
    CHECK(tk_div_round(7, 2) == 4 && tk_div_round(-7, 2) == -4 && tk_div_round(5, 3) == 2 && tk_div_round(-4, 3) == -1);
    CHECK(tk_floor_div(-1, 2) == -1 && tk_floor_div(-4, 2) == -2 && tk_floor_div(7, 2) == 3);
    CHECK(tk_ceil_div(-1, 2) == 0 && tk_ceil_div(7, 2) == 4 && tk_ceil_div(8, 2) == 4);
    CHECK(tk_isqrt(0) == 0 && tk_isqrt(15) == 3 && tk_isqrt(16) == 4 && tk_isqrt(17) == 4);
    CHECK(tk_isqrt((uint64_t)1 << 62) == (1u << 31) && tk_isqrt(UINT64_MAX) == 0xFFFFFFFFu);
    CHECK(tk_frame_seed_state(0x9E3779B9u) == 1u && tk_frame_seed_state(0) == 0x9E3779B9u);
    /* the same generator as the self-test input: its first bytes are the top bytes of the sequence */
    ee_selftest_input(sel, 4);
    state = 0x2545f491u;
    for (i = 0; i < 4; i++) CHECK((int8_t)(uint8_t)(tk_xorshift32(&state) >> 24) == sel[i]);
    /* Irwin-Hall(12) - 6: mean 0, variance 1 (Q16), within sampling error over 4000 draws */
    state = tk_frame_seed_state(1);
    for (i = 0; i < 4000; i++) {
        int64_t z = tk_gauss12_q16(&state);
        in_range &= z >= -6 * 65536 && z <= 6 * 65536;
        sum += z;
        sq += (z * z) >> 16;
    }
    CHECK(in_range);
    CHECK(sum / 4000 > -65536 / 20 && sum / 4000 < 65536 / 20);
    CHECK(sq / 4000 > 65536 * 9 / 10 && sq / 4000 < 65536 * 11 / 10);
}

/* The pipeline commands against the hand-written pipeline of test/support/tiny_pipeline.c. */
static void test_pipeline_commands(void) {
    static uint8_t frame[16 * 16 * 3], out[16 * 16 * 3];
    static char line[EE_LINE_MAX];
    char v[64], crc1[16];
    uint8_t buf[EE_CHUNK_MAX];
    const char *r;
    int32_t box[4] = {0, 0, 0, 0};
    int x, y, inside_changed = 0, outside_changed = 0;
    uint32_t off;
    current = "pipeline_commands";
    ee_init();
    ee_set_sink(capture_sink);
    CHECK(tk_frame_check(tk_pipeline) == 0);
    r = send("pipeline");
    CHECK(one_line(r) && starts(r, "ok pipeline pose=tiny_pose steps=tiny_step,tiny_step h=16 w=16 size=8"));
    CHECK(has(r, " frame=768 ") && has(r, " stages=preprocess,pose,decode,crop,step0,step1,paste,verify"));
    r = send("frame_out");
    CHECK(starts(r, "err no_output"));
    r = send("anonymize 1");
    CHECK(starts(r, "err no_frame"));

    /* a bright frame: every heatmap peaks, a face is found */
    memset(frame, 200, sizeof frame);
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        r = send(line);
        CHECK(one_line(r) && starts(r, "ok frame"));
    }
    CHECK(has(r, " have=768 total=768"));
    r = send("frame_out");
    CHECK(starts(r, "err no_output")); /* a raw frame is never sent back */
    r = send("anonymize 5");
    CHECK(one_line(r) && starts(r, "ok anonymize status=ok seed=5 faces=1 box="));
    CHECK(has(r, " vis=1111111 ") && has(r, " crc="));
    field(r, "ticks", v, sizeof v);
    CHECK(count_char(v, ',') == 7); /* 8 stages: ..., paste, verify (0 ticks when off) */
    field(r, "crc", crc1, sizeof crc1);
    field(r, "box", v, sizeof v);
    {
        const char *p = v;
        int k;
        for (k = 0; k < 4; k++) {
            int neg = *p == '-';
            if (neg) p++;
            while (*p >= '0' && *p <= '9') box[k] = box[k] * 10 + (*p++ - '0');
            if (neg) box[k] = -box[k];
            if (*p == ',') p++;
        }
    }
    CHECK(box[2] > box[0] && box[3] > box[1]);
    r = send("frame_out");
    CHECK(one_line(r) && has(r, " total=768 "));
    for (off = 0; off < sizeof out; off += 256) {
        r = send(off == 0 ? "frame_out 0 256" : off == 256 ? "frame_out 256 256" : "frame_out 512 256");
        CHECK(ee_hex_decode(field(r, "data", line, sizeof line), buf, sizeof buf) == 256);
        memcpy(out + off, buf, 256);
    }
    for (y = 0; y < 16; y++) {
        for (x = 0; x < 16; x++) {
            int in_box = x >= box[0] && x < box[2] && y >= box[1] && y < box[3];
            int changed = memcmp(out + (y * 16 + x) * 3, frame + (y * 16 + x) * 3, 3) != 0;
            inside_changed += in_box && changed;
            outside_changed += !in_box && changed;
        }
    }
    CHECK(outside_changed == 0); /* only the face box is touched */
    CHECK(inside_changed > 0);
    r = send("anonymize 5");
    CHECK(starts(r, "err no_frame")); /* one anonymization per loaded frame */

    /* same frame and seed: same output; another seed: another output */
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 5");
    field(r, "crc", v, sizeof v);
    CHECK(strcmp(v, crc1) == 0);
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 6");
    field(r, "crc", v, sizeof v);
    CHECK(starts(r, "ok anonymize") && strcmp(v, crc1) != 0);

    /* a dark frame: no face; fail closed (wiped, nothing to read back) */
    memset(frame, 0, sizeof frame);
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 1");
    CHECK(one_line(r) && starts(r, "err no_face") && has(r, " vis=0000000"));
    r = send("frame_out");
    CHECK(starts(r, "err no_output"));
    r = send("anonymize 1");
    CHECK(starts(r, "err no_frame"));

    /* the head gate (tiny pose: keypoint k of heatmap cell (cy, cx) = red of pixel (4cy + k % 4, 4cx + k / 4)).
     * Nose in cell (1,1), eyes in cells (0,0) and (0,1): one head (eyes 4 and 5.7 px from the nose), a face. */
    memset(frame, 0, sizeof frame);
    frame[(4 * 16 + 4) * 3] = 250; /* nose, cell (1,1) */
    frame[(1 * 16 + 0) * 3] = 250; /* left eye, cell (0,0) */
    frame[(2 * 16 + 4) * 3] = 250; /* right eye, cell (0,1) */
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 3");
    CHECK(one_line(r) && starts(r, "ok anonymize status=ok") && has(r, " vis=1110000 "));
    /* the same eyes with the nose moved to cell (3,3), 14+ px from both (> 1 head scale, the 8 px floor):
     * not one head (a nose on the neck), refused and wiped like a frame without a nose */
    frame[(4 * 16 + 4) * 3] = 0;
    frame[(12 * 16 + 12) * 3] = 250; /* nose, cell (3,3) */
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 3");
    CHECK(one_line(r) && starts(r, "err no_face") && has(r, " vis=1110000"));
    r = send("frame_out");
    CHECK(starts(r, "err no_output"));
    /* nose without an eye: refused */
    frame[(1 * 16 + 0) * 3] = 0;
    frame[(2 * 16 + 4) * 3] = 0;
    for (off = 0; off < sizeof frame; off += 256) {
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 3");
    CHECK(one_line(r) && starts(r, "err no_face") && has(r, " vis=1000000"));

    /* errors */
    r = send("frame 0 0g 0");
    CHECK(starts(r, "err bad_hex"));
    frame_cmd(line, 8, frame, 16);
    r = send(line);
    CHECK(starts(r, "err order"));
    r = send("anonymize x");
    CHECK(starts(r, "err bad_number"));
    r = send("frame_out 700 100");
    CHECK(starts(r, "err no_output"));

    /* a model benchmark takes the pool back: the pipeline state is gone */
    for (off = 0; off < sizeof frame; off += 256) {
        memset(frame, 200, sizeof frame);
        frame_cmd(line, off, frame + off, 256);
        (void)send(line);
    }
    r = send("anonymize 2");
    CHECK(starts(r, "ok anonymize"));
    r = send("selftest tiny");
    CHECK(starts(r, "ok selftest"));
    r = send("frame_out");
    CHECK(starts(r, "err no_output"));
    r = send("help");
    CHECK(has(r, "anonymize") && has(r, "frame_out"));
    /* the command table, in its order (the harness dispatches and lists from one table) */
    CHECK(has(r, " commands=name,help,info,model,load,infer,results,timing,selftest,pipeline,frame,anonymize,frame_out"));
    ee_set_sink(NULL);
}

#if defined(__arm__)
/* Under QEMU -icount shift=0 each instruction advances virtual time 1 ns; SysTick counts the 25 MHz
 * board clock, so a known instruction count gives the tick/instruction ratio the benchmark reports. */
static void test_icount_ratio(void) {
    uint64_t t0, t1;
    uint32_t n = 1000000u; /* iterations of a 2-instruction loop: 2,000,000 instructions */
    current = "icount_ratio";
    if (strcmp(th_timer_unit(), "icount_ticks") != 0) return;
    t0 = th_timer_read();
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
    t1 = th_timer_read();
    t_puts("icount calibration: ");
    t_putu((uint32_t)(t1 - t0));
    t_puts(" ticks for 2000000 instructions\n");
    CHECK(t1 - t0 >= 49000u && t1 - t0 <= 51000u); /* 2e6 ns at 25 MHz = 50000 ticks */
}
#endif

int main(void) {
    th_init();
    test_crc32();
    test_hex();
    test_numbers();
    test_split();
    test_framing();
    test_model_table();
    test_commands();
    test_frame_helpers();
    test_pipeline_commands();
#if defined(__arm__)
    test_icount_ratio();
#endif
    t_puts("firmware unit tests on ");
    t_puts(th_board_name());
    t_puts(": ");
    t_putu(passed);
    t_puts(" passed, ");
    t_putu(failed);
    t_puts(" failed\n");
    th_exit(failed ? 1 : 0);
    return 0;
}
