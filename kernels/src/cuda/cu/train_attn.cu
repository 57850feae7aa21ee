// ---- Training attention through batched GEMMs (kernels/src/cuda/train_attn.rs) -------------
// The token-major Q/K/V of the training engine are copied head-major ([seq][head][pos][hd]) so
// that every product is one strided batched GEMM on the tensor cores (a batch per sequence and
// KV head, the group's query heads stacked); these kernels do the copies, the softmax and the
// score gradients between the GEMMs. Scores are [seq][head][i][j], a row per query, causal:
// the entries j > i are written as 0 so the GEMMs after them may run over whole rows.

// Between token-major x[seq·L + pos][h·hd + e] and head-major y[seq][h][pos][e]: y from x
// when to_heads, else x from y (overwritten).
extern "C" __global__ void tr_heads_transpose(float* x, float* y, int n_seq, int seq_len, int heads, int hd, int to_heads) {
    DEPENDENT_KERNEL();
    long total = (long)n_seq * heads * seq_len * hd;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        int e = i % hd;
        long r = i / hd;
        int pos = r % seq_len;
        long sh = r / seq_len;
        int h = sh % heads;
        long seq = sh / heads;
        long t = (seq * seq_len + pos) * (long)heads * hd + (long)h * hd + e;
        if (to_heads) y[i] = x[t];
        else x[t] = y[i];
    }
}

// Row i of each batch's scores (rows × seq_len) becomes softmax(scale·s_i·, causal) in place,
// and lse[row] = the log-sum-exp of the scaled scores: one warp per row.
extern "C" __global__ void tr_attn_softmax(float* s, float* lse, long rows, int seq_len, float scale) {
    DEPENDENT_KERNEL();
    int lane = threadIdx.x % WARP;
    long row = blockIdx.x * (long)(blockDim.x / WARP) + threadIdx.x / WARP;
    if (row >= rows) return;
    int i = row % seq_len;
    float* r = s + row * seq_len;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += WARP) mx = fmaxf(mx, r[j] * scale);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int j = lane; j <= i; j += WARP) sum += expf(r[j] * scale - mx);
    sum = warp_sum(sum);
    float inv = 1.f / sum;
    for (int j = lane; j < seq_len; j += WARP) r[j] = j <= i ? expf(r[j] * scale - mx) * inv : 0.f;
    if (lane == 0) lse[row] = mx + logf(sum);
}

// The backward's probabilities from recomputed scores: p_ij = exp(scale·s_ij − lse_i), j ≤ i.
extern "C" __global__ void tr_attn_probs(float* s, const float* lse, long rows, int seq_len, float scale) {
    DEPENDENT_KERNEL();
    long total = rows * seq_len;
    for (long x = blockIdx.x * (long)blockDim.x + threadIdx.x; x < total; x += (long)gridDim.x * blockDim.x) {
        long row = x / seq_len;
        int i = row % seq_len, j = x % seq_len;
        s[x] = j <= i ? expf(s[x] * scale - lse[row]) : 0.f;
    }
}

// dsum[seq][h][pos] = dO·O over one head's row (token-major out and d_out): one warp per row.
extern "C" __global__ void tr_attn_dsum(const float* out, const float* dout, float* dsum, int n_seq, int seq_len, int n_head, int hd) {
    DEPENDENT_KERNEL();
    int lane = threadIdx.x % WARP;
    long task = blockIdx.x * (long)(blockDim.x / WARP) + threadIdx.x / WARP;
    if (task >= (long)n_seq * n_head * seq_len) return;
    int pos = task % seq_len, h = (task / seq_len) % n_head;
    long seq = task / ((long)seq_len * n_head);
    long at = (seq * seq_len + pos) * (long)n_head * hd + (long)h * hd;
    double d = 0.0;
    for (int e = lane; e < hd; e += WARP) d += (double)out[at + e] * (double)dout[at + e];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    if (lane == 0) dsum[task] = (float)d;
}

// dp becomes the scores' gradient: dS_ij = p_ij·(dp_ij − dsum_i)·scale (0 above the diagonal,
// where p is 0).
extern "C" __global__ void tr_attn_dscores(float* dp, const float* p, const float* dsum, long rows, int seq_len, float scale) {
    DEPENDENT_KERNEL();
    long total = rows * seq_len;
    for (long x = blockIdx.x * (long)blockDim.x + threadIdx.x; x < total; x += (long)gridDim.x * blockDim.x) {
        long row = x / seq_len;
        dp[x] = p[x] * (dp[x] - dsum[row]) * scale;
    }
}
