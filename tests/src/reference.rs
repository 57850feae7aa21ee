//! An independent float64 forward pass of the llama/qwen2 graph, written plainly from the
//! architecture (no shared code with the runtime's forward beyond dequantizing blocks, which is
//! checked byte for byte against ggml), used as the "float reference" for quantized models.
//!
//! Weights are dequantized row by row as they are used, so memory stays small; speed is
//! irrelevant here.

use std::collections::HashMap;

use nexus_kernels::dequantize_row;
use nexus_runtime::gguf::GgufFile;

fn get_u(f: &GgufFile, k: &str) -> usize {
    f.get_u64(k).unwrap_or_else(|e| panic!("{e}")) as usize
}

/// Rows of a 2-D tensor `[rows][cols]` as f64, one at a time.
struct Matrix<'a> {
    file: &'a GgufFile,
    name: String,
    rows: usize,
    cols: usize,
    /// Added to the file's weights, `[rows][cols]` (merged LoRA deltas).
    delta: Option<&'a [f64]>,
}

impl<'a> Matrix<'a> {
    fn new(file: &'a GgufFile, deltas: &'a HashMap<String, Vec<f64>>, name: &str) -> Self {
        let t = file.tensor_info(name).unwrap_or_else(|| panic!("missing {name}"));
        let (rows, cols) = (t.dims[1] as usize, t.dims[0] as usize);
        let delta = deltas.get(name).map(|d| {
            assert_eq!(d.len(), rows * cols, "delta for {name}");
            &d[..]
        });
        Matrix { file, name: name.into(), rows, cols, delta }
    }

    fn row(&self, r: usize) -> Vec<f64> {
        let t = self.file.tensor_info(&self.name).unwrap();
        let row_bytes = t.ty.row_size(self.cols as u64).unwrap() as usize;
        let data = &self.file.tensor_data(t)[r * row_bytes..(r + 1) * row_bytes];
        let mut out = vec![0f32; self.cols];
        dequantize_row(t.ty, data, &mut out).unwrap();
        let mut row: Vec<f64> = out.into_iter().map(f64::from).collect();
        if let Some(d) = self.delta {
            row.iter_mut().zip(&d[r * self.cols..(r + 1) * self.cols]).for_each(|(w, dw)| *w += dw);
        }
        row
    }

    /// y[t] = W · x[t] for every token.
    fn apply(&self, xs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut ys = vec![vec![0f64; self.rows]; xs.len()];
        for r in 0..self.rows {
            let w = self.row(r);
            for (x, y) in xs.iter().zip(ys.iter_mut()) {
                y[r] = w.iter().zip(x).map(|(a, b)| a * b).sum();
            }
        }
        ys
    }
}

fn vector(f: &GgufFile, name: &str) -> Option<Vec<f64>> {
    let t = f.tensor_info(name)?;
    let mut out = vec![0f32; t.n_elements() as usize];
    dequantize_row(t.ty, f.tensor_data(t), &mut out).unwrap();
    Some(out.into_iter().map(f64::from).collect())
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

/// Logits (`tokens.len() × n_vocab`) of the model in `path` for `tokens`, in float64.
pub fn forward_f64(file: &GgufFile, tokens: &[u32]) -> Vec<Vec<f64>> {
    forward_f64_with_deltas(file, tokens, &HashMap::new())
}

/// [`forward_f64`] with `deltas[name]` (`[rows][cols]`, row-major) added to the weights of the
/// named 2-D tensors: the merged-weights reference for LoRA adapters.
pub fn forward_f64_with_deltas(file: &GgufFile, tokens: &[u32], deltas: &HashMap<String, Vec<f64>>) -> Vec<Vec<f64>> {
    forward_f64_full(file, tokens, deltas, &|_| {}, &|_| {}, &|_| {})
}

/// [`forward_f64`] with every position's rotated query, key and value rows passed through
/// `round_q`, `round_k` and `round_v` before attention reads them: the reference for a KV
/// cache that stores keys and values in a narrower type (and, for a block type, multiplies
/// keys with a query rounded to that type's dot-product format, as ggml does).
pub fn forward_f64_kv_rounded(
    file: &GgufFile,
    tokens: &[u32],
    round_q: &dyn Fn(&mut [f64]),
    round_k: &dyn Fn(&mut [f64]),
    round_v: &dyn Fn(&mut [f64]),
) -> Vec<Vec<f64>> {
    forward_f64_full(file, tokens, &HashMap::new(), round_q, round_k, round_v)
}

fn forward_f64_full(
    file: &GgufFile,
    tokens: &[u32],
    deltas: &HashMap<String, Vec<f64>>,
    round_q: &dyn Fn(&mut [f64]),
    round_k: &dyn Fn(&mut [f64]),
    round_v: &dyn Fn(&mut [f64]),
) -> Vec<Vec<f64>> {
    let arch = file.get_str("general.architecture").unwrap().to_string();
    let k = |s: &str| format!("{arch}.{s}");
    let d = get_u(file, &k("embedding_length"));
    let n_layer = get_u(file, &k("block_count"));
    let n_head = get_u(file, &k("attention.head_count"));
    let n_kv = get_u(file, &k("attention.head_count_kv"));
    let hd = d / n_head;
    let eps = file.get_f32(&k("attention.layer_norm_rms_epsilon")).unwrap() as f64;
    let base = file.get_f32(&k("rope.freq_base")).map(f64::from).unwrap_or(10000.0);
    let neox = arch == "qwen2";
    let freq_factors = vector(file, "rope_freqs.weight");

    let embd = Matrix::new(file, deltas, "token_embd.weight");
    let mut x: Vec<Vec<f64>> = tokens.iter().map(|&t| embd.row(t as usize)).collect();
    let rope = |v: &mut [f64], pos: usize| {
        for h in v.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let mut theta = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64);
                if let Some(ff) = &freq_factors {
                    theta /= ff[i];
                }
                let (a, b) = if neox { (i, i + hd / 2) } else { (2 * i, 2 * i + 1) };
                let (s, c) = theta.sin_cos();
                let (x0, x1) = (h[a], h[b]);
                h[a] = x0 * c - x1 * s;
                h[b] = x0 * s + x1 * c;
            }
        }
    };
    let add_bias = |ys: &mut Vec<Vec<f64>>, name: &str| {
        if let Some(b) = vector(file, name) {
            for y in ys.iter_mut() {
                y.iter_mut().zip(&b).for_each(|(v, bb)| *v += bb);
            }
        }
    };
    for l in 0..n_layer {
        let b = |s: &str| format!("blk.{l}.{s}");
        let xn: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &vector(file, &b("attn_norm.weight")).unwrap(), eps)).collect();
        let mut q = Matrix::new(file, deltas, &b("attn_q.weight")).apply(&xn);
        let mut kk = Matrix::new(file, deltas, &b("attn_k.weight")).apply(&xn);
        let mut v = Matrix::new(file, deltas, &b("attn_v.weight")).apply(&xn);
        add_bias(&mut q, &b("attn_q.bias"));
        add_bias(&mut kk, &b("attn_k.bias"));
        add_bias(&mut v, &b("attn_v.bias"));
        for (p, (qr, kr)) in q.iter_mut().zip(kk.iter_mut()).enumerate() {
            rope(qr, p);
            rope(kr, p);
            round_q(qr);
            round_k(kr);
        }
        v.iter_mut().for_each(|vr| round_v(vr));
        let mut att = vec![vec![0f64; d]; tokens.len()];
        for t in 0..tokens.len() {
            for h in 0..n_head {
                let kvh = h / (n_head / n_kv);
                let qh = &q[t][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=t)
                    .map(|p| qh.iter().zip(&kk[p][kvh * hd..(kvh + 1) * hd]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (p, w) in e.iter().enumerate() {
                    for i in 0..hd {
                        att[t][h * hd + i] += w / z * v[p][kvh * hd + i];
                    }
                }
            }
        }
        let o = Matrix::new(file, deltas, &b("attn_output.weight")).apply(&att);
        x.iter_mut().zip(&o).for_each(|(xr, or)| xr.iter_mut().zip(or).for_each(|(a, b)| *a += b));
        let xn: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &vector(file, &b("ffn_norm.weight")).unwrap(), eps)).collect();
        let g = Matrix::new(file, deltas, &b("ffn_gate.weight")).apply(&xn);
        let u = Matrix::new(file, deltas, &b("ffn_up.weight")).apply(&xn);
        let hmid: Vec<Vec<f64>> =
            g.iter().zip(&u).map(|(gr, ur)| gr.iter().zip(ur).map(|(a, b)| a / (1.0 + (-a).exp()) * b).collect()).collect();
        let down = Matrix::new(file, deltas, &b("ffn_down.weight")).apply(&hmid);
        x.iter_mut().zip(&down).for_each(|(xr, dr)| xr.iter_mut().zip(dr).for_each(|(a, b)| *a += b));
    }
    let norm = vector(file, "output_norm.weight").unwrap();
    let xn: Vec<Vec<f64>> = x.iter().map(|r| rms_norm(r, &norm, eps)).collect();
    let head = if file.tensor_info("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
    Matrix::new(file, deltas, head).apply(&xn)
}
