// The peer for benchmarks/engine_table.py --tflm: runs one .tflite with TFLM (+ CMSIS-NN kernels) under QEMU
// mps2-an386 and reports it the way tests/export_c/harness.c reports our engine:
//   semihosting argv: harness in.bin out.bin  ->  "ticks=N arena_used=M rc=0" on stdout, int8 output in out.bin
// Built by engine_table.py against the user's tflite-micro checkout; the model comes in as tflm_model_data[]
// (a generated file) and the op list as TFLM_ADD_OPS (a generated macro). Ticks: SysTick at the core clock,
// counted only around Invoke(), so arena planning and Prepare() are not in the figure (as in our harness).
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" const unsigned char tflm_model_data[];

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static volatile uint32_t systick_wraps;
extern "C" void SysTick_Handler(void) { systick_wraps++; }

static uint64_t ticks_now(void)
{
    uint32_t wraps, val;
    do {
        wraps = systick_wraps;
        val = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * 0x1000000u + (0xFFFFFFu - val);
}

// generous: the arena TFLM actually uses is reported separately
alignas(16) static uint8_t tensor_arena[1024 * 1024];

static int read_file(const char *path, void *dst, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(dst, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        printf("rc=2\n");
        return 2;
    }
    const tflite::Model *model = tflite::GetModel(tflm_model_data);
    tflite::MicroMutableOpResolver<16> resolver;
    TFLM_ADD_OPS(resolver);
    tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));
    if (interpreter.AllocateTensors() != kTfLiteOk) {
        printf("rc=3\n");
        return 3;
    }
    TfLiteTensor *in = interpreter.input(0);
    TfLiteTensor *out = interpreter.output(0);
    if (read_file(argv[1], in->data.int8, in->bytes) != 0) {
        printf("rc=4\n");
        return 4;
    }
    systick_wraps = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* core clock, interrupt, enable */
    TfLiteStatus status = interpreter.Invoke();
    uint64_t ticks = ticks_now();
    SYST_CSR = 0u;
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(out->data.int8, 1, out->bytes, f) != out->bytes) {
        printf("rc=5\n");
        return 5;
    }
    fclose(f);
    printf("ticks=%lu arena_used=%lu rc=%d\n", (unsigned long)ticks, (unsigned long)interpreter.arena_used_bytes(),
           status == kTfLiteOk ? 0 : 1);
    return status == kTfLiteOk ? 0 : 1;
}
