// Training kernels: the element-wise ops, attention and loss of the student's forward and
// backward (train/src/engine on the CPU is the reference each one mirrors), and AdamW.
// Matrix products go through cuBLAS (kernels/src/cuda/train.rs). Every buffer is f32,
// token-major rows; reductions whose CPU reference sums in f64 sum in f64 here too.

// Sum of a double over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ double block_sum_d(double v, double* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double t = lane < nw ? scratch[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : -INFINITY;
    return warp_max(t);
}

// x[t] = table[tokens[t]], rows of d.
extern "C" __global__ void tr_embed(const float* table, const int* tokens, int n, int d, float* x) {
    DEPENDENT_KERNEL();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (long)n * d; i += (long)gridDim.x * blockDim.x) {
        long t = i / d, c = i % d;
        x[i] = table[(long)tokens[t] * d + c];
    }
}

// d_table[row] += dx[t] for every position t of each distinct token row, positions in
// ascending order (the CPU's sums, bit for bit): block b takes rows[b], whose positions are
// pos[offs[b]..offs[b + 1]]; threads over the columns.
extern "C" __global__ void tr_embed_bwd(const int* rows, const int* offs, const int* pos, const float* dx, int d, float* d_table) {
    DEPENDENT_KERNEL();
    int b = blockIdx.x;
    float* dst = d_table + (long)rows[b] * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = dst[c];
        for (int k = offs[b]; k < offs[b + 1]; k++) acc += dx[(long)pos[k] * d + c];
        dst[c] = acc;
    }
}

// out = x · r · w per row, r = 1/sqrt(mean(x²) + eps) (sum in f64); with compute = 0 r is read
// from rstd (the backward's recomputation), else written there. One block per row.
extern "C" __global__ void tr_rmsnorm(const float* x, const float* w, float* rstd, int d, float eps, int compute, float* out) {
    DEPENDENT_KERNEL();
    __shared__ double scratch[32];
    long row = blockIdx.x;
    const float* xr = x + row * d;
    float r;
    if (compute) {
        double s = 0.0;
        for (int i = threadIdx.x; i < d; i += blockDim.x) s += (double)xr[i] * (double)xr[i];
        s = block_sum_d(s, scratch);
        float mean = (float)(s / d);
        r = 1.f / sqrtf(mean + eps);
        if (threadIdx.x == 0) rstd[row] = r;
    } else {
        r = rstd[row];
    }
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[row * d + i] = xr[i] * r * w[i];
}

// dx (= or +=) r·dy·w − x·r³/d·Σ(dy·w·x), one block per row.
extern "C" __global__ void tr_rmsnorm_bwd(const float* x, const float* w, const float* rstd, const float* dy, int d, int accumulate, float* dx) {
    DEPENDENT_KERNEL();
    __shared__ double scratch[32];
    long row = blockIdx.x;
    const float *xr = x + row * d, *dyr = dy + row * d;
    float r = rstd[row];
    double gx = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) gx += (double)(dyr[i] * w[i]) * (double)xr[i];
    gx = block_sum_d(gx, scratch);
    double coef = (double)r * r * r * gx / d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float val = r * dyr[i] * w[i] - (float)((double)xr[i] * coef);
        dx[row * d + i] = accumulate ? dx[row * d + i] + val : val;
    }
}

// dw += Σ_rows dy·x·r (f64 sums): a block of 32 × 32 threads per 32 columns, each thread
// summing every 32nd row of its column, then a column's 32 partial sums added in a fixed order.
extern "C" __global__ void __launch_bounds__(1024) tr_rmsnorm_dw(const float* x, const float* rstd, const float* dy, int rows, int d, float* dw) {
    DEPENDENT_KERNEL();
    __shared__ double part[32][33];
    int lane = threadIdx.x % WARP, g = threadIdx.x / WARP;
    int c = blockIdx.x * WARP + lane;
    double s = 0.0;
    if (c < d)
        for (long t = g; t < rows; t += 32) s += (double)(dy[t * d + c] * x[t * d + c]) * (double)rstd[t];
    part[g][lane] = s;
    __syncthreads();
    if (g == 0 && c < d) {
        double tot = 0.0;
        for (int k = 0; k < 32; k++) tot += part[k][lane];
        dw[c] += (float)tot;
    }
}

// Rotates the pairs (2i, 2i+1) of every head in place by sign·angle(pos, i); row t is at
// position t % seq_len; cos/sin are [pos][pair].
extern "C" __global__ void tr_rope(float* x, const float* cosv, const float* sinv, int rows, int width, int hd, int seq_len, float sign) {
    DEPENDENT_KERNEL();
    int half = hd / 2, pairs = width / 2;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (long)rows * pairs; i += (long)gridDim.x * blockDim.x) {
        long t = i / pairs;
        int p = (int)(i % pairs) % half;
        int pos = (int)(t % seq_len);
        float c = cosv[pos * half + p], s = sign * sinv[pos * half + p];
        float x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x0 * s + x1 * c;
    }
}

extern "C" __global__ void tr_swiglu(const float* gate, const float* up, long n, float* h) {
    DEPENDENT_KERNEL();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float g = gate[i];
        h[i] = g / (1.f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void tr_swiglu_bwd(const float* gate, const float* up, const float* dh, long n, float* d_gate, float* d_up) {
    DEPENDENT_KERNEL();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float g = gate[i], u = up[i], d = dh[i];
        float sig = 1.f / (1.f + expf(-g));
        d_up[i] = d * g * sig;
        d_gate[i] = d * u * sig * (1.f + g * (1.f - sig));
    }
}

// y += a·x
extern "C" __global__ void tr_axpy(float* y, const float* x, long n, float a) {
    DEPENDENT_KERNEL();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) y[i] += a * x[i];
}

// ---- Attention: one warp per (sequence, head, row), head_dim ≤ 256 ------------------------

#define ATT_MAXC 8  // head_dim / 32, rounded up

// Mirrors `TrainAttn` in kernels/src/cuda/train.rs; each kernel uses the buffers it names.
struct AttShape {
    const float *q, *k, *v, *out, *lse, *dout;
    float *o, *lse_out, *dsum, *dq, *dk, *dv;
    int n_seq, seq_len, n_head, n_kv, hd;
    float scale;
};

// q·k over one head (lanes hold q's elements lane + 32m), the sum in every lane.
__device__ __forceinline__ float head_dot(const float* qv, const float* k, int hd) {
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < ATT_MAXC; m++) {
        int e = threadIdx.x % WARP + WARP * m;
        if (e < hd) s += qv[m] * k[e];
    }
    return warp_sum(s);
}

// out_i = softmax(q_i·Kᵀ·scale, causal)·V and lse_i ([seq][head][pos]), FlashAttention-style:
// a block takes ATT_TQ query rows of one (sequence, head), 8 warps of ATT_QPW rows each, and
// walks the keys up to its last row in shared-memory tiles of ATT_TK. Per tile a lane scores
// one key (K rows padded to hd + 1 floats: no bank conflicts), the warp folds the tile into
// the row's running max, sum and output (each lane owns dims lane + 32m), p broadcast by shuffle.
#define ATT_TQ 32
#define ATT_TK 32
#define ATT_QPW (ATT_TQ / 8)

extern "C" __global__ void __launch_bounds__(256) tr_attn_fwd(const AttShape S) {
    extern __shared__ float sm[];
    const int hd = S.hd, hp = hd + 1;
    float* Qs = sm;                // [ATT_TQ][hd]
    float* Ks = Qs + ATT_TQ * hd;  // [ATT_TK][hd + 1]
    float* Vs = Ks + ATT_TK * hp;  // [ATT_TK][hd]
    DEPENDENT_KERNEL();
    int tiles = (S.seq_len + ATT_TQ - 1) / ATT_TQ;
    int tile = blockIdx.x % tiles;
    long sh = blockIdx.x / tiles;
    int h = sh % S.n_head, seq = sh / S.n_head;
    int g = h / (S.n_head / S.n_kv), qd = S.n_head * hd, kvd = S.n_kv * hd;
    long row0 = (long)seq * S.seq_len;
    int q0 = tile * ATT_TQ, nq = min(ATT_TQ, S.seq_len - q0);
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    for (int x = threadIdx.x; x < nq * hd; x += blockDim.x) Qs[x] = S.q[(row0 + q0 + x / hd) * qd + h * hd + x % hd];
    float mx[ATT_QPW], l[ATT_QPW], acc[ATT_QPW][ATT_MAXC];
#pragma unroll
    for (int t = 0; t < ATT_QPW; t++) {
        mx[t] = -INFINITY;
        l[t] = 0.f;
#pragma unroll
        for (int m = 0; m < ATT_MAXC; m++) acc[t][m] = 0.f;
    }
    int last = q0 + nq - 1;
    for (int k0 = 0; k0 <= last; k0 += ATT_TK) {
        int nk = min(ATT_TK, last + 1 - k0);
        __syncthreads();  // the previous tile is consumed (and Q is stored)
        for (int x = threadIdx.x; x < nk * hd; x += blockDim.x) {
            int r = x / hd, e = x % hd;
            long src = (row0 + k0 + r) * kvd + g * hd + e;
            Ks[r * hp + e] = S.k[src];
            Vs[r * hd + e] = S.v[src];
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < ATT_QPW; t++) {
            int r = w + 8 * t, i = q0 + r;
            if (r >= nq || k0 > i) continue;  // warp-uniform
            int j = k0 + lane;
            float s = -INFINITY;
            if (lane < nk && j <= i) {
                float d = 0.f;
                for (int e = 0; e < hd; e++) d += Qs[r * hd + e] * Ks[lane * hp + e];
                s = d * S.scale;
            }
            float mn = fmaxf(mx[t], warp_max(s));  // finite: key k0 ≤ i is in every tile seen
            float p = s == -INFINITY ? 0.f : expf(s - mn);
            float corr = expf(mx[t] - mn);
            l[t] = l[t] * corr + warp_sum(p);
            mx[t] = mn;
#pragma unroll
            for (int m = 0; m < ATT_MAXC; m++) acc[t][m] *= corr;
            for (int jj = 0; jj < nk; jj++) {
                float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
                for (int m = 0; m < ATT_MAXC; m++) {
                    int e = lane + WARP * m;
                    if (e < hd) acc[t][m] += pj * Vs[jj * hd + e];
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < ATT_QPW; t++) {
        int r = w + 8 * t;
        if (r >= nq) continue;
        float* o = S.o + (row0 + q0 + r) * qd + h * hd;
        float inv = 1.f / l[t];
#pragma unroll
        for (int m = 0; m < ATT_MAXC; m++) {
            int e = lane + WARP * m;
            if (e < hd) o[e] = acc[t][m] * inv;
        }
        if (lane == 0) S.lse_out[(sh * S.seq_len) + q0 + r] = mx[t] + logf(l[t]);
    }
}

// dq_i = Σ_j dS_ij·k_j with dS = P ⊙ (dO·Vᵀ − D)·scale; writes D_i = dO_i·O_i for tr_attn_bwd_dkv.
extern "C" __global__ void tr_attn_bwd_dq(const AttShape S) {
    const float *q = S.q, *k = S.k, *v = S.v, *out = S.out, *lse = S.lse, *dout = S.dout;
    float *dsum = S.dsum, *dq = S.dq;
    DEPENDENT_KERNEL();
    int lane = threadIdx.x % WARP;
    long task = blockIdx.x * (long)(blockDim.x / WARP) + threadIdx.x / WARP;
    if (task >= (long)S.n_seq * S.n_head * S.seq_len) return;
    int i = task % S.seq_len, h = (task / S.seq_len) % S.n_head, seq = task / ((long)S.seq_len * S.n_head);
    int g = h / (S.n_head / S.n_kv), qd = S.n_head * S.hd, kvd = S.n_kv * S.hd;
    long row0 = (long)seq * S.seq_len, at = (row0 + i) * qd + h * S.hd;
    const float* kb = k + row0 * kvd + g * S.hd;
    const float* vb = v + row0 * kvd + g * S.hd;
    float qv[ATT_MAXC], dov[ATT_MAXC], acc[ATT_MAXC];
    double dd = 0.0;
#pragma unroll
    for (int m = 0; m < ATT_MAXC; m++) {
        int e = lane + WARP * m;
        qv[m] = e < S.hd ? q[at + e] : 0.f;
        dov[m] = e < S.hd ? dout[at + e] : 0.f;
        if (e < S.hd) dd += (double)out[at + e] * (double)dov[m];
        acc[m] = 0.f;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dd += __shfl_xor_sync(0xffffffffu, dd, o);
    float D = (float)dd, l = lse[task];
    if (lane == 0) dsum[task] = D;
    for (int j = 0; j <= i; j++) {
        float p = expf(head_dot(qv, kb + (long)j * kvd, S.hd) * S.scale - l);
        float dp = head_dot(dov, vb + (long)j * kvd, S.hd);
        float ds = p * (dp - D) * S.scale;
#pragma unroll
        for (int m = 0; m < ATT_MAXC; m++) {
            int e = lane + WARP * m;
            if (e < S.hd) acc[m] += ds * kb[(long)j * kvd + e];
        }
    }
#pragma unroll
    for (int m = 0; m < ATT_MAXC; m++) {
        int e = lane + WARP * m;
        if (e < S.hd) dq[at + e] = acc[m];
    }
}

// dk_j = Σ_{h in group, i ≥ j} dS_ij·q_i, dv_j = Σ P_ij·dO_i: one warp per (sequence, kv head, j).
extern "C" __global__ void tr_attn_bwd_dkv(const AttShape S) {
    const float *q = S.q, *k = S.k, *v = S.v, *lse = S.lse, *dout = S.dout, *dsum = S.dsum;
    float *dk = S.dk, *dv = S.dv;
    DEPENDENT_KERNEL();
    int lane = threadIdx.x % WARP;
    long task = blockIdx.x * (long)(blockDim.x / WARP) + threadIdx.x / WARP;
    if (task >= (long)S.n_seq * S.n_kv * S.seq_len) return;
    int j = task % S.seq_len, g = (task / S.seq_len) % S.n_kv, seq = task / ((long)S.seq_len * S.n_kv);
    int group = S.n_head / S.n_kv, qd = S.n_head * S.hd, kvd = S.n_kv * S.hd;
    long row0 = (long)seq * S.seq_len, at = (row0 + j) * kvd + g * S.hd;
    float kv_[ATT_MAXC], vv[ATT_MAXC], gk[ATT_MAXC], gv[ATT_MAXC];
#pragma unroll
    for (int m = 0; m < ATT_MAXC; m++) {
        int e = lane + WARP * m;
        kv_[m] = e < S.hd ? k[at + e] : 0.f;
        vv[m] = e < S.hd ? v[at + e] : 0.f;
        gk[m] = 0.f;
        gv[m] = 0.f;
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        long st = ((long)seq * S.n_head + h) * S.seq_len;
        for (int i = j; i < S.seq_len; i++) {
            const float* qi = q + (row0 + i) * qd + h * S.hd;
            const float* doi = dout + (row0 + i) * qd + h * S.hd;
            float p = expf(head_dot(kv_, qi, S.hd) * S.scale - lse[st + i]);
            float dp = head_dot(vv, doi, S.hd);
            float ds = p * (dp - dsum[st + i]) * S.scale;
#pragma unroll
            for (int m = 0; m < ATT_MAXC; m++) {
                int e = lane + WARP * m;
                if (e < S.hd) {
                    gv[m] += p * doi[e];
                    gk[m] += ds * qi[e];
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < ATT_MAXC; m++) {
        int e = lane + WARP * m;
        if (e < S.hd) {
            dk[at + e] = gk[m];
            dv[at + e] = gv[m];
        }
    }
}

// ---- The fused head and loss (train/src/engine/head_loss.rs), per row of a vocabulary chunk ----

// Mirrors `LossRow` in kernels/src/cuda/train.rs.
struct LossRow {
    double s_sum, st_sum, tt_sum, kl;
    float s_max, st_max, tt_max, s_best, t_best, z_target;
    int s_arg, t_arg;
};

#define IGNORE_TARGET (-1)

// Folds xs·scale into an online log-sum-exp (max, sum relative to max): the block's share.
__device__ void lse_add(const float* xs, int c, float scale, float* mx, double* sum, float* fs, double* ds) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, xs[j] * scale);
    m = block_max(m, fs);
    float cur = *mx;
    if (m > cur) cur = m;
    double s = 0.0;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += (double)expf(xs[j] * scale - cur);
    s = block_sum_d(s, ds);
    if (threadIdx.x == 0) {
        if (m > *mx) *sum *= exp((double)(*mx - m));
        *mx = cur;
        *sum += s;
    }
    __syncthreads();
}

// The first index of the chunk's largest element, then kept when strictly above the best so far.
__device__ void argmax_add(const float* xs, int c, int v0, float* best, int* arg, float* fs) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, xs[j]);
    m = block_max(m, fs);
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        if (xs[j] == m) idx = min(idx, j);
    idx = -block_max((float)-idx, fs);  // chunks are far below 2^24 columns: exact in f32
    if (threadIdx.x == 0 && m > *best) {
        *best = m;
        *arg = v0 + idx;
    }
    __syncthreads();
}

// First pass over one chunk `zs` (n × c student logits, `zt` the teacher's or null).
extern "C" __global__ void tr_loss_stats(const float* zs, const float* zt, const int* targets, int c, int v0, float inv_t, LossRow* rows) {
    DEPENDENT_KERNEL();
    __shared__ float fs[32];
    __shared__ double ds[32];
    long i = blockIdx.x;
    LossRow* st = rows + i;
    const float* z = zs + i * c;
    lse_add(z, c, 1.f, &st->s_max, &st->s_sum, fs, ds);
    argmax_add(z, c, v0, &st->s_best, &st->s_arg, fs);
    int tgt = targets[i];
    if (threadIdx.x == 0 && tgt >= v0 && tgt < v0 + c) st->z_target = z[tgt - v0];
    if (zt) {
        const float* t = zt + i * c;
        lse_add(z, c, inv_t, &st->st_max, &st->st_sum, fs, ds);
        lse_add(t, c, inv_t, &st->tt_max, &st->tt_sum, fs, ds);
        argmax_add(t, c, v0, &st->t_best, &st->t_arg, fs);
    }
}

// Second pass: zs becomes ∂loss/∂logits = ce_w·(softmax(s) − onehot) + kl_w·(softmax(s/T) − softmax(t/T));
// each row's KL share is added to rows[i].kl.
extern "C" __global__ void tr_loss_grad(float* zs, const float* zt, const int* targets, int c, int v0, float inv_t, float temp,
                                        float ce_w, float kl_w, LossRow* rows) {
    DEPENDENT_KERNEL();
    __shared__ double ds[32];
    long i = blockIdx.x;
    LossRow* st = rows + i;
    float* z = zs + i * c;
    int tgt = targets[i];
    if (tgt == IGNORE_TARGET) {
        for (int j = threadIdx.x; j < c; j += blockDim.x) z[j] = 0.f;
        return;
    }
    float lse_s = (float)((double)st->s_max + log(st->s_sum));
    if (!zt) {
        for (int j = threadIdx.x; j < c; j += blockDim.x) z[j] = ce_w * expf(z[j] - lse_s);
    } else {
        const float* t = zt + i * c;
        float lse_st = (float)((double)st->st_max + log(st->st_sum));
        float lse_tt = (float)((double)st->tt_max + log(st->tt_sum));
        double kl = 0.0;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            float s = z[j];
            float p_s = expf(s - lse_s);
            float log_q = s * inv_t - lse_st;
            float log_p = t[j] * inv_t - lse_tt;
            float p = expf(log_p);
            float qq = temp == 1.f ? p_s : expf(log_q);
            kl += (double)p * (double)(log_p - log_q);
            z[j] = ce_w * p_s + kl_w * (qq - p);
        }
        kl = block_sum_d(kl, ds);
        if (threadIdx.x == 0) st->kl += kl;
    }
    __syncthreads();
    if (threadIdx.x == 0 && tgt >= v0 && tgt < v0 + c) z[tgt - v0] -= ce_w;
}

// ---- Optimizer ----------------------------------------------------------------------------

// Mirrors `AdamArgs` in kernels/src/cuda/train.rs (the constants of train/src/optim.rs's Coefficients).
struct AdamArgs {
    float *p;
    const float* g;
    float *m, *v;
    long n;
    float keep, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias2_sqrt, eps;
};

extern "C" __global__ void tr_adamw(const AdamArgs k) {
    DEPENDENT_KERNEL();
    float *p = k.p, *m = k.m, *v = k.v;
    const float* g = k.g;
    long n = k.n;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float pi = p[i] * k.keep;
        float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
        float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
        float denom = sqrtf(vi) / k.bias2_sqrt + k.eps;
        p[i] = pi - k.step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

// partial[b] = Σ x² over block b's grid-stride share (f64); the host adds the partials in order.
extern "C" __global__ void tr_sum_squares(const float* x, long n, double* partial) {
    DEPENDENT_KERNEL();
    __shared__ double ds[32];
    double s = 0.0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) s += (double)x[i] * (double)x[i];
    s = block_sum_d(s, ds);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

extern "C" __global__ void tr_scale(float* x, long n, float a) {
    DEPENDENT_KERNEL();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) x[i] *= a;
}

// Zeroes the first `sink` rows (of `width` floats) of each of `n_seq` sequences of `seq_len`
// rows: the attention-sink positions the anchoring terms leave out.
extern "C" __global__ void tr_zero_sink_rows(float* x, int n_seq, int seq_len, int sink, int width) {
    DEPENDENT_KERNEL();
    long per_seq = (long)sink * width, total = per_seq * n_seq;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x)
        x[(i / per_seq) * seq_len * (long)width + i % per_seq] = 0.0f;
}
