/* Host test runner for a generated model: reads the int8 input, runs <model>_invoke with a canary-filled
 * arena, writes the int8 output and prints the highest arena byte the run touched. The input and output live
 * inside the arena at the plan's offsets (the memory the model needs is the arena alone), unless the model
 * has none (TK_NO_OFFSET).
 *   cc ... -DTK_MODEL=student_model -DTK_MODEL_HEADER='"student.h"' harness.c ...
 *   ./run in.bin out.bin   ->  "arena_size=N touched=M dsp=0|1 rc=0"  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tk_kernels.h"
#include TK_MODEL_HEADER

#define GUARD 256u

#if defined(__arm__) && defined(TK_HARNESS_SYSTICK)
/* SysTick as an instruction-count proxy under QEMU -icount (DWT CYCCNT reads 0 there): 24-bit down-counter
 * at the core clock, wraps counted in the interrupt. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static volatile uint32_t systick_wraps;
void SysTick_Handler(void);
void SysTick_Handler(void)
{
    systick_wraps++;
}
static void ticks_start(void)
{
    systick_wraps = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* core clock, interrupt, enable */
}
static uint64_t ticks_stop(void)
{
    uint32_t wraps, val;
    do {
        wraps = systick_wraps;
        val = SYST_CVR;
    } while (wraps != systick_wraps);
    SYST_CSR = 0u;
    return (uint64_t)wraps * 0x1000000u + (0xFFFFFFu - val);
}
#if defined(TK_PROFILE_LAYERS)
/* per-layer ticks: the generated invoke calls this after layer i */
#define MAX_LAYERS 256
static uint64_t layer_end[MAX_LAYERS];
static int n_layers;
void tk_profile_layer_done(int i)
{
    uint32_t wraps, val;
    do {
        wraps = systick_wraps;
        val = SYST_CVR;
    } while (wraps != systick_wraps);
    if (i < MAX_LAYERS) {
        layer_end[i] = (uint64_t)wraps * 0x1000000u + (0xFFFFFFu - val);
        n_layers = i + 1;
    }
}
#endif
#else
static void ticks_start(void)
{
}
static uint64_t ticks_stop(void)
{
    return 0;
}
#endif

static uint32_t highest_touched(const uint8_t *arena, uint32_t n, uint8_t pattern)
{
    uint32_t i;
    for (i = n; i > 0; --i) {
        if (arena[i - 1] != pattern) {
            return i;
        }
    }
    return 0;
}

static int load(const char *path, int8_t *buf, uint32_t n)
{
    FILE *f = fopen(path, "rb");
    size_t got;
    if (!f) {
        return -1;
    }
    got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

int main(int argc, char **argv)
{
    const tk_model_t *m = &TK_MODEL;
    const uint32_t total = m->arena_size + GUARD;
    static const uint8_t patterns[2] = {0xA5u, 0x5Au};
    uint32_t touched = 0, p;
    uint64_t ticks = 0;
    int rc = 0;
    int8_t *in, *out;
    uint8_t *arena;
    FILE *f;
    if (argc != 3) {
        fprintf(stderr, "usage: %s input.bin output.bin\n", argv[0]);
        return 2;
    }
    in = malloc(m->input_size);
    out = malloc(m->output_size);
    arena = malloc(total);
    if (!in || !out || !arena || load(argv[1], in, m->input_size) != 0) {
        fprintf(stderr, "cannot read %u input bytes from %s\n", (unsigned)m->input_size, argv[1]);
        return 2;
    }
    /* two runs with complementary fill patterns: a written byte can equal at most one of them */
    for (p = 0; p < 2; ++p) {
        uint32_t t;
        const int io_in_arena = m->input_offset != TK_NO_OFFSET && m->output_offset != TK_NO_OFFSET;
        int8_t *const run_in = io_in_arena ? (int8_t *)(arena + m->input_offset) : in;
        int8_t *const run_out = io_in_arena ? (int8_t *)(arena + m->output_offset) : out;
        memset(arena, patterns[p], total);
        if (io_in_arena) {
            memcpy(run_in, in, m->input_size);
        }
        ticks_start();
        rc |= m->invoke(run_in, run_out, arena);
        ticks = ticks_stop();
        if (io_in_arena) {
            memcpy(out, run_out, m->output_size);
        }
        t = highest_touched(arena, total, patterns[p]);
        touched = t > touched ? t : touched;
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(out, 1, m->output_size, f) != m->output_size) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    fclose(f);
    printf("arena_size=%u touched=%u dsp=%d rc=%d ticks=%lu", (unsigned)m->arena_size, (unsigned)touched,
           tk_kernels_use_dsp(), rc, (unsigned long)ticks);
#if defined(TK_PROFILE_LAYERS) && defined(__arm__)
    printf(" layer_ticks=");
    for (p = 0; p < (uint32_t)n_layers; ++p) {
        printf("%s%lu", p ? "," : "", (unsigned long)(layer_end[p] - (p ? layer_end[p - 1] : 0)));
    }
#endif
    printf("\n");
    free(in);
    free(out);
    free(arena);
    return rc == 0 ? 0 : 1;
}
