//! The key/value cache: for every layer and position, the rotated keys and the values of the
//! KV heads, in f32.

pub struct KvCache {
    n_layer: usize,
    kv_dim: usize,
    capacity: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    pub fn new(n_layer: usize, kv_dim: usize, capacity: usize) -> Self {
        let size = n_layer * capacity * kv_dim;
        KvCache { n_layer, kv_dim, capacity, len: 0, k: vec![0.0; size], v: vec![0.0; size] }
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

    fn range(&self, layer: usize, start: usize, n: usize) -> std::ops::Range<usize> {
        debug_assert!(layer < self.n_layer && start + n <= self.capacity);
        let base = (layer * self.capacity + start) * self.kv_dim;
        base..base + n * self.kv_dim
    }

    /// Writes `n` positions of keys and values starting at `start` for one layer.
    pub fn store(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let r = self.range(layer, start, k.len() / self.kv_dim);
        self.k[r.clone()].copy_from_slice(k);
        self.v[r].copy_from_slice(v);
    }

    /// Keys and values of positions `0..n` of one layer, `n × kv_dim` each.
    pub fn layer(&self, layer: usize, n: usize) -> (&[f32], &[f32]) {
        let r = self.range(layer, 0, n);
        (&self.k[r.clone()], &self.v[r])
    }

    /// Marks `n` more positions as filled once every layer has stored them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
