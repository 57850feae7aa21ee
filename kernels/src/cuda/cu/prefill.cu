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
