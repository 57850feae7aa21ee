// Shared definitions for Nexus's CUDA kernels (compiled at run time by NVRTC).
// Weight layouts are Nexus's device layouts (kernels/src/cuda/layout.rs), not raw ggml
// blocks: quants and scales live in separate arrays so every quant load is 16-byte aligned.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// ggml type ids (GgmlType::id) of the formats with device kernels.
#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

// Programmatic dependent launch (Hopper; kernels/src/cuda/device.rs launches with it): a kernel
// may start while the kernel before it still runs. Before `griddep_wait` a kernel may read only
// what no kernel writes (weights); after it, everything the earlier kernels wrote is visible.
// `griddep_launch` lets the next kernel start its own part before the wait.
__device__ __forceinline__ void griddep_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The first statement of every kernel that prefetches nothing.
#define DEPENDENT_KERNEL() \
    griddep_wait();        \
    griddep_launch()

#define WARP 32
#define INFINITY __int_as_float(0x7f800000)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.f;
    return warp_sum(t);
}

// One weight matrix in device layout. `q`: quants (or the raw F16/BF16/F32 rows, or the K-quant
// superblocks); `a`, `b`: per-block scale arrays whose meaning depends on the type.
struct Mat {
    u64 q, a, b, bias, y;
    int rows, pad;
};

__device__ __forceinline__ float h2f(u16 h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }

// K-quant 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Element `col` of row `row` as f32: embedding lookups and dequantization for prefill GEMMs.
__device__ float dequant_elem(int ty, const Mat& w, int cols, int row, int col) {
    const u8* q = (const u8*)w.q;
    if (ty == T_F32) return ((const float*)q)[(u64)row * cols + col];
    if (ty == T_F16) return h2f(((const u16*)q)[(u64)row * cols + col]);
    if (ty == T_BF16) return bf2f(((const u16*)q)[(u64)row * cols + col]);
    if (ty == T_Q8_0 || ty == T_Q4_0 || ty == T_Q4_1 || ty == T_Q5_0) {
        int nb = cols / 32;
        u64 blk = (u64)row * nb + col / 32;
        int j = col % 32;
        if (ty == T_Q8_0) return h2f(((const u16*)w.a)[blk]) * (float)((const i8*)q)[blk * 32 + j];
        u8 byte = q[blk * 16 + (j % 16)];
        int nib = j < 16 ? (byte & 0xF) : (byte >> 4);
        if (ty == T_Q4_0) return h2f(((const u16*)w.a)[blk]) * (float)(nib - 8);
        if (ty == T_Q4_1) {
            const u16* dm = (const u16*)w.a;
            return h2f(dm[2 * blk]) * (float)nib + h2f(dm[2 * blk + 1]);
        }
        u32 qh = ((const u32*)w.b)[blk];
        int v = nib | (((qh >> j) & 1) << 4);
        return h2f(((const u16*)w.a)[blk]) * (float)(v - 16);
    }
    int nsb = cols / 256;
    u64 sb = (u64)row * nsb + col / 256;
    int e = col % 256;
    if (ty == T_Q4_K || ty == T_Q5_K) {
        const u8* blk = q + sb * (ty == T_Q4_K ? 144 : 176);
        float d = h2f(*(const u16*)blk), dmin = h2f(*(const u16*)(blk + 2));
        const u8* scales = blk + 4;
        int g = e / 64, l = e % 32, hi = (e % 64) >= 32;
        int sc, m;
        scale_min_k4(2 * g + hi, scales, &sc, &m);
        const u8* qs = blk + (ty == T_Q4_K ? 16 : 48);
        int v = hi ? (qs[32 * g + l] >> 4) : (qs[32 * g + l] & 0xF);
        if (ty == T_Q5_K) v |= ((blk[16 + l] >> (2 * g + hi)) & 1) << 4;
        return d * sc * v - dmin * m;
    }
    // Q6_K (repacked): ql[128] qh[64] per superblock in q, scales in a, d in b.
    const u8* ql = q + sb * 192;
    const u8* qh = ql + 128;
    const i8* sc = (const i8*)w.a + sb * 16;
    float d = h2f(((const u16*)w.b)[sb]);
    int n = e / 128, r = e % 128, part = r / 32, l = r % 32;
    const u8* ql_n = ql + 64 * n;
    const u8* qh_n = qh + 32 * n;
    int lo = (part & 1) ? ql_n[l + 32] : ql_n[l];
    lo = (part < 2) ? (lo & 0xF) : (lo >> 4);
    int v = lo | (((qh_n[l] >> (2 * part)) & 3) << 4);
    return d * (float)sc[8 * n + l / 16 + 2 * part] * (float)(v - 32);
}
