//! The key/value cache: for every layer and position, the rotated keys and the values of the
//! KV heads — in f32 by default on the CPU, or in f16 or Q8_0 (llama.cpp's `--cache-type-k`,
//! `--cache-type-v`), which take a half or 34/128 of the memory and of the bytes attention
//! reads per token.

use nexus_kernels::{quantize_activation_row, GgmlType};

/// How keys or values are stored, by llama.cpp's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
    Q8_0,
}

impl KvType {
    pub fn parse(s: &str) -> Result<Self, KvCacheError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(KvCacheError::UnknownType(s.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes of `n` values (`n` a multiple of the block size).
    pub fn bytes(self, n: usize) -> usize {
        let ty = self.ggml();
        n / ty.block_size() * ty.type_size()
    }
}

/// The storage of keys and of values; `None` leaves the choice to the backend (f32 on the
/// CPU, whose default results are bitwise llama.cpp's with an f32 cache; f16 on CUDA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheTypes {
    pub k: Option<KvType>,
    pub v: Option<KvType>,
}

impl CacheTypes {
    /// What the CPU backend stores.
    pub fn on_cpu(self) -> (KvType, KvType) {
        (self.k.unwrap_or(KvType::F32), self.v.unwrap_or(KvType::F32))
    }

    /// Bytes of a CPU cache of `n_ctx` positions.
    pub fn cpu_bytes(self, n_layer: usize, kv_dim: usize, n_ctx: usize) -> u64 {
        let (k, v) = self.on_cpu();
        (n_layer * n_ctx) as u64 * (k.bytes(kv_dim) + v.bytes(kv_dim)) as u64
    }

    /// What the CUDA backend stores: f16 unless told otherwise, or Q8_0; it has no f32 cache
    /// (its attention kernels read f16 or Q8_0 rows). Heads must be whole blocks of the type.
    pub fn on_cuda(self, head_dim: usize) -> Result<(KvType, KvType), KvCacheError> {
        let pick = |t: Option<KvType>| match t.unwrap_or(KvType::F16) {
            KvType::F32 => Err(KvCacheError::NotOnBackend { ty: "f32", backend: "CUDA" }),
            t => check_head(t, head_dim).map(|()| t),
        };
        Ok((pick(self.k)?, pick(self.v)?))
    }
}

fn check_head(ty: KvType, head_dim: usize) -> Result<(), KvCacheError> {
    let block = ty.ggml().block_size();
    if !head_dim.is_multiple_of(block) {
        return Err(KvCacheError::HeadSize { ty: ty.name(), block, head_dim });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum KvCacheError {
    #[error("unknown KV cache type {0:?}: expected f32, f16 or q8_0")]
    UnknownType(String),
    #[error("a {ty} KV cache needs a head size that is a multiple of {block}; this model's is {head_dim}")]
    HeadSize { ty: &'static str, block: usize, head_dim: usize },
    #[error("the {backend} backend has no {ty} KV cache")]
    NotOnBackend { ty: &'static str, backend: &'static str },
}

/// One layer's keys or values for positions `0..n`, one `kv_dim` row per position.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    /// Rows of `ty` blocks, `row_bytes` a position; a head's slice is whole blocks.
    Packed { ty: KvType, bytes: &'a [u8], row_bytes: usize },
}

/// One of the two stores.
enum Store {
    F32(Vec<f32>),
    Packed { ty: KvType, bytes: Vec<u8>, row_bytes: usize },
}

impl Store {
    fn new(ty: KvType, rows: usize, kv_dim: usize) -> Self {
        match ty {
            KvType::F32 => Store::F32(vec![0.0; rows * kv_dim]),
            _ => {
                let row_bytes = ty.bytes(kv_dim);
                Store::Packed { ty, bytes: vec![0; rows * row_bytes], row_bytes }
            }
        }
    }

    /// Writes `src.len() / kv_dim` rows from row `row0` on.
    fn write(&mut self, row0: usize, kv_dim: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[row0 * kv_dim..row0 * kv_dim + src.len()].copy_from_slice(src),
            Store::Packed { ty, bytes, row_bytes } => {
                for (i, row) in src.chunks_exact(kv_dim).enumerate() {
                    let at = (row0 + i) * *row_bytes;
                    // ggml-cpu's f32 → f16 / Q8_0 copy. Sizes are the cache's own (checked at
                    // creation), so this cannot fail.
                    quantize_activation_row(ty.ggml(), row, &mut bytes[at..at + *row_bytes])
                        .expect("a KV cache row is whole blocks");
                }
            }
        }
    }

    fn rows(&self, row0: usize, n: usize, kv_dim: usize) -> KvRows<'_> {
        match self {
            Store::F32(v) => KvRows::F32(&v[row0 * kv_dim..(row0 + n) * kv_dim]),
            Store::Packed { ty, bytes, row_bytes } => {
                KvRows::Packed { ty: *ty, bytes: &bytes[row0 * row_bytes..(row0 + n) * row_bytes], row_bytes: *row_bytes }
            }
        }
    }
}

pub struct KvCache {
    n_layer: usize,
    kv_dim: usize,
    capacity: usize,
    len: usize,
    k: Store,
    v: Store,
}

impl KvCache {
    /// An f32 cache.
    pub fn new(n_layer: usize, kv_dim: usize, capacity: usize) -> Self {
        let rows = n_layer * capacity;
        KvCache { n_layer, kv_dim, capacity, len: 0, k: Store::new(KvType::F32, rows, kv_dim), v: Store::new(KvType::F32, rows, kv_dim) }
    }

    /// A cache storing keys as `k` and values as `v`. Attention reads one head's slice of a
    /// row, so a block type needs heads of whole blocks.
    pub fn with_types(
        n_layer: usize,
        kv_dim: usize,
        head_dim: usize,
        capacity: usize,
        k: KvType,
        v: KvType,
    ) -> Result<Self, KvCacheError> {
        check_head(k, head_dim)?;
        check_head(v, head_dim)?;
        let rows = n_layer * capacity;
        Ok(KvCache { n_layer, kv_dim, capacity, len: 0, k: Store::new(k, rows, kv_dim), v: Store::new(v, rows, kv_dim) })
    }

    /// Positions filled so far: the next token goes at this position.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position from `len` on (keeps a shared prompt prefix between turns).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn first_row(&self, layer: usize, start: usize, n: usize) -> usize {
        debug_assert!(layer < self.n_layer && start + n <= self.capacity);
        layer * self.capacity + start
    }

    /// Writes `n` positions of keys and values starting at `start` for one layer.
    pub fn store(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let row0 = self.first_row(layer, start, k.len() / self.kv_dim);
        self.k.write(row0, self.kv_dim, k);
        self.v.write(row0, self.kv_dim, v);
    }

    /// Keys and values of positions `0..n` of one layer.
    pub fn layer(&self, layer: usize, n: usize) -> (KvRows<'_>, KvRows<'_>) {
        let row0 = self.first_row(layer, 0, n);
        (self.k.rows(row0, n, self.kv_dim), self.v.rows(row0, n, self.kv_dim))
    }

    /// Marks `n` more positions as filled once every layer has stored them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_caches_are_f16_or_q8_0_of_whole_blocks() {
        assert_eq!(CacheTypes::default().on_cuda(64).unwrap(), (KvType::F16, KvType::F16));
        let q8k = CacheTypes { k: Some(KvType::Q8_0), v: None };
        assert_eq!(q8k.on_cuda(64).unwrap(), (KvType::Q8_0, KvType::F16));
        let e = q8k.on_cuda(16).unwrap_err().to_string();
        assert!(e.contains("q8_0") && e.contains("multiple of 32") && e.contains("16"), "{e}");
        let e = CacheTypes { k: None, v: Some(KvType::F32) }.on_cuda(64).unwrap_err().to_string();
        assert!(e.contains("CUDA") && e.contains("f32"), "{e}");
        // The CPU keeps its f32 default.
        assert_eq!(CacheTypes::default().on_cpu(), (KvType::F32, KvType::F32));
    }
}
