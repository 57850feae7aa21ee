//! Device layouts of the weight formats. ggml blocks of 18, 20, 22, 34 or 210 bytes would make
//! every 16-byte vector load misaligned; on the device each matrix is split into a quants array
//! (16-byte aligned per block) and separate scale arrays. Q4_K/Q5_K superblocks (144/176
//! bytes) are already aligned and stay as they are.

use crate::{GgmlType, KernelError};

use super::{CudaError, Gpu, GpuBuffer};

/// Offsets of the sections are multiples of this.
const ALIGN: usize = 256;

/// A matrix `[rows][cols]` in device layout, as bytes on the host (`repack`) or on the GPU.
pub struct Repacked {
    pub bytes: Vec<u8>,
    /// Offsets of the quants (`q`) and of the two scale arrays (`a`, `b`) in `bytes`.
    pub q: usize,
    pub a: usize,
    pub b: usize,
}

pub fn supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q4_K | Q5_K | Q6_K)
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Reorders ggml row-major blocks of `ty` into the device layout the kernels read.
pub fn repack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<Repacked, KernelError> {
    use GgmlType::*;
    if !supported(ty) {
        return Err(KernelError::Unsupported { ty, what: "CUDA" });
    }
    let bs = ty.block_size();
    if !cols.is_multiple_of(bs) {
        return Err(KernelError::Misaligned { ty, n: cols, block: bs });
    }
    let n_blocks = rows * (cols / bs);
    let expected = n_blocks * ty.type_size();
    if data.len() != expected {
        return Err(KernelError::Size { what: "weight for the device", expected, got: data.len() });
    }
    let ts = ty.type_size();
    let blocks = data.chunks_exact(ts);
    // (quant bytes, a bytes, b bytes) per block, and how to split one block into them.
    let (qn, an, bn): (usize, usize, usize) = match ty {
        F32 | F16 | BF16 | Q4_K | Q5_K => return Ok(Repacked { bytes: data.to_vec(), q: 0, a: 0, b: 0 }),
        Q8_0 => (32, 2, 0),
        Q4_0 => (16, 2, 0),
        Q4_1 => (16, 4, 0),
        Q5_0 => (16, 2, 4),
        Q6_K => (192, 16, 2),
        _ => unreachable!("checked by supported()"),
    };
    let a_off = align(n_blocks * qn);
    let b_off = a_off + align(n_blocks * an);
    let mut bytes = vec![0u8; b_off + align(n_blocks * bn)];
    let (qs, rest) = bytes.split_at_mut(a_off);
    let (a_s, b_s) = rest.split_at_mut(b_off - a_off);
    for (i, blk) in blocks.enumerate() {
        let (q, a, b) = (&mut qs[i * qn..(i + 1) * qn], &mut a_s[i * an..(i + 1) * an], &mut b_s[i * bn..(i + 1) * bn]);
        match ty {
            // d | qs[32]
            Q8_0 => {
                a.copy_from_slice(&blk[..2]);
                q.copy_from_slice(&blk[2..34]);
            }
            // d | qs[16]
            Q4_0 => {
                a.copy_from_slice(&blk[..2]);
                q.copy_from_slice(&blk[2..18]);
            }
            // d m | qs[16]
            Q4_1 => {
                a.copy_from_slice(&blk[..4]);
                q.copy_from_slice(&blk[4..20]);
            }
            // d | qh[4] | qs[16]
            Q5_0 => {
                a.copy_from_slice(&blk[..2]);
                b.copy_from_slice(&blk[2..6]);
                q.copy_from_slice(&blk[6..22]);
            }
            // ql[128] qh[64] | scales[16] | d
            Q6_K => {
                q.copy_from_slice(&blk[..192]);
                a.copy_from_slice(&blk[192..208]);
                b.copy_from_slice(&blk[208..210]);
            }
            _ => unreachable!(),
        }
    }
    Ok(Repacked { bytes, q: 0, a: a_off, b: b_off })
}

/// A weight matrix on the GPU in device layout.
pub struct DeviceWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    buf: GpuBuffer<u8>,
    a: usize,
    b: usize,
    /// Optional bias (Qwen2's Q/K/V), f32 `[rows]`.
    pub bias: Option<GpuBuffer<f32>>,
    /// Attached low-rank update, `y += B·(s·A)·x`; see [`DeviceWeight::with_lora`].
    pub lora: Option<DeviceLora>,
}

/// A LoRA update on the device: every adapter attached to one projection concatenated into one
/// pair (`Σ sᵢ·Bᵢ·Aᵢ = [B₁ … Bₙ]·[s₁A₁; …; sₙAₙ]`), so one launch serves any number of them.
/// f16, not f32: decode reads A and B once per token, and at rank 16 on all seven projections
/// of SmolLM2 f32 would be ~23% of a Q4_1 base's bytes (f16 ~12%); the prompt path's cuBLAS
/// GEMMs take f16 inputs, so the same arrays serve both. Sums stay f32.
pub struct DeviceLora {
    pub rank: usize,
    /// f16 `[rank][cols]`, scale folded in.
    a: GpuBuffer<half::f16>,
    /// f16 `[rows][rank]`.
    b: GpuBuffer<half::f16>,
    /// f32 `[rank]`: `s·A·x` of the current decode step (written by `lora_down`).
    u: GpuBuffer<f32>,
}

impl DeviceLora {
    /// (A, B, u) addresses.
    pub fn ptrs(&self) -> (u64, u64, u64) {
        (self.a.ptr(), self.b.ptr(), self.u.ptr())
    }

    pub fn bytes(&self) -> usize {
        2 * (self.a.len() + self.b.len())
    }
}

impl DeviceWeight {
    pub fn upload(gpu: &Gpu, ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<Self, CudaError> {
        let r = repack(ty, rows, cols, data).map_err(|e| CudaError::Unsupported(e.to_string()))?;
        let buf = gpu.upload(&r.bytes)?;
        Ok(DeviceWeight { ty, rows, cols, buf, a: r.a, b: r.b, bias: None, lora: None })
    }

    pub fn with_bias(mut self, gpu: &Gpu, bias: &[f32]) -> Result<Self, CudaError> {
        self.bias = Some(gpu.upload(bias)?);
        Ok(self)
    }

    /// Attaches `y += B·(A·x)`: `a` f32 `[rank][cols]` with the adapter scale already applied,
    /// `b` f32 `[rows][rank]`, stored as f16 (an entry past f16's range is refused, not clamped).
    pub fn with_lora(mut self, gpu: &Gpu, rank: usize, a: &[f32], b: &[f32]) -> Result<Self, CudaError> {
        if rank == 0 || a.len() != rank * self.cols || b.len() != self.rows * rank {
            return Err(CudaError::Unsupported(format!(
                "LoRA of rank {rank} with {} A and {} B entries for a {}×{} weight",
                a.len(),
                b.len(),
                self.rows,
                self.cols
            )));
        }
        let to_f16 = |v: &[f32], what: &str| -> Result<Vec<half::f16>, CudaError> {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            match h.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(CudaError::Unsupported(format!(
                    "LoRA {what} entry {i} ({}) is outside f16's range on the device",
                    v[i]
                ))),
                None => Ok(h),
            }
        };
        let (a16, b16) = (to_f16(a, "A (scaled)")?, to_f16(b, "B")?);
        self.lora = Some(DeviceLora { rank, a: gpu.upload(&a16)?, b: gpu.upload(&b16)?, u: gpu.alloc::<f32>(rank)? });
        Ok(self)
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The address of the rows as they are, `[rows][cols]` f16, when the weight is F16 (its
    /// device layout is the file's): a GEMM can read it without a converted copy.
    pub fn f16_rows(&self) -> Option<u64> {
        (self.ty == GgmlType::F16).then(|| self.buf.ptr())
    }

    /// (q, a, b) section addresses.
    pub(crate) fn ptrs(&self) -> (u64, u64, u64) {
        (self.buf.ptr(), self.buf.ptr_at(self.a), self.buf.ptr_at(self.b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device layout only moves bytes: putting each block's sections back together must
    /// give the ggml blocks again, for every split format, with sections 256-byte aligned.
    #[test]
    fn repack_splits_blocks_without_losing_bytes() {
        use GgmlType::*;
        for (ty, qn, an, bn, order) in [
            (Q8_0, 32, 2, 0, "aq"),
            (Q4_0, 16, 2, 0, "aq"),
            (Q4_1, 16, 4, 0, "aq"),
            (Q5_0, 16, 2, 4, "abq"),
            (Q6_K, 192, 16, 2, "qab"),
        ] {
            let (rows, cols) = (3, 2 * ty.block_size());
            let n_blocks = rows * 2;
            let data: Vec<u8> = (0..n_blocks * ty.type_size()).map(|i| (i * 7 + 3) as u8).collect();
            let r = repack(ty, rows, cols, &data).unwrap();
            assert_eq!((r.q % ALIGN, r.a % ALIGN, r.b % ALIGN), (0, 0, 0), "{ty}");
            for i in 0..n_blocks {
                let mut block = Vec::new();
                for s in order.chars() {
                    let (off, n) = match s {
                        'q' => (r.q, qn),
                        'a' => (r.a, an),
                        _ => (r.b, bn),
                    };
                    block.extend_from_slice(&r.bytes[off + i * n..off + (i + 1) * n]);
                }
                assert_eq!(block, data[i * ty.type_size()..(i + 1) * ty.type_size()], "{ty} block {i}");
            }
        }
    }

    #[test]
    fn repack_refuses_wrong_sizes_and_types() {
        assert!(repack(GgmlType::Q8_0, 2, 32, &[0u8; 10]).is_err());
        assert!(repack(GgmlType::Q8_0, 1, 33, &[0u8; 34]).is_err());
        assert!(repack(GgmlType::Q2_K, 1, 256, &[0u8; 84]).is_err());
    }
}
