// Decode mat-vec: y = W·x for one token, over every weight format with a device layout.
// Each block first prepares x in shared memory (optionally RMS-normalized, then quantized to
// 8-bit blocks of 32 with a scale and a sum, the way the CPU path quantizes activations);
// then each warp takes rows and each lane whole blocks of a row, so a warp's loads of the
// quants are consecutive 16-byte vectors. Several matrices that read the same x (Q/K/V,
// gate/up) run in one launch; gate/up can fuse SwiGLU.

struct MatvecArgs {
    Mat m[3];
    u64 x, norm;
    float eps;
    int cols, n_mats, mode, total_rows, pad;
    // MODE_QKV_ROPE: Mat::pad is the matrix's role (ROLE_Q/K/V); k and v go to the f16 caches
    // at position state[1], q is rotated in place in its output.
    u64 kc, vc, inv_freq, state;
    float freq_scale;
    int hd, rope_dim, kv_dim;
};
// The *_lora kernels' second half of the argument: each matrix's low-rank update, whose
// A-side (u = s·A·x) an earlier lora_down launch computed; each output row adds B[r]·u inside
// the same warp reduction as its product, so B costs only its own bytes.
struct LoraArgs {
    u64 b[3];  // f16 [rows][rank], 0 for a matrix without an adapter
    u64 u[3];  // f32 [rank]
    int rank[3], pad;
};
struct MatvecLoraArgs {
    MatvecArgs m;
    LoraArgs l;
};
#define MODE_STORE 0
#define MODE_ADD 1
#define MODE_SWIGLU 2
#define MODE_QKV_ROPE 3
#define ROLE_Q 0
#define ROLE_K 1
#define ROLE_V 2

__device__ __forceinline__ int dp8(const uint4 a, const uint4 b, const int* x) {
    int s = __dp4a((int)a.x, x[0], 0);
    s = __dp4a((int)a.y, x[1], s);
    s = __dp4a((int)a.z, x[2], s);
    s = __dp4a((int)a.w, x[3], s);
    s = __dp4a((int)b.x, x[4], s);
    s = __dp4a((int)b.y, x[5], s);
    s = __dp4a((int)b.z, x[6], s);
    return __dp4a((int)b.w, x[7], s);
}
// High bits of a Q5 block: bit i of `bits4` moved to bit 4 of byte i.
__device__ __forceinline__ u32 spread4(u32 bits4) {
    return ((bits4 & 1) << 4) | ((bits4 & 2) << 11) | ((bits4 & 4) << 18) | ((bits4 & 8) << 25);
}

template <int TY>
__device__ __forceinline__ float dot_blk32(const Mat& w, u64 blk, const int* x, float2 xds) {
    if (TY == T_Q8_0) {
        const uint4* q = (const uint4*)w.q + blk * 2;
        int s = dp8(q[0], q[1], x);
        return h2f(((const u16*)w.a)[blk]) * xds.x * (float)s;
    } else {
        uint4 v = ((const uint4*)w.q)[blk];
        u32 vv[4] = {v.x, v.y, v.z, v.w};
        uint4 lo, hi;
        u32* l = (u32*)&lo;
        u32* h = (u32*)&hi;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            l[k] = vv[k] & 0x0F0F0F0Fu;
            h[k] = (vv[k] >> 4) & 0x0F0F0F0Fu;
        }
        if (TY == T_Q5_0) {
            u32 qh = ((const u32*)w.b)[blk];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                l[k] |= spread4((qh >> (4 * k)) & 0xF);
                h[k] |= spread4((qh >> (16 + 4 * k)) & 0xF);
            }
        }
        int s = __dp4a((int)lo.x, x[0], 0);
        s = __dp4a((int)lo.y, x[1], s);
        s = __dp4a((int)lo.z, x[2], s);
        s = __dp4a((int)lo.w, x[3], s);
        s = __dp4a((int)hi.x, x[4], s);
        s = __dp4a((int)hi.y, x[5], s);
        s = __dp4a((int)hi.z, x[6], s);
        s = __dp4a((int)hi.w, x[7], s);
        if (TY == T_Q4_1) {
            const u16* dm = (const u16*)w.a;
            return h2f(dm[2 * blk]) * xds.x * (float)s + h2f(dm[2 * blk + 1]) * xds.y;
        }
        float d = h2f(((const u16*)w.a)[blk]);
        float off = TY == T_Q4_0 ? 8.f : 16.f;
        return d * (xds.x * (float)s - off * xds.y);
    }
}

// One group of 64 elements (two 32-element sub-blocks) of a Q4_K / Q5_K superblock.
template <int TY>
__device__ __forceinline__ float dot_k45(const Mat& w, u64 sb, int g, const i8* xq, const float2* xds) {
    const u8* blk = (const u8*)w.q + sb * (TY == T_Q4_K ? 144 : 176);
    float d = h2f(*(const u16*)blk), dmin = h2f(*(const u16*)(blk + 2));
    int sc0, m0, sc1, m1;
    scale_min_k4(2 * g, blk + 4, &sc0, &m0);
    scale_min_k4(2 * g + 1, blk + 4, &sc1, &m1);
    const uint4* qs = (const uint4*)(blk + (TY == T_Q4_K ? 16 : 48) + 32 * g);
    uint4 a = qs[0], b = qs[1];
    u32 v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    u32 hb[8];
    if (TY == T_Q5_K) {
        const uint4* qh = (const uint4*)(blk + 16);
        uint4 c = qh[0], e = qh[1];
        u32 t[8] = {c.x, c.y, c.z, c.w, e.x, e.y, e.z, e.w};
#pragma unroll
        for (int k = 0; k < 8; k++) hb[k] = t[k];
    }
    const int* x0 = (const int*)(xq);
    const int* x1 = (const int*)(xq + 32);
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 lo = v[k] & 0x0F0F0F0Fu, hi = (v[k] >> 4) & 0x0F0F0F0Fu;
        if (TY == T_Q5_K) {
            lo |= ((hb[k] >> (2 * g)) & 0x01010101u) << 4;
            hi |= ((hb[k] >> (2 * g + 1)) & 0x01010101u) << 4;
        }
        s0 = __dp4a((int)lo, x0[k], s0);
        s1 = __dp4a((int)hi, x1[k], s1);
    }
    float2 xa = xds[0], xc = xds[1];
    return d * ((float)sc0 * xa.x * (float)s0 + (float)sc1 * xc.x * (float)s1) -
           dmin * ((float)m0 * xa.y + (float)m1 * xc.y);
}

// One half (128 elements) of a Q6_K superblock (repacked: ql|qh in q, scales in a, d in b).
__device__ __forceinline__ float dot_q6k(const Mat& w, u64 sb, int n, const i8* xq, const float2* xds) {
    const uint4* ql = (const uint4*)((const u8*)w.q + sb * 192 + 64 * n);
    const uint4* qh = (const uint4*)((const u8*)w.q + sb * 192 + 128 + 32 * n);
    const i8* sc = (const i8*)w.a + sb * 16 + 8 * n;
    float d = h2f(((const u16*)w.b)[sb]);
    uint4 l0a = ql[0], l0b = ql[1], l1a = ql[2], l1b = ql[3], ha = qh[0], hb = qh[1];
    u32 L0[8] = {l0a.x, l0a.y, l0a.z, l0a.w, l0b.x, l0b.y, l0b.z, l0b.w};
    u32 L1[8] = {l1a.x, l1a.y, l1a.z, l1a.w, l1b.x, l1b.y, l1b.z, l1b.w};
    u32 H[8] = {ha.x, ha.y, ha.z, ha.w, hb.x, hb.y, hb.z, hb.w};
    float sum = 0.f;
#pragma unroll
    for (int p = 0; p < 4; p++) {
        const int* x = (const int*)(xq + 32 * p);
        int s_lo = 0, s_hi = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            u32 base = (p & 1) ? L1[k] : L0[k];
            u32 nib = (p < 2) ? (base & 0x0F0F0F0Fu) : ((base >> 4) & 0x0F0F0F0Fu);
            u32 q = nib | (((H[k] >> (2 * p)) & 0x03030303u) << 4);
            int qs = (int)__vsub4(q, 0x20202020u);
            if (k < 4) s_lo = __dp4a(qs, x[k], s_lo);
            else s_hi = __dp4a(qs, x[k], s_hi);
        }
        sum += xds[p].x * ((float)sc[2 * p] * (float)s_lo + (float)sc[2 * p + 1] * (float)s_hi);
    }
    return d * sum;
}

// Work items per row: lanes of a warp take items in turn.
template <int TY>
__device__ __forceinline__ int n_items(int cols) {
    if (TY == T_F16 || TY == T_BF16) return (cols & 7) == 0 ? cols / 8 : cols;
    if (TY == T_F32) return cols;
    if (TY == T_Q4_K || TY == T_Q5_K) return cols / 64;
    if (TY == T_Q6_K) return cols / 128;
    return cols / 32;
}

// Partial dot of one work item of row r.
template <int TY>
__device__ __forceinline__ float item_dot(const Mat& w, int r, int it, int cols, const i8* xq, const float2* xds, const float* xf) {
    if (TY == T_F16 || TY == T_BF16) {
        const u16* row = (const u16*)w.q + (u64)r * cols;
        if ((cols & 7) != 0) return (TY == T_F16 ? h2f(row[it]) : bf2f(row[it])) * xf[it];
        uint4 v = ((const uint4*)row)[it];
        u32 vv[4] = {v.x, v.y, v.z, v.w};
        const float4* xv = (const float4*)(xf + it * 8);
        float4 xa = xv[0], xb = xv[1];
        float xs[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float lo = TY == T_F16 ? h2f((u16)(vv[i] & 0xFFFF)) : bf2f((u16)(vv[i] & 0xFFFF));
            float hi = TY == T_F16 ? h2f((u16)(vv[i] >> 16)) : bf2f((u16)(vv[i] >> 16));
            acc = fmaf(lo, xs[2 * i], acc);
            acc = fmaf(hi, xs[2 * i + 1], acc);
        }
        return acc;
    } else if (TY == T_F32) {
        return ((const float*)w.q)[(u64)r * cols + it] * xf[it];
    } else if (TY == T_Q4_K || TY == T_Q5_K) {
        int nsb = cols / 256, sb = it / 4, g = it % 4, xb = sb * 8 + 2 * g;
        return dot_k45<TY>(w, (u64)r * nsb + sb, g, xq + xb * 32, xds + xb);
    } else if (TY == T_Q6_K) {
        int nsb = cols / 256, sb = it / 2, n = it % 2, xb = sb * 8 + 4 * n;
        return dot_q6k(w, (u64)r * nsb + sb, n, xq + xb * 32, xds + xb);
    } else {
        return dot_blk32<TY>(w, (u64)r * (cols / 32) + it, (const int*)(xq + it * 32), xds[it]);
    }
}

// Two rows at once (two rows of one matrix, or gate and up of one row), so each lane has two
// independent loads in flight.
template <int TY>
__device__ __forceinline__ float2 rows_dot2(const Mat& w0, int r0, const Mat& w1, int r1, bool two, int cols,
                                            const i8* xq, const float2* xds, const float* xf, int lane, float2 init) {
    float a0 = init.x, a1 = init.y;
    int n = n_items<TY>(cols);
    // Q8_0: two items per row per pass, so up to four independent 32-byte loads per lane are
    // in flight (profile: the big mat-vecs of a 1B model read at ~1 TB/s with one item per
    // pass). Measured on an H100: Llama-3.2-1B Q8_0 tg128 771 -> 819 t/s; the same change
    // cost Q4_0 and the K-quants 2-6% (more registers per lane), so they keep one per pass.
    // F16/BF16 items are 16 bytes, the least in flight of all types: two per pass as well.
    int it = lane;
#ifdef NEXUS_F16_PASS4
    // Measuring switch NEXUS_CUDA_F16_PASS=4 (compile.rs): four F16/BF16 items per row per
    // pass, as many bytes in flight per lane as Q8_0's two.
    if (TY == T_F16 || TY == T_BF16)
    for (; it + 3 * WARP < n; it += 4 * WARP) {
        float p[4], q[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            p[k] = item_dot<TY>(w0, r0, it + k * WARP, cols, xq, xds, xf);
            q[k] = two ? item_dot<TY>(w1, r1, it + k * WARP, cols, xq, xds, xf) : 0.f;
        }
        a0 += (p[0] + p[1]) + (p[2] + p[3]);
        a1 += (q[0] + q[1]) + (q[2] + q[3]);
    }
#endif
    if (TY == T_Q8_0 || TY == T_F16 || TY == T_BF16)
    for (; it + WARP < n; it += 2 * WARP) {
        float p0 = item_dot<TY>(w0, r0, it, cols, xq, xds, xf);
        float q0 = item_dot<TY>(w0, r0, it + WARP, cols, xq, xds, xf);
        float p1 = two ? item_dot<TY>(w1, r1, it, cols, xq, xds, xf) : 0.f;
        float q1 = two ? item_dot<TY>(w1, r1, it + WARP, cols, xq, xds, xf) : 0.f;
        a0 += p0 + q0;
        a1 += p1 + q1;
    }
    for (; it < n; it += WARP) {
        a0 += item_dot<TY>(w0, r0, it, cols, xq, xds, xf);
        if (two) a1 += item_dot<TY>(w1, r1, it, cols, xq, xds, xf);
    }
    return make_float2(warp_sum(a0), warp_sum(a1));
}

// This lane's share of row r's low-rank term B[r]·u of matrix mi (0 without an adapter).
template <bool LORA>
__device__ __forceinline__ float lora_part(const LoraArgs& L, int mi, int r, int lane) {
    float s = 0.f;
    if (!LORA || L.rank[mi] == 0) return s;
    const int rank = L.rank[mi];
    const u16* b = (const u16*)L.b[mi] + (u64)r * rank;
    const float* u = (const float*)L.u[mi];
    for (int k = lane; k < rank; k += WARP) s = fmaf(h2f(b[k]), u[k], s);
    return s;
}

// Which matrix flat row R of a fused launch belongs to, and its row there.
__device__ __forceinline__ int locate(const MatvecArgs& A, int R, int* r) {
    int mi = 0;
    *r = R;
    while (mi + 1 < A.n_mats && *r >= A.m[mi].rows) {
        *r -= A.m[mi].rows;
        mi++;
    }
    return mi;
}

__device__ __forceinline__ void store_row(const MatvecArgs& A, const Mat& w, int r, float acc) {
    if (w.bias) acc += ((const float*)w.bias)[r];
    float* y = (float*)w.y;
    if (A.mode == MODE_ADD) y[r] += acc;
    else y[r] = acc;
}

// Rows r and r+1 of a Q, K or V projection (a rotary pair: normal RoPE rotates adjacent
// dimensions), rotated like rope_store and stored where attention reads them.
__device__ void store_qkv_pair(const MatvecArgs& A, const Mat& w, int r, float y0, float y1) {
    if (w.bias) {
        y0 += ((const float*)w.bias)[r];
        y1 += ((const float*)w.bias)[r + 1];
    }
    const int role = w.pad, pos = ((const int*)A.state)[1], j = (r % A.hd) / 2;
    if (role != ROLE_V && 2 * j < A.rope_dim) {
        double th = (double)pos * (double)A.freq_scale * ((const double*)A.inv_freq)[j];
        double sn, cs;
        sincos(th, &sn, &cs);
        float c = (float)cs, s = (float)sn;
        float a = y0 * c - y1 * s, b = y0 * s + y1 * c;
        y0 = a;
        y1 = b;
    }
    if (role == ROLE_Q) {
        ((float*)w.y)[r] = y0;
        ((float*)w.y)[r + 1] = y1;
    } else {
        __half* cache = (__half*)(role == ROLE_K ? A.kc : A.vc);
        *(__half2*)(cache + (u64)pos * A.kv_dim + r) = __floats2half2_rn(y0, y1);
    }
}

// Bytes of one row in the quants section.
template <int TY>
__device__ __forceinline__ u64 q_row_bytes(int cols) {
    if (TY == T_F16 || TY == T_BF16) return (u64)cols * 2;
    if (TY == T_F32) return (u64)cols * 4;
    if (TY == T_Q8_0) return cols;
    if (TY == T_Q4_K) return (u64)cols / 256 * 144;
    if (TY == T_Q5_K) return (u64)cols / 256 * 176;
    if (TY == T_Q6_K) return (u64)cols / 256 * 192;
    return cols / 2;
}

// Asks L2 for a row's quants before x is prepared, so the prologue overlaps the DRAM reads.
template <int TY>
__device__ __forceinline__ void prefetch_row(const Mat& w, int r, int cols, int lane) {
    u64 rb = q_row_bytes<TY>(cols);
    const u8* base = (const u8*)w.q + (u64)r * rb;
    for (u64 off = (u64)lane * 128; off < rb; off += WARP * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base + off));
}

// x block `v` (32 values, largest magnitude `amax`, to be multiplied by `scale`) as 8-bit
// values with their scale d and d·Σq, the way the CPU path quantizes activations.
__device__ __forceinline__ void quantize_block(const float* v, float amax, float scale, i8* xq, float2* xds) {
    float id = amax != 0.f ? 127.f / amax : 0.f;
    float d = scale * amax / 127.f;
    int s = 0;
    int packed[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 p = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int q = __float2int_rn(v[4 * k + j] * id);
            s += q;
            p |= ((u32)(q & 0xFF)) << (8 * j);
        }
        packed[k] = (int)p;
    }
    int4* dst = (int4*)xq;
    dst[0] = make_int4(packed[0], packed[1], packed[2], packed[3]);
    dst[1] = make_int4(packed[4], packed[5], packed[6], packed[7]);
    *xds = make_float2(d, d * (float)s);
}

template <int TY, bool LORA>
__device__ void matvec_impl(const MatvecArgs& A, const LoraArgs& L) {
    extern __shared__ __align__(16) u8 smem[];
    __shared__ float scratch[32];
    const bool is_float = TY == T_F16 || TY == T_BF16 || TY == T_F32;
    const int cols = A.cols, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    const float* x = (const float*)A.x;
    const float* nrm = (const float*)A.norm;
    {
        int R = blockIdx.x * nw + warp, r;
        if (A.mode == MODE_SWIGLU) {
            if (R < A.total_rows) {
                prefetch_row<TY>(A.m[0], R, cols, lane);
                prefetch_row<TY>(A.m[1], R, cols, lane);
            }
        } else {
            for (int k = 0; k < 2; k++)
                if (2 * R + k < A.total_rows) {
                    int mi = locate(A, 2 * R + k, &r);
                    prefetch_row<TY>(A.m[mi], r, cols, lane);
                }
        }
    }
    float* xf = (float*)smem;
    float2* xds = (float2*)smem;
    // 16-byte aligned: the quantizer stores whole int4 vectors.
    i8* xq = (i8*)(smem + (((cols / 32) * sizeof(float2) + 15) & ~(size_t)15));
    const int nb = cols / 32;
    // Quantized weights with at most one 32-element block of x per thread (every model's
    // width up to 8192): x is read once, and the RMSNorm weights (constant) before the wait.
    const bool one_block = !is_float && nb <= (int)blockDim.x;
    float4 nv[8];
    if (one_block && nrm && (int)threadIdx.x < nb) {
        const float4* p = (const float4*)(nrm + threadIdx.x * 32);
#pragma unroll
        for (int k = 0; k < 8; k++) nv[k] = p[k];
    }
    // Everything above read only weights; x is the previous kernel's output.
    griddep_wait();
    griddep_launch();
    if (one_block) {
        const int b = threadIdx.x;
        float v[32];
        float ss = 0.f, amax = 0.f;
        if (b < nb) {
            const float4* xv = (const float4*)(x + b * 32);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float4 t = xv[k];
                ss += t.x * t.x + t.y * t.y + t.z * t.z + t.w * t.w;
                if (nrm) {
                    t.x *= nv[k].x;
                    t.y *= nv[k].y;
                    t.z *= nv[k].z;
                    t.w *= nv[k].w;
                }
                v[4 * k] = t.x;
                v[4 * k + 1] = t.y;
                v[4 * k + 2] = t.z;
                v[4 * k + 3] = t.w;
            }
#pragma unroll
            for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(v[k]));
        }
        // The 8-bit values do not depend on the RMS factor, only the block's scale does.
        float rs = 1.f;
        if (nrm) rs = 1.f / sqrtf(block_sum(ss, scratch) / (float)cols + A.eps);
        if (b < nb) quantize_block(v, amax, rs, xq + b * 32, xds + b);
    } else {
        float rs = 1.f;
        if (nrm) {
            float ss = 0.f;
            for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += x[i] * x[i];
            ss = block_sum(ss, scratch);
            rs = 1.f / sqrtf(ss / (float)cols + A.eps);
        }
        if (is_float) {
            for (int i = threadIdx.x; i < cols; i += blockDim.x) xf[i] = nrm ? x[i] * rs * nrm[i] : x[i];
        } else {
            // One thread per 32-element block: no shuffles, so wide rows cost a single pass.
            for (int b = threadIdx.x; b < nb; b += blockDim.x) {
                float v[32];
                const float4* xv = (const float4*)(x + b * 32);
                float amax = 0.f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    float4 t = xv[k];
                    v[4 * k] = t.x;
                    v[4 * k + 1] = t.y;
                    v[4 * k + 2] = t.z;
                    v[4 * k + 3] = t.w;
                }
#pragma unroll
                for (int k = 0; k < 32; k++) {
                    if (nrm) v[k] = v[k] * nrm[b * 32 + k];
                    amax = fmaxf(amax, fabsf(v[k]));
                }
                quantize_block(v, amax, rs, xq + b * 32, xds + b);
            }
        }
    }
    __syncthreads();
    const int step = gridDim.x * nw;
    if (A.mode == MODE_SWIGLU) {
        for (int R = blockIdx.x * nw + warp; R < A.total_rows; R += step) {
            float2 lr = make_float2(lora_part<LORA>(L, 0, R, lane), lora_part<LORA>(L, 1, R, lane));
            float2 gu = rows_dot2<TY>(A.m[0], R, A.m[1], R, true, cols, xq, xds, xf, lane, lr);
            if (lane == 0) ((float*)A.m[0].y)[R] = gu.x / (1.f + expf(-gu.x)) * gu.y;
        }
        return;
    }
    for (int R = 2 * (blockIdx.x * nw + warp); R < A.total_rows; R += 2 * step) {
        int r0, r1;
        int m0 = locate(A, R, &r0);
        bool two = R + 1 < A.total_rows;
        int m1 = two ? locate(A, R + 1, &r1) : m0;
        if (!two) r1 = r0;
        float2 lr = make_float2(lora_part<LORA>(L, m0, r0, lane), two ? lora_part<LORA>(L, m1, r1, lane) : 0.f);
        float2 acc = rows_dot2<TY>(A.m[m0], r0, A.m[m1], r1, two, cols, xq, xds, xf, lane, lr);
        if (lane == 0) {
            // Rows come in pairs of one matrix here: the host checks every matrix has even rows.
            if (A.mode == MODE_QKV_ROPE) store_qkv_pair(A, A.m[m0], r0, acc.x, acc.y);
            else {
                store_row(A, A.m[m0], r0, acc.x);
                if (two) store_row(A, A.m[m1], r1, acc.y);
            }
        }
    }
}

// Each type twice: the base kernel, compiled exactly as without adapters (LORA = false removes
// every adapter branch), and the *_lora variant used only for jobs with an adapter attached.
// NEXUS_MV_MINB (measuring switch NEXUS_CUDA_MV_MINB, compile.rs) asks the compiler for
// registers that let that many 256-thread blocks share an SM (4: at most 64 per thread).
#ifndef NEXUS_MV_MINB
#define NEXUS_MV_MINB 1
#endif
#define MATVEC(name, ty)                                                                       \
    extern "C" __global__ void __launch_bounds__(256, NEXUS_MV_MINB) name(const MatvecArgs A) { \
        const LoraArgs none = {};                                                              \
        matvec_impl<ty, false>(A, none);                                                       \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(256, NEXUS_MV_MINB) name##_lora(const MatvecLoraArgs A) { \
        matvec_impl<ty, true>(A.m, A.l);                                                       \
    }
MATVEC(matvec_f32, T_F32)
MATVEC(matvec_f16, T_F16)
MATVEC(matvec_bf16, T_BF16)
MATVEC(matvec_q8_0, T_Q8_0)
MATVEC(matvec_q4_0, T_Q4_0)
MATVEC(matvec_q4_1, T_Q4_1)
MATVEC(matvec_q5_0, T_Q5_0)
MATVEC(matvec_q4_k, T_Q4_K)
MATVEC(matvec_q5_k, T_Q5_K)
MATVEC(matvec_q6_k, T_Q6_K)

// u = s·A·x for the adapters of up to three matrices that read one x (RMS-normalized and
// scaled by `norm` when set, as the mat-vec's input is). One block per row of A, its threads
// splitting the columns, so even an 8192-wide row (ffn_down) is a few loads per thread; each
// block sums x² itself, so no step spans blocks. A is f16 [rank][cols] with the adapter's
// scale folded in; u is f32. Launched just before the *_lora mat-vec that reads u.
struct LoraDownArgs {
    u64 a[3], u[3];
    u64 x, norm;
    float eps;
    int cols, n_mats, total_rank;
    int rank[3], pad;
};

extern "C" __global__ void __launch_bounds__(128) lora_down(const LoraDownArgs L) {
    __shared__ float scratch[32];
    int mi = 0, j = blockIdx.x;
    while (mi + 1 < L.n_mats && j >= L.rank[mi]) {
        j -= L.rank[mi];
        mi++;
    }
    const u16* a = (const u16*)L.a[mi] + (u64)j * L.cols;
    for (int off = threadIdx.x * 64; off < L.cols; off += blockDim.x * 64)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(a + off));
    // A is a weight; x is the previous kernel's output.
    griddep_wait();
    griddep_launch();
    const float* x = (const float*)L.x;
    const float* nrm = (const float*)L.norm;
    float ss = 0.f, dot = 0.f;
    if ((L.cols & 7) == 0) {
        for (int i = threadIdx.x * 8; i < L.cols; i += blockDim.x * 8) {
            uint4 w = *(const uint4*)(a + i);
            u32 ww[4] = {w.x, w.y, w.z, w.w};
            const float4* xv = (const float4*)(x + i);
            float4 xa = xv[0], xb = xv[1];
            float xs[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float v = xs[k];
                ss = fmaf(v, v, ss);
                if (nrm) v *= nrm[i + k];
                dot = fmaf(h2f((u16)(k & 1 ? ww[k / 2] >> 16 : ww[k / 2] & 0xFFFF)), v, dot);
            }
        }
    } else {
        for (int i = threadIdx.x; i < L.cols; i += blockDim.x) {
            float v = x[i];
            ss = fmaf(v, v, ss);
            if (nrm) v *= nrm[i];
            dot = fmaf(h2f(a[i]), v, dot);
        }
    }
    dot = block_sum(dot, scratch);
    if (nrm) dot *= 1.f / sqrtf(block_sum(ss, scratch) / (float)L.cols + L.eps);
    if (threadIdx.x == 0) ((float*)L.u[mi])[j] = dot;
}
