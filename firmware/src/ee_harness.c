#include "ee_harness.h"

#include <string.h>

#include "ee_protocol.h"
#include "th_port.h"
#include "tk_registry.h"

/* ---- reply line builder (bounded; replies never need printf) ------------------------------------ */

#define EE_REPLY_MAX (2 * EE_CHUNK_MAX + 192 + TK_FRAME_MAX_FACES * 256) /* anonymize: keypoints and boxes per face */

static char reply[EE_REPLY_MAX];
static size_t reply_len;

static void default_sink(const char *text, size_t n) {
    while (n--) th_putc(*text++);
}
static ee_sink_t sink = default_sink;

void ee_set_sink(ee_sink_t s) { sink = s ? s : default_sink; }

static void r_str(const char *s) {
    while (*s && reply_len < EE_REPLY_MAX - 1) reply[reply_len++] = *s++;
}

static void r_u64(uint64_t v) {
    char tmp[21];
    int i = 20;
    tmp[i] = '\0';
    do {
        tmp[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    r_str(tmp + i);
}

static void r_i32(int32_t v) {
    if (v < 0) {
        r_str("-");
        r_u64((uint64_t)(-(int64_t)v));
    } else {
        r_u64((uint64_t)v);
    }
}

static void r_hex32(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[9];
    int i;
    for (i = 7; i >= 0; i--, v >>= 4) tmp[i] = digits[v & 15];
    tmp[8] = '\0';
    r_str(tmp);
}

static void r_kv_u64(const char *key, uint64_t v) {
    r_str(" ");
    r_str(key);
    r_str("=");
    r_u64(v);
}

static void r_kv_str(const char *key, const char *v) {
    r_str(" ");
    r_str(key);
    r_str("=");
    r_str(v);
}

static void r_kv_hex32(const char *key, uint32_t v) {
    r_str(" ");
    r_str(key);
    r_str("=");
    r_hex32(v);
}

static void r_begin_ok(const char *cmd) {
    reply_len = 0;
    r_str("ok ");
    r_str(cmd);
}

static void r_send(void) {
    reply[reply_len++] = '\n';
    sink(reply, reply_len);
    reply_len = 0;
}

/* Every error is one line: `err <code> <message>`; codes are stable, messages are for people. */
static void reply_err(const char *code, const char *msg) {
    reply_len = 0;
    r_str("err ");
    r_str(code);
    r_str(" ");
    r_str(msg);
    r_send();
}

#define FAIL(code, msg) \
    do {                   \
        reply_err(code, msg); \
        return;            \
    } while (0)

/* ---- harness state -------------------------------------------------------------------------------- */

enum { FRAME_EMPTY = 0, FRAME_RAW = 1, FRAME_ANONYMIZED = 2 };

typedef struct {
    const tk_model_t *model; /* the model the buffers are laid out for */
    uint8_t *arena;
    int8_t *input;
    int8_t *output;
    uint32_t have;           /* input bytes loaded, in order from offset 0 */
    int output_valid;
    uint32_t runs;           /* timing of the last infer */
    uint64_t t_total, t_min, t_max, t_last;
    int status;
    /* pipeline mode (the pool holds [frame | arena | model in | model out | scratch] instead) */
    int pipe_bound;
    uint8_t *frame;
    tk_frame_mem_t pmem;
    uint32_t frame_have;     /* frame bytes loaded, in order from offset 0 */
    int frame_state;         /* FRAME_*: only an anonymized frame can be read back */
    tk_frame_result_t pres;
} ee_state_t;

static ee_state_t st;
static ee_line_t rx;

void ee_init(void) {
    memset(&st, 0, sizeof st);
    ee_line_reset(&rx);
}

static uint32_t align16(uint32_t n) { return (n + 15u) & ~15u; }

static const tk_model_t *find_model(const char *name) {
    uint32_t i, idx;
    for (i = 0; i < tk_model_count; i++)
        if (strcmp(tk_models[i]->name, name) == 0) return tk_models[i];
    if (ee_parse_u32(name, &idx) == 0 && idx < tk_model_count) return tk_models[idx];
    return NULL;
}

/* Lays the pool out for `m`: [arena | input | output], each 16-byte aligned. Keeps state if already
 * laid out for `m`. Returns 0, or -1 when the pool is too small. */
static int bind_model(const tk_model_t *m) {
    uint32_t pool_size = 0;
    uint8_t *pool;
    uintptr_t base;
    uint64_t need;
    if (st.model == m) return 0;
    if (st.pipe_bound && st.frame) memset(st.frame, 0, tk_frame_bytes(tk_pipeline)); /* no raw frame left behind */
    pool = th_pool(&pool_size);
    base = ((uintptr_t)pool + 15u) & ~(uintptr_t)15u;
    need = (uint64_t)align16(m->arena_size) + align16(m->input_size) + align16(m->output_size) +
           (base - (uintptr_t)pool);
    if (need > pool_size) return -1;
    memset(&st, 0, sizeof st);
    st.model = m;
    st.arena = (uint8_t *)base;
    st.input = (int8_t *)(st.arena + align16(m->arena_size));
    st.output = st.input + align16(m->input_size);
    return 0;
}

/* Lays the pool out for the pipeline. Returns 0, or -1 when it does not fit. */
static int bind_pipeline(void) {
    const tk_pipeline_t *p = tk_pipeline;
    uint32_t pool_size = 0;
    uint8_t *pool, *at;
    uint64_t need;
    if (st.pipe_bound) return 0;
    pool = th_pool(&pool_size);
    at = (uint8_t *)(((uintptr_t)pool + 15u) & ~(uintptr_t)15u);
    need = (uint64_t)align16(tk_frame_bytes(p)) + align16(tk_frame_arena_bytes(p)) + align16(tk_frame_in_bytes(p)) +
           align16(tk_frame_out_bytes(p)) + tk_frame_scratch_bytes(p) + (uint64_t)(at - pool);
    if (need > pool_size) return -1;
    memset(&st, 0, sizeof st);
    st.pipe_bound = 1;
    st.frame = at;
    at += align16(tk_frame_bytes(p));
    st.pmem.arena = at;
    at += align16(tk_frame_arena_bytes(p));
    st.pmem.model_in = (int8_t *)at;
    at += align16(tk_frame_in_bytes(p));
    st.pmem.model_out = (int8_t *)at;
    at += align16(tk_frame_out_bytes(p));
    st.pmem.scratch = at;
    return 0;
}

/* 0 when a valid pipeline is built in and laid out; else replies with the error. */
static int pipeline_ready(void) {
    if (!tk_pipeline) {
        reply_err("no_pipeline", "firmware built without a pipeline config (toolkit bench --pipeline)");
        return -1;
    }
    if (tk_frame_check(tk_pipeline) != 0) {
        reply_err("bad_pipeline", "pipeline config does not match its models");
        return -1;
    }
    if (bind_pipeline() != 0) {
        reply_err("nomem", "pipeline does not fit in the memory pool");
        return -1;
    }
    return 0;
}

static int model_arg(const char *name, const tk_model_t **out) {
    const tk_model_t *m = find_model(name);
    if (!m) {
        reply_err("unknown_model", "no such model (see info)");
        return -1;
    }
    if (bind_model(m) != 0) {
        reply_err("nomem", "model does not fit in the memory pool");
        return -1;
    }
    *out = m;
    return 0;
}

/* Runs `n` timed invocations on the bound input; fills timing. Returns the first nonzero status. */
static int run_model(const tk_model_t *m, uint32_t n) {
    uint32_t i;
    int status = 0;
    st.runs = 0;
    st.t_total = 0;
    st.t_min = UINT64_MAX;
    st.t_max = 0;
    st.output_valid = 0;
    for (i = 0; i < n; i++) {
        uint64_t t0 = th_timer_read();
        int rc = m->invoke(st.input, st.output, st.arena);
        uint64_t dt = th_timer_read() - t0;
        st.runs++;
        st.t_total += dt;
        st.t_last = dt;
        if (dt < st.t_min) st.t_min = dt;
        if (dt > st.t_max) st.t_max = dt;
        if (rc != 0) {
            status = rc;
            break;
        }
    }
    if (st.runs == 0) st.t_min = 0;
    st.status = status;
    st.output_valid = (status == 0);
    return status;
}

void ee_selftest_input(int8_t *dst, uint32_t n) {
    uint32_t x = 0x2545f491u, i;
    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        dst[i] = (int8_t)(uint8_t)(x >> 24);
    }
}

/* ---- commands ------------------------------------------------------------------------------------- */

static void cmd_name(int argc, char **argv) {
    (void)argv;
    if (argc != 1) FAIL("usage", "name");
    r_begin_ok("name");
    r_kv_str("fw", EE_FIRMWARE_ID);
    r_kv_u64("proto", EE_PROTO_VERSION);
    r_kv_str("board", th_board_name());
    r_send();
}

static void cmd_help(int argc, char **argv); /* lists the table below */

static void cmd_info(int argc, char **argv) {
    (void)argv;
    uint32_t pool_size = 0, i;
    if (argc != 1) FAIL("usage", "info");
    (void)th_pool(&pool_size);
    r_begin_ok("info");
    r_kv_str("board", th_board_name());
    r_kv_u64("clock_hz", th_clock_hz());
    r_kv_str("timer", th_timer_unit());
    r_kv_u64("timer_hz", th_timer_hz());
    r_kv_u64("pool", pool_size);
    r_kv_u64("flash_used", th_flash_used());
    r_kv_u64("ram_used", th_ram_used());
    r_kv_u64("line_max", EE_LINE_MAX - 1);
    r_kv_u64("chunk_max", EE_CHUNK_MAX);
    r_kv_u64("models", tk_model_count);
    r_str(" names=");
    for (i = 0; i < tk_model_count; i++) {
        if (i) r_str(",");
        r_str(tk_models[i]->name);
    }
    if (tk_model_count == 0) r_str("-");
    r_send();
}

static void r_shape(const char *key, const int32_t *s) {
    int i;
    r_str(" ");
    r_str(key);
    r_str("=");
    for (i = 0; i < 4; i++) {
        if (i) r_str("x");
        r_i32(s[i]);
    }
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void cmd_model(int argc, char **argv) {
    const tk_model_t *m;
    uint32_t i;
    if (argc != 2) FAIL("usage", "model <name|index>");
    m = find_model(argv[1]);
    if (!m) FAIL("unknown_model", "no such model (see info)");
    for (i = 0; i < tk_model_count && tk_models[i] != m; i++) {
    }
    r_begin_ok("model");
    r_kv_u64("index", i);
    r_kv_str("name", m->name);
    r_kv_u64("input", m->input_size);
    r_kv_u64("output", m->output_size);
    r_kv_u64("arena", m->arena_size);
    r_kv_u64("weights", m->weight_bytes);
    r_kv_u64("macs", m->macs);
    r_shape("in_shape", m->input_shape);
    r_shape("out_shape", m->output_shape);
    /* Scales as IEEE-754 bit patterns: exact, and no float formatting code on the device. */
    r_kv_hex32("in_scale", float_bits(m->input_scale));
    r_str(" in_zp=");
    r_i32(m->input_zero_point);
    r_kv_hex32("out_scale", float_bits(m->output_scale));
    r_str(" out_zp=");
    r_i32(m->output_zero_point);
    r_send();
}

static void cmd_load(int argc, char **argv) {
    static uint8_t chunk[EE_CHUNK_MAX];
    const tk_model_t *m;
    uint32_t offset, crc;
    int n;
    if (argc != 5) FAIL("usage", "load <model> <offset> <hex> <crc32>");
    if (ee_parse_u32(argv[2], &offset) != 0) FAIL("bad_number", "offset is not a decimal number");
    if (ee_parse_hex_u32(argv[4], &crc) != 0) FAIL("bad_number", "crc32 is not 1-8 hex digits");
    n = ee_hex_decode(argv[3], chunk, sizeof chunk);
    if (n <= 0) FAIL("bad_hex", "chunk must be 2..512 hex digits, an even count");
    if (ee_crc32(0, chunk, (size_t)n) != crc) FAIL("bad_crc", "chunk checksum mismatch; resend");
    if (model_arg(argv[1], &m) != 0) return;
    if (offset == 0) st.have = 0; /* a new input starts at offset 0 */
    if (offset != st.have) {
        reply_len = 0;
        r_str("err order chunk must start at offset ");
        r_u64(st.have);
        r_send();
        return;
    }
    if ((uint64_t)offset + (uint32_t)n > m->input_size) FAIL("range", "chunk runs past the input");
    memcpy(st.input + offset, chunk, (size_t)n);
    st.have = offset + (uint32_t)n;
    st.output_valid = 0;
    r_begin_ok("load");
    r_kv_str("model", m->name);
    r_kv_u64("offset", offset);
    r_kv_u64("n", (uint32_t)n);
    r_kv_u64("have", st.have);
    r_kv_u64("total", m->input_size);
    r_send();
}

static void r_timing(void) {
    r_kv_str("unit", th_timer_unit());
    r_kv_u64("n", st.runs);
    r_kv_u64("total", st.t_total);
    r_kv_u64("min", st.t_min);
    r_kv_u64("max", st.t_max);
    r_kv_u64("last", st.t_last);
}

static void cmd_infer(int argc, char **argv) {
    const tk_model_t *m;
    uint32_t n;
    int rc;
    if (argc != 3) FAIL("usage", "infer <model> <n>");
    if (ee_parse_u32(argv[2], &n) != 0 || n == 0 || n > 100000u)
        FAIL("bad_number", "n must be 1..100000");
    if (model_arg(argv[1], &m) != 0) return;
    if (st.have != m->input_size) FAIL("no_input", "load the whole input first");
    rc = run_model(m, n);
    if (rc != 0) {
        reply_len = 0;
        r_str("err model_failed invoke returned ");
        r_i32(rc);
        r_send();
        return;
    }
    r_begin_ok("infer");
    r_kv_str("model", m->name);
    r_timing();
    r_kv_hex32("crc", ee_crc32(0, st.output, m->output_size));
    r_send();
}

static void cmd_results(int argc, char **argv) {
    static char hex[2 * EE_CHUNK_MAX + 1];
    uint32_t offset, n;
    if (argc != 1 && argc != 3) FAIL("usage", "results [<offset> <n>]");
    if (!st.model || !st.output_valid) FAIL("no_output", "run infer first");
    if (argc == 1) {
        r_begin_ok("results");
        r_kv_str("model", st.model->name);
        r_kv_u64("total", st.model->output_size);
        r_kv_hex32("crc", ee_crc32(0, st.output, st.model->output_size));
        r_send();
        return;
    }
    if (ee_parse_u32(argv[1], &offset) != 0 || ee_parse_u32(argv[2], &n) != 0)
        FAIL("bad_number", "offset and n must be decimal numbers");
    if (n == 0 || n > EE_CHUNK_MAX) FAIL("range", "n must be 1..256");
    if ((uint64_t)offset + n > st.model->output_size) FAIL("range", "chunk runs past the output");
    ee_hex_encode((const uint8_t *)st.output + offset, n, hex);
    r_begin_ok("results");
    r_kv_u64("offset", offset);
    r_kv_u64("n", n);
    r_kv_str("data", hex);
    r_kv_hex32("crc", ee_crc32(0, st.output + offset, n));
    r_send();
}

static void cmd_timing(int argc, char **argv) {
    (void)argv;
    if (argc != 1) FAIL("usage", "timing");
    if (!st.model || st.runs == 0) FAIL("no_timing", "run infer first");
    r_begin_ok("timing");
    r_kv_str("model", st.model->name);
    r_timing();
    r_send();
}

/* Built-in input through one model; leaves its output readable with `results`. */
static int selftest_one(const tk_model_t *m, uint32_t *crc) {
    if (bind_model(m) != 0) return -2;
    ee_selftest_input(st.input, m->input_size);
    st.have = m->input_size;
    if (run_model(m, 1) != 0) return -1;
    *crc = ee_crc32(0, st.output, m->output_size);
    return 0;
}

static void cmd_selftest(int argc, char **argv) {
    uint32_t crc, i;
    int rc;
    if (argc > 2) FAIL("usage", "selftest [<model>]");
    if (argc == 2) {
        const tk_model_t *m = find_model(argv[1]);
        if (!m) FAIL("unknown_model", "no such model (see info)");
        rc = selftest_one(m, &crc);
        if (rc == -2) FAIL("nomem", "model does not fit in the memory pool");
        if (rc != 0) FAIL("model_failed", "invoke failed on the built-in input");
        r_begin_ok("selftest");
        r_kv_str("model", m->name);
        r_kv_hex32("crc", crc);
        r_timing();
        r_send();
        return;
    }
    /* All models: build the reply as we go; a failure replaces it with an error line. */
    {
        static char names[EE_REPLY_MAX];
        size_t used = 0;
        names[0] = '\0';
        for (i = 0; i < tk_model_count; i++) {
            const char *nm = tk_models[i]->name;
            size_t k = strlen(nm);
            rc = selftest_one(tk_models[i], &crc);
            if (rc != 0) FAIL(rc == -2 ? "nomem" : "model_failed", nm);
            if (used + k + 11 < sizeof names) {
                char h[9];
                uint32_t v = crc;
                int d;
                for (d = 7; d >= 0; d--, v >>= 4) h[d] = "0123456789abcdef"[v & 15];
                h[8] = '\0';
                names[used++] = ' ';
                memcpy(names + used, nm, k);
                used += k;
                names[used++] = '=';
                memcpy(names + used, h, 8);
                used += 8;
                names[used] = '\0';
            }
        }
        r_begin_ok("selftest");
        r_kv_u64("models", tk_model_count);
        r_str(names);
        r_send();
    }
}

/* ---- on-device pipeline ----------------------------------------------------------------------------- */

static void cmd_pipeline(int argc, char **argv) {
    (void)argv;
    const tk_pipeline_t *p;
    uint32_t pool_size = 0, k, total;
    if (argc != 1) FAIL("usage", "pipeline");
    if (pipeline_ready() != 0) return;
    p = tk_pipeline;
    (void)th_pool(&pool_size);
    total = align16(tk_frame_bytes(p)) + align16(tk_frame_arena_bytes(p)) + align16(tk_frame_in_bytes(p)) +
            align16(tk_frame_out_bytes(p)) + tk_frame_scratch_bytes(p);
    r_begin_ok("pipeline");
    r_kv_str("pose", p->pose->name);
    r_str(" steps=");
    for (k = 0; k < p->num_steps; k++) {
        if (k) r_str(",");
        r_str(p->steps[k].model->name);
    }
    r_kv_u64("h", (uint32_t)p->frame_h);
    r_kv_u64("w", (uint32_t)p->frame_w);
    r_kv_u64("size", (uint32_t)p->size);
    r_kv_u64("frame", tk_frame_bytes(p));
    r_kv_u64("arena", tk_frame_arena_bytes(p));
    r_kv_u64("model_in", tk_frame_in_bytes(p));
    r_kv_u64("model_out", tk_frame_out_bytes(p));
    r_kv_u64("scratch", tk_frame_scratch_bytes(p));
    r_kv_u64("total", total);
    r_kv_u64("pool", pool_size);
    r_str(" stages=preprocess,pose,decode,crop");
    for (k = 0; k < p->num_steps; k++) {
        r_str(",step");
        r_u64(k);
    }
    r_str(",paste,verify");
    if (p->verifier) r_str(",heads");
    r_kv_str("verifier", p->verifier ? p->verifier->name : "none");
    r_kv_u64("multi", (uint32_t)p->multi_person);
    r_kv_u64("max_faces", p->multi_person ? p->max_faces : 1u);
    r_kv_u64("verify", (uint32_t)(p->verify != 0));
    r_send();
}

static void cmd_frame(int argc, char **argv) {
    static uint8_t chunk[EE_CHUNK_MAX];
    uint32_t offset, crc, total;
    int n;
    if (argc != 4) FAIL("usage", "frame <offset> <hex> <crc32>");
    if (ee_parse_u32(argv[1], &offset) != 0) FAIL("bad_number", "offset is not a decimal number");
    if (ee_parse_hex_u32(argv[3], &crc) != 0) FAIL("bad_number", "crc32 is not 1-8 hex digits");
    n = ee_hex_decode(argv[2], chunk, sizeof chunk);
    if (n <= 0) FAIL("bad_hex", "chunk must be 2..512 hex digits, an even count");
    if (ee_crc32(0, chunk, (size_t)n) != crc) FAIL("bad_crc", "chunk checksum mismatch; resend");
    if (pipeline_ready() != 0) return;
    total = tk_frame_bytes(tk_pipeline);
    if (offset == 0) { /* a new frame starts at offset 0; whatever was there is gone */
        st.frame_have = 0;
        st.frame_state = FRAME_EMPTY;
    }
    if (offset != st.frame_have) {
        reply_len = 0;
        r_str("err order chunk must start at offset ");
        r_u64(st.frame_have);
        r_send();
        return;
    }
    if ((uint64_t)offset + (uint32_t)n > total) FAIL("range", "chunk runs past the frame");
    memcpy(st.frame + offset, chunk, (size_t)n);
    st.frame_have = offset + (uint32_t)n;
    st.frame_state = st.frame_have == total ? FRAME_RAW : FRAME_EMPTY;
    r_begin_ok("frame");
    r_kv_u64("offset", offset);
    r_kv_u64("n", (uint32_t)n);
    r_kv_u64("have", st.frame_have);
    r_kv_u64("total", total);
    r_send();
}

/* Keypoints of every face found, faces separated by ';' (the first face only for a single-person net). */
static void r_keypoints(const tk_frame_result_t *r) {
    uint32_t f;
    int k;
    r_kv_u64("people", r->people);
    r_str(" kp=");
    for (f = 0; f < r->faces; f++) {
        if (f) r_str(";");
        for (k = 0; k < TK_FRAME_KEYPOINTS; k++) {
            if (k) r_str(",");
            r_i32(r->face[f].kp_q8[k][0]);
            r_str(":");
            r_i32(r->face[f].kp_q8[k][1]);
            r_str(":");
            r_i32(r->face[f].peak[k]);
        }
    }
    r_str(" vis=");
    for (f = 0; f < r->faces; f++) {
        if (f) r_str(";");
        for (k = 0; k < TK_FRAME_KEYPOINTS; k++) r_str(r->face[f].visible[k] ? "1" : "0");
    }
}

static void r_ints(const char *key, const tk_frame_result_t *r, int which) {
    uint32_t f;
    int k, n = which ? 3 : 4;
    r_str(" ");
    r_str(key);
    r_str("=");
    for (f = 0; f < r->faces; f++) {
        if (f) r_str(";");
        for (k = 0; k < n; k++) {
            if (k) r_str(",");
            r_i32(which ? r->face[f].crop[k] : r->face[f].box[k]);
        }
    }
}

static void r_ticks(const tk_frame_result_t *r) {
    uint32_t i;
    uint64_t total = 0;
    r_kv_str("unit", th_timer_unit());
    r_str(" ticks=");
    for (i = 0; i < r->stages; i++) {
        if (i) r_str(",");
        r_u64(r->ticks[i]);
        total += r->ticks[i];
    }
    r_kv_u64("total", total);
}

static void cmd_anonymize(int argc, char **argv) {
    uint32_t seed;
    int rc;
    if (argc != 2) FAIL("usage", "anonymize <seed>");
    if (ee_parse_u32(argv[1], &seed) != 0) FAIL("bad_number", "seed must be a decimal 32-bit number");
    if (pipeline_ready() != 0) return;
    if (st.frame_state != FRAME_RAW) FAIL("no_frame", "load a whole new frame first (frame <offset> <hex> <crc32>)");
    rc = tk_frame_anonymize(tk_pipeline, st.frame, seed, &st.pmem, th_timer_read, &st.pres);
    if (rc != TK_FRAME_OK) {
        /* the library wiped the frame; nothing can be read back */
        st.frame_state = FRAME_EMPTY;
        st.frame_have = 0;
        reply_len = 0;
        r_str(rc == TK_FRAME_NO_FACE         ? "err no_face no plausible face (nose, eyes, head shape); frame wiped"
              : rc == TK_FRAME_TOO_MANY_FACES ? "err too_many_faces more people than faces per frame; frame wiped"
              : rc == TK_FRAME_VERIFY_FAILED  ? "err verify_failed a face is left outside the replaced boxes; frame wiped"
                                              : "err pipeline_failed a network failed; frame wiped");
        if (rc == TK_FRAME_VERIFY_FAILED) {
            r_ints("box", &st.pres, 0);
            r_kv_u64("left", st.pres.verify_left);
            r_kv_u64("heads_left", st.pres.verifier_left);
        }
        r_keypoints(&st.pres);
        r_ticks(&st.pres);
        r_send();
        return;
    }
    st.frame_state = FRAME_ANONYMIZED;
    r_begin_ok("anonymize");
    r_kv_str("status", "ok");
    r_kv_u64("seed", seed);
    r_kv_u64("faces", st.pres.faces);
    r_ints("box", &st.pres, 0);
    r_ints("crop", &st.pres, 1);
    r_keypoints(&st.pres);
    r_ticks(&st.pres);
    r_kv_hex32("crc", ee_crc32(0, st.frame, tk_frame_bytes(tk_pipeline)));
    r_send();
}

static void cmd_frame_out(int argc, char **argv) {
    static char hex[2 * EE_CHUNK_MAX + 1];
    uint32_t offset, n, total;
    if (argc != 1 && argc != 3) FAIL("usage", "frame_out [<offset> <n>]");
    if (!tk_pipeline) FAIL("no_pipeline", "firmware built without a pipeline config (toolkit bench --pipeline)");
    if (!st.pipe_bound || st.frame_state != FRAME_ANONYMIZED)
        FAIL("no_output", "anonymize a frame first (an input frame is never sent back)");
    total = tk_frame_bytes(tk_pipeline);
    if (argc == 1) {
        r_begin_ok("frame_out");
        r_kv_u64("total", total);
        r_kv_hex32("crc", ee_crc32(0, st.frame, total));
        r_send();
        return;
    }
    if (ee_parse_u32(argv[1], &offset) != 0 || ee_parse_u32(argv[2], &n) != 0)
        FAIL("bad_number", "offset and n must be decimal numbers");
    if (n == 0 || n > EE_CHUNK_MAX) FAIL("range", "n must be 1..256");
    if ((uint64_t)offset + n > total) FAIL("range", "chunk runs past the frame");
    ee_hex_encode(st.frame + offset, n, hex);
    r_begin_ok("frame_out");
    r_kv_u64("offset", offset);
    r_kv_u64("n", n);
    r_kv_str("data", hex);
    r_kv_hex32("crc", ee_crc32(0, st.frame + offset, n));
    r_send();
}

/* One row per command, in the order `help` lists them. */
typedef struct {
    const char *name;
    void (*run)(int argc, char **argv);
} ee_command_t;

static const ee_command_t commands[] = {
    {"name", cmd_name},         {"help", cmd_help},           {"info", cmd_info},
    {"model", cmd_model},       {"load", cmd_load},           {"infer", cmd_infer},
    {"results", cmd_results},   {"timing", cmd_timing},       {"selftest", cmd_selftest},
    {"pipeline", cmd_pipeline}, {"frame", cmd_frame},         {"anonymize", cmd_anonymize},
    {"frame_out", cmd_frame_out},
};
#define EE_NUM_COMMANDS (sizeof commands / sizeof commands[0])

static void cmd_help(int argc, char **argv) {
    uint32_t i;
    (void)argc;
    (void)argv;
    r_begin_ok("help");
    r_str(" commands=");
    for (i = 0; i < EE_NUM_COMMANDS; i++) {
        if (i) r_str(",");
        r_str(commands[i].name);
    }
    r_send();
}

void ee_handle_line(char *line) {
    char *argv[EE_MAX_ARGS];
    uint32_t i;
    int argc = ee_split(line, argv, EE_MAX_ARGS);
    if (argc < 0) FAIL("syntax", "too many arguments");
    if (argc == 0) FAIL("syntax", "empty line");
    for (i = 0; i < EE_NUM_COMMANDS; i++) {
        if (strcmp(argv[0], commands[i].name) == 0) {
            commands[i].run(argc, argv);
            return;
        }
    }
    reply_err("unknown_command", "see help");
}

void ee_feed(char c) {
    switch (ee_line_feed(&rx, c)) {
    case EE_LINE_READY:
        ee_handle_line(rx.buf);
        break;
    case EE_LINE_OVERFLOW:
        reply_err("overflow", "line too long; dropped");
        break;
    case EE_LINE_BINARY:
        reply_err("syntax", "non-printable byte in line; dropped");
        break;
    default:
        break;
    }
}

void ee_main_loop(void) {
    int c;
    ee_init();
    r_begin_ok("ready");
    r_kv_str("fw", EE_FIRMWARE_ID);
    r_kv_u64("proto", EE_PROTO_VERSION);
    r_kv_str("board", th_board_name());
    r_send();
    while ((c = th_getc()) >= 0) ee_feed((char)c);
}
