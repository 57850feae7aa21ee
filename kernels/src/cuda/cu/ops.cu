// Small per-token operations of the decode step. The token id and the position live in device
// memory (`state[0]` = token, `state[1]` = position) so one captured graph serves every step.

struct EmbedArgs {
    Mat w;
    u64 state, out;
    int ty, cols;
};
extern "C" __global__ void embed(const EmbedArgs A) {
    DEPENDENT_KERNEL();
    int tok = ((const int*)A.state)[0];
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < A.cols; c += gridDim.x * blockDim.x)
        ((float*)A.out)[c] = dequant_elem(A.ty, A.w, A.cols, tok, c);
}

// A side (keys or values) of one layer's KV cache: f16 rows [pos][kv_dim], or, when `scales`
// is set, Q8_0 rows: int8 quants [pos][kv_dim] and one f16 scale per 32 of them
// [pos][kv_dim / 32]. Element `off` (= pos * kv_dim + dim) as f32.
__device__ __forceinline__ float kv_elem(u64 data, u64 scales, u64 off) {
    if (scales) return (float)((const i8*)data)[off] * h2f(((const u16*)scales)[off / 32]);
    return __half2float(((const __half*)data)[off]);
}

// v, one of 32 values held one per lane of the warp, after a round trip through Q8_0 the way
// the CPU quantizes activations (scale 127 / max |v|, ties to even, the scale kept as f16).
// Attention puts the query through it when the keys are Q8_0, as llama.cpp and the CPU
// backend do. Every lane of the warp must call it.
__device__ __forceinline__ float q8_roundtrip_lane(float v) {
    const float amax = warp_max(fabsf(v));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    const int q = max(-127, min(127, __float2int_rn(v * id)));
    return (float)q * __half2float(__float2half_rn(amax / 127.f));
}

// RoPE on Q (in place) and K, then K and V stored as f16 at the current position; a Q8_0
// side (its scales pointer set) is left in f32 for kv_store_q8 instead, the keys rotated.
// One thread per (head, pair of dims); pairs past rope_dim/2 are copied unrotated.
struct RopeArgs {
    u64 q, k, v, kc, vc, ks, vs, inv_freq, state;
    float freq_scale;
    int n_head, n_kv, hd, rope_dim, neox, n_tok;
};
extern "C" __global__ void rope_store(const RopeArgs A) {
    DEPENDENT_KERNEL();
    int half_hd = A.hd / 2, half_rot = A.rope_dim / 2;
    int heads = A.n_head + A.n_kv;
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;  // token within the batch
    if (idx >= heads * half_hd) return;
    int head = idx / half_hd, j = idx % half_hd;
    int pos = ((const int*)A.state)[1] + t;
    int qd = A.n_head * A.hd, kvd = A.n_kv * A.hd;
    float* base = head < A.n_head ? (float*)A.q + (u64)t * qd + head * A.hd
                                  : (float*)A.k + (u64)t * kvd + (head - A.n_head) * A.hd;
    int a, b;
    float x0, x1, y0, y1;
    if (j < half_rot) {
        if (A.neox) { a = j; b = j + half_rot; }
        else { a = 2 * j; b = 2 * j + 1; }
        double th = (double)pos * (double)A.freq_scale * ((const double*)A.inv_freq)[j];
        double s, c;
        sincos(th, &s, &c);
        float cf = (float)c, sf = (float)s;
        x0 = base[a];
        x1 = base[b];
        y0 = x0 * cf - x1 * sf;
        y1 = x0 * sf + x1 * cf;
    } else {
        a = A.rope_dim + 2 * (j - half_rot);
        b = a + 1;
        y0 = base[a];
        y1 = base[b];
    }
    if (head < A.n_head || A.ks) {
        base[a] = y0;
        base[b] = y1;
    }
    if (head >= A.n_head) {
        int kh = head - A.n_head;
        u64 off = (u64)pos * kvd + kh * A.hd;
        if (!A.ks) {
            __half* kc = (__half*)A.kc;
            kc[off + a] = __float2half(y0);
            kc[off + b] = __float2half(y1);
        }
        if (!A.vs) {
            __half* vc = (__half*)A.vc;
            const float* v = (const float*)A.v + (u64)t * kvd + kh * A.hd;
            vc[off + a] = __float2half(v[a]);
            vc[off + b] = __float2half(v[b]);
        }
    }
}

// The Q8_0 sides of a layer's cache: keys (already rotated) and values of n_tok tokens, f32
// [n_tok][kv_dim], quantized at positions state[1] + t exactly as the CPU cache stores them
// (kernels::quantize_activation_row). One warp per block of 32; sides stored as f16 (their
// scales pointer 0) are rope_store's.
struct KvStoreArgs {
    u64 k, v, kc, ks, vc, vs, state;
    int kv_dim, n_tok;
};
extern "C" __global__ void kv_store_q8(const KvStoreArgs A) {
    DEPENDENT_KERNEL();
    const int nb = A.kv_dim / 32, lane = threadIdx.x % WARP, t = blockIdx.y;
    const int gw = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    if (gw >= 2 * nb) return;  // whole warps leave together
    const bool is_v = gw >= nb;
    const int b = is_v ? gw - nb : gw;
    const u64 data = is_v ? A.vc : A.kc, scales = is_v ? A.vs : A.ks;
    if (!scales) return;
    const float x = ((const float*)(is_v ? A.v : A.k))[(u64)t * A.kv_dim + b * 32 + lane];
    const float amax = warp_max(fabsf(x));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    const u64 off = (u64)(((const int*)A.state)[1] + t) * A.kv_dim + b * 32 + lane;
    ((i8*)data)[off] = (i8)max(-127, min(127, __float2int_rn(x * id)));
    if (lane == 0) ((__half*)scales)[off / 32] = __float2half_rn(amax / 127.f);
}

// Decode attention, split over the positions ("flash-decoding"): block (h, s) handles query
// head h against positions [s*split, (s+1)*split) of its KV head with an online softmax; the
// last block of a head to finish merges the partial results. GQA reads K/V in place.
struct AttnArgs {
    u64 q, kc, vc, ks, vs, out, part, counter, state;
    float scale;
    int n_head, n_kv, hd, split;
};
#define ATTN_THREADS 256
#define ATTN_GROUP 4
#define MAX_HD_LANE 8
// KQ8 / VQ8: that side of the cache is Q8_0 (its scales in A.ks / A.vs; head sizes are whole
// blocks of 32, so the element a lane reads at dim lane + 32·i has scale i of the head's row).
template <bool KQ8, bool VQ8>
__device__ void attn_decode_impl(const AttnArgs& A) {
    __shared__ float sm_m[ATTN_THREADS / WARP], sm_l[ATTN_THREADS / WARP];
    __shared__ float sm_acc[ATTN_THREADS / WARP][256];
    __shared__ int is_last;
    const int h = blockIdx.x, s = blockIdx.y, n_split = gridDim.y;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = ATTN_THREADS / WARP;
    const int hd = A.hd, kvd = A.n_kv * hd, kvh = h / (A.n_head / A.n_kv);
    const int n_pos = ((const int*)A.state)[1] + 1;
    const int p0 = s * A.split, p1 = min(n_pos, p0 + A.split);
    float qv[MAX_HD_LANE], acc[MAX_HD_LANE];
#pragma unroll
    for (int i = 0; i < MAX_HD_LANE; i++) {
        float v = lane + WARP * i < hd ? ((const float*)A.q)[h * hd + lane + WARP * i] : 0.f;
        if (KQ8 && WARP * i < hd) v = q8_roundtrip_lane(v);
        qv[i] = v * A.scale;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const __half* kc = (const __half*)A.kc + kvh * hd;
    const __half* vc = (const __half*)A.vc + kvh * hd;
    const i8* kq = (const i8*)A.kc + kvh * hd;
    const i8* vq = (const i8*)A.vc + kvh * hd;
    const u16* ksc = (const u16*)A.ks + kvh * hd / 32;
    const u16* vsc = (const u16*)A.vs + kvh * hd / 32;
    // Each warp takes ATTN_GROUP positions per round, so that many K rows and then V rows are
    // loaded before any is used: a position's loads alone are an L2 round trip each, and one
    // position at a time made a 128-position step a chain of 32 of them per warp.
    for (int p = p0 + warp; p < p1; p += nw * ATTN_GROUP) {
        float dot[ATTN_GROUP];
#pragma unroll
        for (int g = 0; g < ATTN_GROUP; g++) {
            const int pg = p + g * nw;
            float d = 0.f;
            if (pg < p1) {
                if (KQ8) {
                    const i8* kr = kq + (u64)pg * kvd;
                    const u16* sr = ksc + (u64)pg * (kvd / 32);
#pragma unroll
                    for (int i = 0; i < MAX_HD_LANE; i++)
                        if (lane + WARP * i < hd) d = fmaf(qv[i], (float)kr[lane + WARP * i] * h2f(sr[i]), d);
                } else {
                    const __half* kr = kc + (u64)pg * kvd;
#pragma unroll
                    for (int i = 0; i < MAX_HD_LANE; i++)
                        if (lane + WARP * i < hd) d = fmaf(qv[i], __half2float(kr[lane + WARP * i]), d);
                }
            }
            dot[g] = d;
        }
        float m_new = m;
#pragma unroll
        for (int g = 0; g < ATTN_GROUP; g++) {
            dot[g] = warp_sum(dot[g]);
            if (p + g * nw < p1) m_new = fmaxf(m_new, dot[g]);
        }
        // m_new is finite (position p is in range), so the first round's corr is exp(-inf) = 0.
        const float corr = __expf(m - m_new);
        l *= corr;
#pragma unroll
        for (int i = 0; i < MAX_HD_LANE; i++) acc[i] *= corr;
#pragma unroll
        for (int g = 0; g < ATTN_GROUP; g++) {
            const int pg = p + g * nw;
            if (pg < p1) {
                const float e = __expf(dot[g] - m_new);
                l += e;
                if (VQ8) {
                    const i8* vr = vq + (u64)pg * kvd;
                    const u16* sr = vsc + (u64)pg * (kvd / 32);
#pragma unroll
                    for (int i = 0; i < MAX_HD_LANE; i++)
                        if (lane + WARP * i < hd) acc[i] = fmaf(e, (float)vr[lane + WARP * i] * h2f(sr[i]), acc[i]);
                } else {
                    const __half* vr = vc + (u64)pg * kvd;
#pragma unroll
                    for (int i = 0; i < MAX_HD_LANE; i++)
                        if (lane + WARP * i < hd) acc[i] = fmaf(e, __half2float(vr[lane + WARP * i]), acc[i]);
                }
            }
        }
        m = m_new;
    }
    // Merge the warps of this block.
    if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
#pragma unroll
    for (int i = 0; i < MAX_HD_LANE; i++)
        if (lane + WARP * i < hd) sm_acc[warp][lane + WARP * i] = acc[i];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nw; w++) M = fmaxf(M, sm_m[w]);
    float L = 0.f;
    for (int w = 0; w < nw; w++) L += sm_m[w] == -INFINITY ? 0.f : sm_l[w] * __expf(sm_m[w] - M);
    float* part = (float*)A.part;
    for (int d = threadIdx.x; d < hd; d += ATTN_THREADS) {
        float o = 0.f;
        for (int w = 0; w < nw; w++)
            if (sm_m[w] != -INFINITY) o += sm_acc[w][d] * __expf(sm_m[w] - M);
        if (n_split == 1) ((float*)A.out)[h * hd + d] = o / L;
        else part[((u64)h * n_split + s) * (hd + 2) + 2 + d] = o;
    }
    if (n_split == 1) return;
    if (threadIdx.x == 0) {
        part[((u64)h * n_split + s) * (hd + 2)] = M;
        part[((u64)h * n_split + s) * (hd + 2) + 1] = L;
    }
    // The last block of head h to arrive merges the splits.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int done = atomicAdd((int*)A.counter + h, 1);
        is_last = done == n_split - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    const volatile float* vp = part + (u64)h * n_split * (hd + 2);
    float GM = -INFINITY;
    for (int k = 0; k < n_split; k++) GM = fmaxf(GM, vp[k * (hd + 2)]);
    float GL = 0.f;
    for (int k = 0; k < n_split; k++) {
        float mk = vp[k * (hd + 2)];
        if (mk != -INFINITY) GL += vp[k * (hd + 2) + 1] * __expf(mk - GM);
    }
    for (int d = threadIdx.x; d < hd; d += ATTN_THREADS) {
        float o = 0.f;
        for (int k = 0; k < n_split; k++) {
            float mk = vp[k * (hd + 2)];
            if (mk != -INFINITY) o += vp[k * (hd + 2) + 2 + d] * __expf(mk - GM);
        }
        ((float*)A.out)[h * hd + d] = o / GL;
    }
    if (threadIdx.x == 0) ((int*)A.counter)[h] = 0;
}
#define ATTN_DECODE(name, kq8, vq8)                                                     \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) name(const AttnArgs A) { \
        DEPENDENT_KERNEL();                                                             \
        attn_decode_impl<kq8, vq8>(A);                                                  \
    }
ATTN_DECODE(attn_decode, false, false)
ATTN_DECODE(attn_decode_kq8, true, false)
ATTN_DECODE(attn_decode_vq8, false, true)
ATTN_DECODE(attn_decode_q8, true, true)

// Greedy pick on the device: state[0] = argmax(logits) (lowest index on ties, as the CPU).
// Each block reduces a slice; the last block to finish reduces the blocks' winners.
// `scratch` holds gridDim.x (value, index) pairs and a zeroed counter after them.
__device__ __forceinline__ void best_of(float& best, int& idx, float ov, int oi) {
    if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
}
__device__ void block_argmax(float& best, int& idx) {
    __shared__ float bv[32];
    __shared__ int bi[32];
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        best_of(best, idx, ov, oi);
    }
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    __syncthreads();
    if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
    __syncthreads();
    best = lane < nw ? bv[lane] : -INFINITY;
    idx = lane < nw ? bi[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        best_of(best, idx, ov, oi);
    }
}
extern "C" __global__ void argmax(const float* logits, int n, int* state, float* scratch) {
    DEPENDENT_KERNEL();
    __shared__ int is_last;
    int chunk = (n + gridDim.x - 1) / gridDim.x;
    int lo = blockIdx.x * chunk, hi = min(n, lo + chunk);
    float best = -INFINITY;
    int idx = 0x7fffffff;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) best_of(best, idx, logits[i], i);
    block_argmax(best, idx);
    int* counter = (int*)(scratch + 2 * gridDim.x);
    if (threadIdx.x == 0) {
        scratch[2 * blockIdx.x] = best;
        scratch[2 * blockIdx.x + 1] = __int_as_float(idx);
        __threadfence();
        is_last = atomicAdd(counter, 1) == gridDim.x - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    const volatile float* vs = scratch;
    best = -INFINITY;
    idx = 0x7fffffff;
    for (int b = threadIdx.x; b < gridDim.x; b += blockDim.x) best_of(best, idx, vs[2 * b], __float_as_int(vs[2 * b + 1]));
    block_argmax(best, idx);
    if (threadIdx.x == 0) {
        state[0] = idx;
        *counter = 0;
    }
}

// Sampling candidates on the device: block b sorts logits [b·TOPK_SLICE, (b+1)·TOPK_SLICE)
// as the CPU sampler orders them (larger first, lower id first on ties, NaN as -inf, +inf
// as the largest finite value) and
// writes its first k as (value, id); a slice shorter than k pads with id -1. Every one of
// the k largest logits overall is among its own slice's k largest, so the host chooses from
// gridDim.x·k candidates instead of the whole vocabulary. One bitonic sort in shared memory
// over 64-bit keys: the value's bits made order-preserving and inverted, then the id.
#define TOPK_SLICE 1024
__device__ __forceinline__ unsigned long long topk_key(float v, int i) {
    // The sampler's order: NaN as -inf, +inf level with the largest finite value.
    if (v != v) v = -INFINITY;
    if (v == INFINITY) v = 3.40282347e+38f;
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)(~u) << 32) | (unsigned)i;
}
extern "C" __global__ void __launch_bounds__(512) topk_slices(const float* logits, int n, int k, float* out_v, int* out_i) {
    DEPENDENT_KERNEL();
    __shared__ unsigned long long s[TOPK_SLICE];
    const int lo = blockIdx.x * TOPK_SLICE;
    for (int t = threadIdx.x; t < TOPK_SLICE; t += blockDim.x) {
        const int i = lo + t;
        s[t] = i < n ? topk_key(logits[i], i) : ~0ull;
    }
    for (int size = 2; size <= TOPK_SLICE; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int t = threadIdx.x; t < TOPK_SLICE / 2; t += blockDim.x) {
                const int i = 2 * t - (t & (stride - 1)), j = i + stride;
                const unsigned long long a = s[i], b = s[j];
                if ((a > b) == ((i & size) == 0)) {
                    s[i] = b;
                    s[j] = a;
                }
            }
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < k; t += blockDim.x) {
        const unsigned long long key = s[t];
        const int id = key == ~0ull ? -1 : (int)(unsigned)key;
        const float v = id < 0 ? -INFINITY : logits[id];
        out_i[blockIdx.x * k + t] = id;
        out_v[blockIdx.x * k + t] = v != v ? -INFINITY : v;
    }
}

// End of a step: the position moves past the tokens just stored.
extern "C" __global__ void advance(int* state, int n) {
    DEPENDENT_KERNEL();
    state[1] += n;
}

// gate = silu(gate) * up, for gate/up projections of different types (not fused).
extern "C" __global__ void swiglu(float* gate, const float* up, int n) {
    DEPENDENT_KERNEL();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        gate[i] = g / (1.f + expf(-g)) * up[i];
    }
}
