//! Helpers shared by the crate's unit tests.

use std::path::Path;

use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufWriter, Value};

use crate::student::{Params, StudentConfig};

/// `p` as an F32 llama GGUF (what export writes, unquantized), plus `extra` 1-D tensors.
pub(crate) fn write_f32_gguf(cfg: &StudentConfig, p: &Params, extra: &[(&str, Vec<f32>)], path: &Path) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    let u = |v: usize| Value::U32(v as u32);
    w.set("llama.context_length", u(cfg.n_ctx));
    w.set("llama.embedding_length", u(cfg.n_embd));
    w.set("llama.block_count", u(cfg.n_layer));
    w.set("llama.feed_forward_length", u(cfg.n_ff));
    w.set("llama.attention.head_count", u(cfg.n_head));
    w.set("llama.attention.head_count_kv", u(cfg.n_head_kv));
    w.set("llama.attention.key_length", u(cfg.head_dim));
    w.set("llama.attention.value_length", u(cfg.head_dim));
    w.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(cfg.rms_eps),
    );
    w.set("llama.rope.freq_base", Value::F32(cfg.rope_base));
    let tensors = p
        .named()
        .into_iter()
        .chain(extra.iter().map(|(n, t)| (n.to_string(), t.as_slice())));
    for (name, t) in tensors {
        let cols = if name.ends_with("attn_output.weight") {
            cfg.q_dim()
        } else if name.ends_with("ffn_down.weight") {
            cfg.n_ff
        } else if name.ends_with(".weight") && !name.ends_with("norm.weight") {
            cfg.n_embd
        } else {
            t.len()
        };
        let dims: Vec<u64> = if cols == t.len() {
            vec![cols as u64]
        } else {
            vec![cols as u64, (t.len() / cols) as u64]
        };
        let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(&name, &dims, GgmlType::F32, bytes).unwrap();
    }
    w.write(path).unwrap();
}

/// `ours` equals `theirs` within `rel` of the largest |theirs|.
pub(crate) fn assert_close(what: &str, ours: &[f32], theirs: &[f32], rel: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    let scale = theirs.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= rel * scale,
        "{what}: differs by {err} (scale {scale})"
    );
}
