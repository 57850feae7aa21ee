// Writes ggml reference quantization fixtures for nexus-kernels' byte-identity tests.
// Built against ggml's own ggml-quants.c by gen.sh; see tests/fixtures/quant/README.md.
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
#include "ggml-quants.h"
#include "ggml-impl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ggml-quants.c references these from ggml.c; none are reached by the reference paths used.
void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt);
    abort();
}
size_t ggml_row_size(enum ggml_type t, int64_t n) { (void) t; (void) n; abort(); }
const char * ggml_type_name(enum ggml_type t) { (void) t; return "?"; }
size_t ggml_type_size(enum ggml_type t) { (void) t; abort(); }

#define ROWS 4
#define COLS 512

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {  // xorshift64*: fixed so fixtures never drift
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t) ((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float uniform(void) { return (float) ((next_u32() >> 8) * (1.0 / 16777216.0)); }  // [0,1)
static float gauss(void) {  // Irwin-Hall approximation: portable, no libm dependency on output
    float s = 0;
    for (int i = 0; i < 12; ++i) s += uniform();
    return s - 6.0f;
}

// Row 0: plain gaussian. Row 1: one pattern per 32-block. Rows 2-3: whole 256-superblocks of
// the edge cases, so K-quant super-block paths (all-zero, constant, tiny) are hit too.
static void make_input(float * x) {
    for (int c = 0; c < COLS; ++c) x[c] = gauss();
    float * r1 = x + COLS;
    for (int c = 0; c < COLS; ++c) {
        int pat = (c / 32) % 8;
        float g = gauss();
        switch (pat) {
            case 0: r1[c] = g * 0.02f; break;                                   // weight-like
            case 1: r1[c] = (c % 32 == 7) ? 40.0f : g; break;                     // one outlier
            case 2: r1[c] = 0.0f; break;                                          // zeros
            case 3: r1[c] = 0.75f; break;                                         // constant
            case 4: r1[c] = -fabsf(g) - 0.1f; break;                              // negative only
            case 5: r1[c] = g * 1e-6f; break;                                     // tiny
            case 6: r1[c] = fabsf(g) * 3.0f; break;                               // positive only
            default: r1[c] = (c % 2 ? 1.0f : -1.0f) * (float) (c % 5); break;     // ties, steps
        }
    }
    float * r2 = x + 2 * COLS;
    for (int c = 0; c < 256; ++c) r2[c] = 0.0f;
    for (int c = 256; c < COLS; ++c) r2[c] = -2.5f;
    float * r3 = x + 3 * COLS;
    for (int c = 0; c < 256; ++c) r3[c] = -fabsf(gauss()) * 7.0f;
    for (int c = 256; c < COLS; ++c) r3[c] = gauss() * 1e-17f;
    r3[300] = 1e-3f;  // one normal value among sub-epsilon ones
}

typedef void (*quant_fn)(const float *, void *, int64_t);
typedef void (*dequant_fn)(const void *, float *, int64_t);

static void f32_q(const float * x, void * y, int64_t k) { memcpy(y, x, k * 4); }
static void f32_dq(const void * x, float * y, int64_t k) { memcpy(y, x, k * 4); }
static void f16_q(const float * x, void * y, int64_t k) {
    for (int64_t i = 0; i < k; ++i) ((ggml_fp16_t *) y)[i] = GGML_FP32_TO_FP16(x[i]);
}
static void f16_dq(const void * x, float * y, int64_t k) {
    for (int64_t i = 0; i < k; ++i) y[i] = GGML_FP16_TO_FP32(((const ggml_fp16_t *) x)[i]);
}
static void bf16_q(const float * x, void * y, int64_t k) {
    for (int64_t i = 0; i < k; ++i) ((ggml_bf16_t *) y)[i] = GGML_FP32_TO_BF16(x[i]);
}
static void bf16_dq(const void * x, float * y, int64_t k) {
    for (int64_t i = 0; i < k; ++i) y[i] = GGML_BF16_TO_FP32(((const ggml_bf16_t *) x)[i]);
}
// ggml has no dequantize_row_q8_1; this is its q8_1 semantics (qs * d).
static void q8_1_dq(const void * vx, float * y, int64_t k) {
    const block_q8_1 * x = vx;
    for (int64_t i = 0; i < k / QK8_1; ++i)
        for (int j = 0; j < QK8_1; ++j) y[i * QK8_1 + j] = GGML_FP16_TO_FP32(x[i].d) * x[i].qs[j];
}

struct entry { const char * name; uint32_t id; size_t block, bytes; quant_fn q; dequant_fn dq; };

#define Q(fn) ((quant_fn) (fn))
#define DQ(fn) ((dequant_fn) (fn))
static const struct entry entries[] = {
    { "f32",  GGML_TYPE_F32,  1,     4,                  Q(f32_q),  DQ(f32_dq) },
    { "f16",  GGML_TYPE_F16,  1,     2,                  Q(f16_q),  DQ(f16_dq) },
    { "bf16", GGML_TYPE_BF16, 1,     2,                  Q(bf16_q), DQ(bf16_dq) },
    { "q4_0", GGML_TYPE_Q4_0, QK4_0, sizeof(block_q4_0), Q(quantize_row_q4_0_ref), DQ(dequantize_row_q4_0) },
    { "q4_1", GGML_TYPE_Q4_1, QK4_1, sizeof(block_q4_1), Q(quantize_row_q4_1_ref), DQ(dequantize_row_q4_1) },
    { "q5_0", GGML_TYPE_Q5_0, QK5_0, sizeof(block_q5_0), Q(quantize_row_q5_0_ref), DQ(dequantize_row_q5_0) },
    { "q5_1", GGML_TYPE_Q5_1, QK5_1, sizeof(block_q5_1), Q(quantize_row_q5_1_ref), DQ(dequantize_row_q5_1) },
    { "q8_0", GGML_TYPE_Q8_0, QK8_0, sizeof(block_q8_0), Q(quantize_row_q8_0_ref), DQ(dequantize_row_q8_0) },
    { "q8_1", GGML_TYPE_Q8_1, QK8_1, sizeof(block_q8_1), Q(quantize_row_q8_1_ref), DQ(q8_1_dq) },
    { "q2_K", GGML_TYPE_Q2_K, QK_K,  sizeof(block_q2_K), Q(quantize_row_q2_K_ref), DQ(dequantize_row_q2_K) },
    { "q3_K", GGML_TYPE_Q3_K, QK_K,  sizeof(block_q3_K), Q(quantize_row_q3_K_ref), DQ(dequantize_row_q3_K) },
    { "q4_K", GGML_TYPE_Q4_K, QK_K,  sizeof(block_q4_K), Q(quantize_row_q4_K_ref), DQ(dequantize_row_q4_K) },
    { "q5_K", GGML_TYPE_Q5_K, QK_K,  sizeof(block_q5_K), Q(quantize_row_q5_K_ref), DQ(dequantize_row_q5_K) },
    { "q6_K", GGML_TYPE_Q6_K, QK_K,  sizeof(block_q6_K), Q(quantize_row_q6_K_ref), DQ(dequantize_row_q6_K) },
    { "q8_K", GGML_TYPE_Q8_K, QK_K,  sizeof(block_q8_K), Q(quantize_row_q8_K_ref), DQ(dequantize_row_q8_K) },
};

static void put_u32(FILE * f, uint32_t v) {
    unsigned char b[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24 };
    fwrite(b, 1, 4, f);
}

int main(int argc, char ** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]); return 2; }
    static float x[ROWS * COLS], dq[ROWS * COLS];
    make_input(x);
    for (size_t e = 0; e < sizeof(entries) / sizeof(entries[0]); ++e) {
        const struct entry * t = &entries[e];
        const size_t row_bytes = COLS / t->block * t->bytes;
        unsigned char * q = calloc(ROWS, row_bytes);  // zeroed: q8_K leaves bsums unset on 0 rows
        for (int r = 0; r < ROWS; ++r) {
            t->q(x + r * COLS, q + r * row_bytes, COLS);
            t->dq(q + r * row_bytes, dq + r * COLS, COLS);
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", argv[1], t->name);
        FILE * f = fopen(path, "wb");
        if (!f) { perror(path); return 1; }
        fwrite("NXQF", 1, 4, f);
        put_u32(f, 1);
        put_u32(f, t->id);
        put_u32(f, ROWS);
        put_u32(f, COLS);
        put_u32(f, (uint32_t) row_bytes);
        fwrite(x, 4, ROWS * COLS, f);  // little-endian hosts only, as gen.sh checks
        fwrite(q, 1, ROWS * row_bytes, f);
        fwrite(dq, 4, ROWS * COLS, f);
        fclose(f);
        free(q);
    }
    return 0;
}
