//! The student's starting weights: random (GPT-2 / llm.c style) or pruned from the teacher
//! (Minitron style: whole layers, whole KV groups and the query heads inside them, FFN
//! channels and residual channels chosen by [`Importance`], every kept weight copied from the
//! teacher's GGUF as it is stored).
//!
//! Q and K rows are copied in the file's order. llama.cpp's converter permutes them so that
//! the runtime's adjacent-pair RoPE equals HF's rotate_half; the student uses the same RoPE and
//! is exported unpermuted, so the copy is already in the order the student needs (the test
//! `pruning_equals_zeroing_what_was_dropped` runs both through the runtime).

use std::f64::consts::TAU;
use std::path::PathBuf;

use nexus_kernels::{dequantize_row, KernelError};
use nexus_runtime::gguf::{GgufError, GgufFile};
use nexus_runtime::model::{Arch, Model, ModelConfig, RopeStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::importance::Importance;
use crate::student::{LayerParams, Params, StudentConfig};

/// σ of every random matrix (GPT-2's).
pub const INIT_STD: f32 = 0.02;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("student {what} is {student}, the teacher's is {teacher}: they must be equal")]
    Mismatch {
        what: &'static str,
        student: String,
        teacher: String,
    },
    #[error("student {what} is {student}, larger than the teacher's {teacher}")]
    TooLarge {
        what: &'static str,
        student: usize,
        teacher: usize,
    },
    #[error("student config: {0}")]
    Config(String),
    #[error("importance {what}: expected {expected} entries (the teacher's), got {got}")]
    ImportanceShape {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("importance {what} is {value}, not a finite number")]
    ImportanceValue { what: String, value: f32 },
    #[error("teacher {path}: {what}, which the llama student cannot reproduce")]
    Unsupported { path: PathBuf, what: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("teacher {path}: tensor {tensor}: {what}")]
    Layout {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    #[error("teacher {path}: dequantizing {tensor}: {source}")]
    Dequantize {
        path: PathBuf,
        tensor: String,
        source: KernelError,
    },
}

/// What pruning kept of the teacher, every list in the teacher's indices and original order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruning {
    /// Teacher layer behind each student layer.
    pub layers: Vec<usize>,
    /// Per student layer: the teacher KV groups kept (student kv head j is `kv_groups[l][j]`).
    pub kv_groups: Vec<Vec<usize>>,
    /// Per student layer: the teacher query heads kept, group by group (student head h is
    /// `heads[l][h]`, and it lies in teacher group `kv_groups[l][h / group]`).
    pub heads: Vec<Vec<usize>>,
    /// Per student layer: the teacher FFN channels kept.
    pub ffn_channels: Vec<Vec<usize>>,
    /// The teacher residual channels kept (the same in every layer).
    pub embd_channels: Vec<usize>,
}

/// Fills `out` with N(0, std²) draws (Box–Muller, two per pair of uniforms).
pub(crate) fn fill_normal(rng: &mut ChaCha8Rng, out: &mut [f32], std: f32) {
    for pair in out.chunks_mut(2) {
        let u1 = 1.0 - rng.gen::<f64>(); // (0, 1]: the logarithm stays finite
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt() * std as f64;
        pair[0] = (r * (TAU * u2).cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * (TAU * u2).sin()) as f32;
        }
    }
}

/// Random weights as GPT-2 / llm.c start them: every matrix N(0, 0.02²), the two projections
/// that write into the residual stream (`wo`, `w_down`) N(0, (0.02/√(2·n_layer))²) so the
/// stream's variance does not grow with depth, norm weights 1, an untied head N(0, 0.02²).
/// The same seed gives the same weights (ChaCha8, tensors in [`Params::named`] order).
pub fn init_random(cfg: &StudentConfig, seed: u64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Params::zeros(cfg);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    let residual_std = INIT_STD / ((2 * cfg.n_layer.max(1)) as f32).sqrt();
    for (t, name) in p.tensors_mut().into_iter().zip(&names) {
        if name.ends_with("norm.weight") {
            t.fill(1.0);
        } else if name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight") {
            fill_normal(&mut rng, t, residual_std);
        } else {
            fill_normal(&mut rng, t, INIT_STD);
        }
    }
    p
}

/// The `k` indices with the largest scores (ties: the lower index), in ascending order.
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Row indices `h·hd .. (h+1)·hd` of each head in `heads`, in order.
fn head_rows(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

/// The teacher must be one the llama student computes exactly like: adjacent-pair RoPE over
/// the whole head, no position scaling or frequency factors, no projection biases.
fn check_teacher(file: &GgufFile, t: &ModelConfig) -> Result<(), InitError> {
    let unsupported = |what: String| {
        Err(InitError::Unsupported {
            path: file.path().into(),
            what,
        })
    };
    if t.arch != Arch::Llama || t.rope_style != RopeStyle::Normal {
        return unsupported(format!("architecture {} uses NeoX RoPE", t.arch.name()));
    }
    if t.rope_dim != t.head_dim {
        return unsupported(format!(
            "RoPE rotates {} of {} head dimensions",
            t.rope_dim, t.head_dim
        ));
    }
    if t.rope_freq_scale != 1.0 || file.tensor_info("rope_freqs.weight").is_some() {
        return unsupported("RoPE positions are scaled".into());
    }
    for l in 0..t.n_layer {
        for p in ["attn_q", "attn_k", "attn_v"] {
            let bias = format!("blk.{l}.{p}.bias");
            if file.tensor_info(&bias).is_some() {
                return unsupported(format!("{bias} is a projection bias"));
            }
        }
    }
    Ok(())
}

fn check_importance(imp: &Importance, t: &ModelConfig) -> Result<(), InitError> {
    let shape = |what: String, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(InitError::ImportanceShape {
                what,
                expected,
                got,
            })
        }
    };
    shape("layers".into(), t.n_layer, imp.layers.len())?;
    shape("heads (layers)".into(), t.n_layer, imp.heads.len())?;
    shape(
        "ffn_channels (layers)".into(),
        t.n_layer,
        imp.ffn_channels.len(),
    )?;
    shape("embd_channels".into(), t.n_embd, imp.embd_channels.len())?;
    for l in 0..t.n_layer {
        shape(format!("heads[{l}]"), t.n_head, imp.heads[l].len())?;
        shape(
            format!("ffn_channels[{l}]"),
            t.n_ff,
            imp.ffn_channels[l].len(),
        )?;
    }
    let lists = [
        ("layers".to_string(), &imp.layers),
        ("embd_channels".into(), &imp.embd_channels),
    ];
    let per_layer = (0..t.n_layer).flat_map(|l| {
        [
            (format!("heads[{l}]"), &imp.heads[l]),
            (format!("ffn_channels[{l}]"), &imp.ffn_channels[l]),
        ]
    });
    for (what, v) in lists.into_iter().chain(per_layer) {
        if let Some((i, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(InitError::ImportanceValue {
                what: format!("{what}[{i}]"),
                value,
            });
        }
    }
    Ok(())
}

/// Checks every student dimension against the teacher's.
fn check_fit(cfg: &StudentConfig, t: &ModelConfig) -> Result<(), InitError> {
    let equal = [
        ("n_vocab", cfg.n_vocab, t.n_vocab),
        ("head_dim", cfg.head_dim, t.head_dim),
    ];
    for (what, s, te) in equal {
        if s != te {
            return Err(InitError::Mismatch {
                what,
                student: s.to_string(),
                teacher: te.to_string(),
            });
        }
    }
    if cfg.rope_base != t.rope_base {
        return Err(InitError::Mismatch {
            what: "rope_base",
            student: cfg.rope_base.to_string(),
            teacher: t.rope_base.to_string(),
        });
    }
    let at_most = [
        ("n_layer", cfg.n_layer, t.n_layer),
        ("n_embd", cfg.n_embd, t.n_embd),
        ("n_head", cfg.n_head, t.n_head),
        ("n_head_kv", cfg.n_head_kv, t.n_head_kv),
        ("n_ff", cfg.n_ff, t.n_ff),
        // Whole KV groups are kept, so a student group cannot hold more query heads than a
        // teacher group has.
        (
            "group size (n_head / n_head_kv)",
            cfg.n_head / cfg.n_head_kv,
            t.n_head / t.n_head_kv.max(1),
        ),
    ];
    for (what, student, teacher) in at_most {
        if student > teacher {
            return Err(InitError::TooLarge {
                what,
                student,
                teacher,
            });
        }
    }
    Ok(())
}

/// Decides what to keep (no weights read).
fn choose(cfg: &StudentConfig, t: &ModelConfig, imp: &Importance) -> Pruning {
    let layers = top_k(&imp.layers, cfg.n_layer);
    let (t_group, s_group) = (t.n_head / t.n_head_kv, cfg.n_head / cfg.n_head_kv);
    let mut kv_groups = Vec::with_capacity(layers.len());
    let mut heads = Vec::with_capacity(layers.len());
    for &l in &layers {
        let h = &imp.heads[l];
        let group_scores: Vec<f32> = h.chunks(t_group).map(|g| g.iter().sum()).collect();
        let groups = top_k(&group_scores, cfg.n_head_kv);
        let kept: Vec<usize> = groups
            .iter()
            .flat_map(|&g| {
                let first = g * t_group;
                top_k(&h[first..first + t_group], s_group)
                    .into_iter()
                    .map(move |i| first + i)
            })
            .collect();
        kv_groups.push(groups);
        heads.push(kept);
    }
    Pruning {
        ffn_channels: layers
            .iter()
            .map(|&l| top_k(&imp.ffn_channels[l], cfg.n_ff))
            .collect(),
        embd_channels: top_k(&imp.embd_channels, cfg.n_embd),
        layers,
        kv_groups,
        heads,
    }
}

/// Reads rows `keep_rows` and, of each, columns `keep_cols` of the teacher's `[rows][cols]`
/// matrix `name` (a 1-D tensor when `rows` is `None`), dequantized to f32.
fn gather(
    file: &GgufFile,
    name: &str,
    cols: usize,
    rows: Option<usize>,
    keep_rows: &[usize],
    keep_cols: &[usize],
) -> Result<Vec<f32>, InitError> {
    let dims: Vec<u64> = std::iter::once(cols as u64)
        .chain(rows.map(|r| r as u64))
        .collect();
    let (info, data) = file.tensor_checked(name, &dims)?;
    let layout_err = |what: String| InitError::Layout {
        path: file.path().into(),
        tensor: name.into(),
        what,
    };
    let row_bytes = info
        .ty
        .row_size(cols as u64)
        .ok_or_else(|| layout_err(format!("{cols} columns are not whole {} blocks", info.ty)))?
        as usize;
    let n_rows = rows.unwrap_or(1);
    if data.len() < n_rows * row_bytes {
        return Err(layout_err(format!(
            "{} bytes hold fewer than {n_rows} rows of {row_bytes}",
            data.len()
        )));
    }
    let mut out = vec![0f32; keep_rows.len() * keep_cols.len()];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(keep_cols.len())
        .zip(keep_rows.par_iter())
        .try_for_each_init(
            || vec![0f32; cols],
            |row, (dst, &r)| {
                dequantize_row(info.ty, &data[r * row_bytes..(r + 1) * row_bytes], row).map_err(
                    |source| InitError::Dequantize {
                        path: file.path().into(),
                        tensor: name.into(),
                        source,
                    },
                )?;
                for (d, &c) in dst.iter_mut().zip(keep_cols) {
                    *d = row[c];
                }
                Ok::<(), InitError>(())
            },
        )?;
    Ok(out)
}

/// A student initialized from the teacher by structured pruning (Minitron): the `n_layer`
/// most important layers in their order; in each, the `n_head_kv` KV groups with the largest
/// summed head importance and inside each the `n_head / n_head_kv` most important query heads
/// (RoPE acts per head, so heads are kept whole and head_dim must match); the `n_ff` most
/// important FFN channels (rows of gate/up, columns of down); and the `n_embd` most important
/// residual channels, selected wherever the width is the residual stream (embedding and head
/// columns, input columns of Q/K/V/gate/up, output rows of wo/down, the norm weights). Every
/// kept weight is the teacher's, dequantized; a config equal to the teacher's reproduces it.
///
/// RMSNorm over a pruned residual width normalizes by the RMS of the kept channels only, so a
/// student with fewer residual channels does not compute a sub-network of the teacher exactly;
/// nothing compensates for it (distillation does).
pub fn init_pruned(
    teacher: &Model,
    importance: &Importance,
    cfg: &StudentConfig,
) -> Result<(Params, Pruning), InitError> {
    let file: &GgufFile = teacher.file();
    let t = &teacher.config;
    cfg.check().map_err(InitError::Config)?;
    check_teacher(file, t)?;
    check_fit(cfg, t)?;
    check_importance(importance, t)?;
    let pruning = choose(cfg, t, importance);

    let hd = t.head_dim;
    let embd = &pruning.embd_channels;
    let all_vocab: Vec<usize> = (0..t.n_vocab).collect();
    let one = [0usize];
    let vector = |name: &str| gather(file, name, t.n_embd, None, &one, embd);

    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, &l) in pruning.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        let q_rows = head_rows(&pruning.heads[i], hd);
        let kv_rows = head_rows(&pruning.kv_groups[i], hd);
        let ffn = &pruning.ffn_channels[i];
        let (d, qd, kvd, ff) = (t.n_embd, t.q_dim(), t.kv_dim(), t.n_ff);
        layers.push(LayerParams {
            attn_norm: vector(&n("attn_norm"))?,
            wq: gather(file, &n("attn_q"), d, Some(qd), &q_rows, embd)?,
            wk: gather(file, &n("attn_k"), d, Some(kvd), &kv_rows, embd)?,
            wv: gather(file, &n("attn_v"), d, Some(kvd), &kv_rows, embd)?,
            wo: gather(file, &n("attn_output"), qd, Some(d), embd, &q_rows)?,
            ffn_norm: vector(&n("ffn_norm"))?,
            w_gate: gather(file, &n("ffn_gate"), d, Some(ff), ffn, embd)?,
            w_up: gather(file, &n("ffn_up"), d, Some(ff), ffn, embd)?,
            w_down: gather(file, &n("ffn_down"), ff, Some(d), embd, ffn)?,
        });
    }
    let embed = gather(
        file,
        "token_embd.weight",
        t.n_embd,
        Some(t.n_vocab),
        &all_vocab,
        embd,
    )?;
    let output = if cfg.tied {
        None
    } else {
        // A tied teacher's head is its embedding.
        let name = if file.tensor_info("output.weight").is_some() {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        Some(gather(
            file,
            name,
            t.n_embd,
            Some(t.n_vocab),
            &all_vocab,
            embd,
        )?)
    };
    let params = Params {
        embed,
        layers,
        output_norm: vector("output_norm.weight")?,
        output,
    };
    Ok((params, pruning))
}

#[cfg(test)]
mod tests;
