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

// Causal attention of n_tok queries at positions state[1] + t over the f16 cache (which already
// holds them): one warp per (token, head), keys in order with an online softmax, GQA read in
// place. Simple rather than tiled: the GEMMs dominate prompt processing at these lengths.
struct AttnPrefillArgs {
    u64 q, kc, vc, out, state;
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
        qv[i] = lane + WARP * i < hd ? q[lane + WARP * i] * A.scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const __half* kc = (const __half*)A.kc + kvh * hd;
    const __half* vc = (const __half*)A.vc + kvh * hd;
    for (int p = 0; p <= last; p++) {
        const __half* kr = kc + (u64)p * kvd;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < MAX_HD_LANE; i++)
            if (lane + WARP * i < hd) dot = fmaf(qv[i], __half2float(kr[lane + WARP * i]), dot);
        dot = warp_sum(dot);
        float m_new = fmaxf(m, dot);
        float corr = __expf(m - m_new), e = __expf(dot - m_new);
        l = l * corr + e;
        const __half* vr = vc + (u64)p * kvd;
#pragma unroll
        for (int i = 0; i < MAX_HD_LANE; i++)
            if (lane + WARP * i < hd) acc[i] = acc[i] * corr + e * __half2float(vr[lane + WARP * i]);
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
#define FA_Q 16
#define FA_QW (FA_Q / 4)
#define FA_K 32
#define FA_HD 128
extern "C" __global__ void __launch_bounds__(128) attn_prefill_tiled(const AttnPrefillArgs A) {
    DEPENDENT_KERNEL();
    __shared__ __align__(16) float qs[FA_Q][FA_HD];
    // Rows padded by one word: lane j reading row j hits bank (j + d/2) % 32, all different.
    __shared__ __align__(16) __half ks[FA_K][FA_HD + 2];
    __shared__ __align__(16) __half vs[FA_K][FA_HD];
    const int hd = A.hd, kvd = A.n_kv * hd, h = blockIdx.y, kvh = h / (A.n_head / A.n_kv);
    const int t0 = blockIdx.x * FA_Q, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int base = ((const int*)A.state)[1];
    const int nq = min(FA_Q, A.n_tok - t0);
    for (int i = threadIdx.x; i < FA_Q * hd; i += blockDim.x) {
        int t = i / hd, d = i % hd;
        qs[t][d] = t < nq ? ((const float*)A.q)[((u64)(t0 + t) * A.n_head + h) * hd + d] * A.scale : 0.f;
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
        __syncthreads();
        float s[FA_QW];
#pragma unroll
        for (int qi = 0; qi < FA_QW; qi++) s[qi] = 0.f;
        for (int d = 0; d < hd; d += 2) {
            float2 k = __half22float2(*(const __half2*)&ks[lane][d]);
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
            for (int i = 0; i < FA_HD / WARP; i++) v[i] = lane + WARP * i < hd ? __half2float(vs[j][lane + WARP * i]) : 0.f;
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
