// Prompt processing: many tokens per launch. The projections are cuBLAS GEMMs over weights
// dequantized to f16 (one matrix at a time, into a reused scratch); these kernels prepare their
// f16 inputs and do the per-token work around them. Activations stay f32 between GEMMs.

// x[t] = row tokens[t] of the embedding, as f32.
struct EmbedBatchArgs {
    Mat w;
    u64 tokens, out;
    int ty, cols, n_tok, pad;
};
extern "C" __global__ void embed_batch(const EmbedBatchArgs A) {
    DEPENDENT_KERNEL();
    int t = blockIdx.y;
    int tok = ((const int*)A.tokens)[t];
    float* out = (float*)A.out + (u64)t * A.cols;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < A.cols; c += gridDim.x * blockDim.x)
        out[c] = dequant_elem(A.ty, A.w, A.cols, tok, c);
}

// out[t] = f16(x[t] / rms(x[t]) * w): one block per token row, as the decode mat-vec's
// fused norm computes it.
extern "C" __global__ void rmsnorm_f16(const float* x, const float* w, __half* out, int cols, float eps) {
    DEPENDENT_KERNEL();
    __shared__ float scratch[32];
    const float* xr = x + (u64)blockIdx.x * cols;
    __half* o = out + (u64)blockIdx.x * cols;
    float ss = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    float rs = 1.f / sqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = __float2half(xr[i] * rs * w[i]);
}

extern "C" __global__ void to_f16(const float* x, __half* out, u64 n) {
    DEPENDENT_KERNEL();
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        out[i] = __float2half(x[i]);
}

// out = f16(silu(gate) * up) over n elements: the down projection's GEMM input.
extern "C" __global__ void swiglu_f16(const float* gate, const float* up, __half* out, u64 n) {
    DEPENDENT_KERNEL();
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = __float2half(g / (1.f + expf(-g)) * up[i]);
    }
}

// y[t][r] += bias[r] for n_tok rows of `rows` (Qwen2's Q/K/V biases after their GEMMs).
extern "C" __global__ void add_bias(float* y, const float* bias, int rows, u64 n) {
    DEPENDENT_KERNEL();
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        y[i] += bias[i % rows];
}

// Rows [r0, r0 + n_rows) of a weight in device layout, dequantized to f16 row-major.
struct DequantArgs {
    Mat w;
    u64 out;
    int ty, cols, r0, n_rows;
};
extern "C" __global__ void dequant_f16(const DequantArgs A) {
    DEPENDENT_KERNEL();
    u64 n = (u64)A.n_rows * A.cols;
    __half* out = (__half*)A.out;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        int r = (int)(i / A.cols), c = (int)(i % A.cols);
        out[i] = __float2half(dequant_elem(A.ty, A.w, A.cols, A.r0 + r, c));
    }
}

// Causal attention of n_tok queries at positions state[1] + t over the cache (which already
// holds them; f16, or Q8_0 for a side whose scales pointer is set, see kv_elem): one warp per
// (token, head), keys in order with an online softmax, GQA read in place. The fallback of the
// tiled kernel below (head sizes past FA_HD), and the reference it is tested beside.
struct AttnPrefillArgs {
    u64 q, kc, vc, ks, vs, out, state;
    float scale;
    int n_head, n_kv, hd, n_tok;
};
extern "C" __global__ void attn_prefill(const AttnPrefillArgs A) {
    DEPENDENT_KERNEL();
    const int gw = (blockIdx.x * blockDim.x + threadIdx.x) / WARP, lane = threadIdx.x % WARP;
    const int h = gw % A.n_head, t = gw / A.n_head;
    if (t >= A.n_tok) return;  // whole warps leave together
    const int hd = A.hd, kvd = A.n_kv * hd, kvh = h / (A.n_head / A.n_kv);
    const int last = ((const int*)A.state)[1] + t;
    const float* q = (const float*)A.q + ((u64)t * A.n_head + h) * hd;
    float qv[MAX_HD_LANE], acc[MAX_HD_LANE];
#pragma unroll
    for (int i = 0; i < MAX_HD_LANE; i++) {
        float v = lane + WARP * i < hd ? q[lane + WARP * i] : 0.f;
        if (A.ks && WARP * i < hd) v = q8_roundtrip_lane(v);
        qv[i] = v * A.scale;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p = 0; p <= last; p++) {
        const u64 row = (u64)p * kvd + kvh * hd;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < MAX_HD_LANE; i++)
            if (lane + WARP * i < hd) dot = fmaf(qv[i], kv_elem(A.kc, A.ks, row + lane + WARP * i), dot);
        dot = warp_sum(dot);
        float m_new = fmaxf(m, dot);
        float corr = __expf(m - m_new), e = __expf(dot - m_new);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < MAX_HD_LANE; i++)
            if (lane + WARP * i < hd) acc[i] = acc[i] * corr + e * kv_elem(A.vc, A.vs, row + lane + WARP * i);
        m = m_new;
    }
    float* out = (float*)A.out + ((u64)t * A.n_head + h) * hd;
#pragma unroll
    for (int i = 0; i < MAX_HD_LANE; i++)
        if (lane + WARP * i < hd) out[lane + WARP * i] = acc[i] / l;
}

// The same attention, tiled (flash-attention style, FMA rather than tensor cores): a block
// takes FA_Q queries of one head (FA_Q / 4 per warp) and walks the keys in tiles of FA_K that
// the whole block loads into shared memory once; a lane scores one key of the tile against
// its warp's queries, the online softmax runs per query over the tile, and each lane
// accumulates its slice of the head's output dimensions. K and V are read once per tile per
// block instead of once per query. Head sizes up to FA_HD (even).
// With a Q8_0 side (Q8) the tiles hold f32: an int8 quant times its f16 scale is exact in f32,
// not in f16.
#define FA_Q 16
#define FA_QW (FA_Q / 4)
#define FA_K 32
#define FA_HD 128
__device__ __forceinline__ float2 tile_pair(const __half* p) { return __half22float2(*(const __half2*)p); }
__device__ __forceinline__ float2 tile_pair(const float* p) { return *(const float2*)p; }
__device__ __forceinline__ float tile_elem(__half v) { return __half2float(v); }
__device__ __forceinline__ float tile_elem(float v) { return v; }
template <typename KT>
__device__ void attn_prefill_tiled_impl(const AttnPrefillArgs& A) {
    __shared__ __align__(16) float qs[FA_Q][FA_HD];
    // Rows padded: lane j reading row j at d hits banks no other lane of its half-warp does.
    __shared__ __align__(16) KT ks[FA_K][FA_HD + 2];
    __shared__ __align__(16) KT vs[FA_K][FA_HD];
    const bool q8 = sizeof(KT) == 4;
    const int hd = A.hd, kvd = A.n_kv * hd, h = blockIdx.y, kvh = h / (A.n_head / A.n_kv);
    const int t0 = blockIdx.x * FA_Q, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int base = ((const int*)A.state)[1];
    const int nq = min(FA_Q, A.n_tok - t0);
    // Q8_0 keys: the query goes through Q8_0 first (q8_roundtrip_lane), then the scale.
    const float qscale = A.ks ? 1.f : A.scale;
    for (int i = threadIdx.x; i < FA_Q * hd; i += blockDim.x) {
        int t = i / hd, d = i % hd;
        qs[t][d] = t < nq ? ((const float*)A.q)[((u64)(t0 + t) * A.n_head + h) * hd + d] * qscale : 0.f;
    }
    if (A.ks) {
        __syncthreads();
        for (int blk = warp; blk < FA_Q * hd / 32; blk += blockDim.x / WARP) {
            float* v = &qs[blk / (hd / 32)][(blk % (hd / 32)) * 32 + lane];
            *v = q8_roundtrip_lane(*v) * A.scale;
        }
    }
    float m[FA_QW], l[FA_QW], o[FA_QW][FA_HD / WARP];
#pragma unroll
    for (int qi = 0; qi < FA_QW; qi++) {
        m[qi] = -INFINITY;
        l[qi] = 0.f;
#pragma unroll
        for (int i = 0; i < FA_HD / WARP; i++) o[qi][i] = 0.f;
    }
    const __half* kc = (const __half*)A.kc + kvh * hd;
    const __half* vc = (const __half*)A.vc + kvh * hd;
    const int last = base + t0 + nq - 1;  // the last key any query of the block sees
    const int half_hd = hd / 2;
    for (int p0 = 0; p0 <= last; p0 += FA_K) {
        __syncthreads();  // the previous tile is used up (and, the first time, q is written)
        if (q8) {
            for (int i = threadIdx.x; i < FA_K * hd; i += blockDim.x) {
                int j = i / hd, d = i % hd, p = p0 + j;
                const u64 off = (u64)p * kvd + kvh * hd + d;
                ks[j][d] = p <= last ? kv_elem(A.kc, A.ks, off) : 0.f;
                vs[j][d] = p <= last ? kv_elem(A.vc, A.vs, off) : 0.f;
            }
        } else {
            for (int i = threadIdx.x; i < FA_K * half_hd; i += blockDim.x) {
                int j = i / half_hd, d2 = i % half_hd, p = p0 + j;
                __half2 kv = __float2half2_rn(0.f), vv = kv;
                if (p <= last) {
                    kv = ((const __half2*)(kc + (u64)p * kvd))[d2];
                    vv = ((const __half2*)(vc + (u64)p * kvd))[d2];
                }
                *(__half2*)&ks[j][2 * d2] = kv;
                *(__half2*)&vs[j][2 * d2] = vv;
            }
        }
        __syncthreads();
        float s[FA_QW];
#pragma unroll
        for (int qi = 0; qi < FA_QW; qi++) s[qi] = 0.f;
        for (int d = 0; d < hd; d += 2) {
            float2 k = tile_pair(&ks[lane][d]);
#pragma unroll
            for (int qi = 0; qi < FA_QW; qi++) {
                float2 q = *(const float2*)&qs[warp * FA_QW + qi][d];
                s[qi] = fmaf(q.x, k.x, fmaf(q.y, k.y, s[qi]));
            }
        }
        const int p = p0 + lane;
        float e[FA_QW];
#pragma unroll
        for (int qi = 0; qi < FA_QW; qi++) {
            const int t = warp * FA_QW + qi;
            if (t >= nq || p > base + t0 + t) s[qi] = -INFINITY;  // causal mask, padding rows
            const float mn = fmaxf(m[qi], warp_max(s[qi]));
            // mn is -inf only for padding rows; position 0 is in every real query's first tile.
            const float corr = mn == -INFINITY ? 1.f : __expf(m[qi] - mn);
            e[qi] = s[qi] == -INFINITY ? 0.f : __expf(s[qi] - mn);
            l[qi] = l[qi] * corr + warp_sum(e[qi]);
#pragma unroll
            for (int i = 0; i < FA_HD / WARP; i++) o[qi][i] *= corr;
            m[qi] = mn;
        }
        for (int j = 0; j < FA_K; j++) {
            float v[FA_HD / WARP];
#pragma unroll
            for (int i = 0; i < FA_HD / WARP; i++) v[i] = lane + WARP * i < hd ? tile_elem(vs[j][lane + WARP * i]) : 0.f;
#pragma unroll
            for (int qi = 0; qi < FA_QW; qi++) {
                const float pj = __shfl_sync(0xffffffffu, e[qi], j);
#pragma unroll
                for (int i = 0; i < FA_HD / WARP; i++) o[qi][i] = fmaf(pj, v[i], o[qi][i]);
            }
        }
    }
#pragma unroll
    for (int qi = 0; qi < FA_QW; qi++) {
        const int t = warp * FA_QW + qi;
        if (t >= nq) continue;
        float* out = (float*)A.out + ((u64)(t0 + t) * A.n_head + h) * hd;
#pragma unroll
        for (int i = 0; i < FA_HD / WARP; i++)
            if (lane + WARP * i < hd) out[lane + WARP * i] = o[qi][i] / l[qi];
    }
}
extern "C" __global__ void __launch_bounds__(128) attn_prefill_tiled(const AttnPrefillArgs A) {
    DEPENDENT_KERNEL();
    attn_prefill_tiled_impl<__half>(A);
}
extern "C" __global__ void __launch_bounds__(128) attn_prefill_tiled_q8(const AttnPrefillArgs A) {
    DEPENDENT_KERNEL();
    attn_prefill_tiled_impl<float>(A);
}

// ---- Prompt GEMM over Q8_0 weights on int8 tensor cores (NEXUS_CUDA_MMQ=1) ----
// The alternative to dequantizing a Q8_0 weight to f16 for cuBLAS: activations are quantized
// to 8 bits per 32 (quantize_q8_rows), and one mma.sync m16n8k32 is exactly one Q8_0 block of
// 16 weight rows against 8 tokens, whose int32 sums are scaled by the two blocks' scales into
// f32 accumulators. A block of 256 threads computes 128 weight rows × 64 tokens; 8 warps of
// 32 × 32, each 2 × 4 mma tiles. Weight and activation tiles of two Q8_0 blocks stream through
// shared memory by cp.async, two stages deep.
#define MQ_BM 128
#define MQ_BN 64
#define MQ_KB 2
#define MQ_BK (32 * MQ_KB)
#define MQ_ROW (MQ_BK + 16)  // smem row stride in bytes: rows g = 0..7 land on different banks

// x16 [n_rows][cols] (f16) → xq (i8, same shape) and xd (f32 [n_rows][cols / 32]): one warp
// per block of 32, scale max|x| / 127, ties to even (as the CPU quantizes activations).
extern "C" __global__ void quantize_q8_rows(const __half* x, i8* xq, float* xd, u64 n_blocks) {
    DEPENDENT_KERNEL();
    const u64 b = (blockIdx.x * (u64)blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (b >= n_blocks) return;  // whole warps leave together
    const float v = __half2float(x[b * 32 + lane]);
    const float amax = warp_max(fabsf(v));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    xq[b * 32 + lane] = (i8)max(-127, min(127, __float2int_rn(v * id)));
    if (lane == 0) xd[b] = amax / 127.f;
}

struct MmqArgs {
    u64 wq, wd;  // weight quants [rows][cols] (i8) and scales [rows][cols / 32] (f16)
    u64 xq, xd;  // activations [n_tok][cols] (i8) and scales [n_tok][cols / 32] (f32)
    u64 y;       // f32 [n_tok][ldy]
    int rows, cols, n_tok, ldy, accumulate, pad;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    // A source size of 0 fills the 16 bytes with zeros and reads nothing (edges of the matrix).
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#else
    __trap();  // Gpu::mmq_q8_0 refuses devices before sm_80
#endif
}

__device__ __forceinline__ void mma_s8(int (&c)[4], const int (&a)[4], const int (&b)[2]) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(256) mmq_q8_0(const MmqArgs A) {
    __shared__ __align__(16) i8 ws[2][MQ_BM][MQ_ROW];
    __shared__ __align__(16) i8 xs[2][MQ_BN][MQ_ROW];
    __shared__ float wds[2][MQ_BM][MQ_KB];
    __shared__ float xds[2][MQ_BN][MQ_KB];
    const int r0 = blockIdx.x * MQ_BM, t0 = blockIdx.y * MQ_BN, tid = threadIdx.x;
    const int lane = tid % WARP, warp = tid / WARP, g = lane / 4, q = lane % 4;
    const int wm = (warp % 4) * 32, wn = (warp / 4) * 32;
    const int nb = A.cols / 32, n_kt = (nb + MQ_KB - 1) / MQ_KB;
    const i8* wq = (const i8*)A.wq;
    const i8* xq = (const i8*)A.xq;
    const u16* wd = (const u16*)A.wd;
    const float* xd = (const float*)A.xd;
    // Everything is the previous kernels' output or a weight; nothing to prefetch before.
    griddep_wait();
    griddep_launch();

    // Stage s gets Q8_0 blocks [kt·MQ_KB, kt·MQ_KB + MQ_KB) of the tile's rows and tokens.
    auto load = [&](int s, int kt) {
        const int k0 = kt * MQ_BK;
        for (int c = tid; c < MQ_BM * (MQ_BK / 16); c += 256) {
            const int r = c / (MQ_BK / 16), k = k0 + (c % (MQ_BK / 16)) * 16;
            const bool ok = r0 + r < A.rows && k < A.cols;
            cp_async16(&ws[s][r][k - k0], ok ? wq + (u64)(r0 + r) * A.cols + k : wq, ok);
        }
        for (int c = tid; c < MQ_BN * (MQ_BK / 16); c += 256) {
            const int t = c / (MQ_BK / 16), k = k0 + (c % (MQ_BK / 16)) * 16;
            const bool ok = t0 + t < A.n_tok && k < A.cols;
            cp_async16(&xs[s][t][k - k0], ok ? xq + (u64)(t0 + t) * A.cols + k : xq, ok);
        }
        for (int c = tid; c < (MQ_BM + MQ_BN) * MQ_KB; c += 256) {
            const int i = c / MQ_KB, b = kt * MQ_KB + c % MQ_KB;
            if (i < MQ_BM) {
                const bool ok = r0 + i < A.rows && b < nb;
                wds[s][i][c % MQ_KB] = ok ? h2f(wd[(u64)(r0 + i) * nb + b]) : 0.f;
            } else {
                const int t = i - MQ_BM;
                const bool ok = t0 + t < A.n_tok && b < nb;
                xds[s][t][c % MQ_KB] = ok ? xd[(u64)(t0 + t) * nb + b] : 0.f;
            }
        }
#if __CUDA_ARCH__ >= 800
        asm volatile("cp.async.commit_group;");
#endif
    };

    float acc[2][4][4] = {};
    load(0, 0);
    for (int kt = 0; kt < n_kt; kt++) {
        const int s = kt & 1;
        if (kt + 1 < n_kt) load(s ^ 1, kt + 1);
#if __CUDA_ARCH__ >= 800
        if (kt + 1 < n_kt) asm volatile("cp.async.wait_group 1;");
        else asm volatile("cp.async.wait_group 0;");
#endif
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < MQ_KB; kb++) {
            int a[2][4], b[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int r = wm + mt * 16 + g;
                a[mt][0] = *(const int*)&ws[s][r][kb * 32 + q * 4];
                a[mt][1] = *(const int*)&ws[s][r + 8][kb * 32 + q * 4];
                a[mt][2] = *(const int*)&ws[s][r][kb * 32 + 16 + q * 4];
                a[mt][3] = *(const int*)&ws[s][r + 8][kb * 32 + 16 + q * 4];
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const int t = wn + nt * 8 + g;
                b[nt][0] = *(const int*)&xs[s][t][kb * 32 + q * 4];
                b[nt][1] = *(const int*)&xs[s][t][kb * 32 + 16 + q * 4];
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const float d0 = wds[s][wm + mt * 16 + g][kb], d1 = wds[s][wm + mt * 16 + g + 8][kb];
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    int c[4] = {0, 0, 0, 0};
                    mma_s8(c, a[mt], b[nt]);
                    const float e0 = xds[s][wn + nt * 8 + 2 * q][kb], e1 = xds[s][wn + nt * 8 + 2 * q + 1][kb];
                    acc[mt][nt][0] = fmaf((float)c[0], d0 * e0, acc[mt][nt][0]);
                    acc[mt][nt][1] = fmaf((float)c[1], d0 * e1, acc[mt][nt][1]);
                    acc[mt][nt][2] = fmaf((float)c[2], d1 * e0, acc[mt][nt][2]);
                    acc[mt][nt][3] = fmaf((float)c[3], d1 * e1, acc[mt][nt][3]);
                }
            }
        }
        __syncthreads();  // stage s is read; the next iteration's load may overwrite it
    }
    float* y = (float*)A.y;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = r0 + wm + mt * 16 + g + (i / 2) * 8, t = t0 + wn + nt * 8 + 2 * q + i % 2;
                if (r < A.rows && t < A.n_tok) {
                    float* out = y + (u64)t * A.ldy + r;
                    *out = A.accumulate ? *out + acc[mt][nt][i] : acc[mt][nt][i];
                }
            }
}
