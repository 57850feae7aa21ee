//! LoRA adapters in llama.cpp's GGUF layout, applied unmerged (`y = W·x + s·B·(A·x)`), against
//! the independent f64 reference run on the merged weights `W + s·B·A`, and against a merged
//! F32 model; and every malformed or mismatched adapter refused with an error naming its file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nexus_kernels::GgmlType;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::{GgufFile, GgufWriter, Value};
use nexus_runtime::model::{Logits, Model};
use nexus_tests::lora::{add_merged_deltas, write_merged, LoraSpec, TARGETS, TOKENS};
use nexus_tests::reference::forward_f64_with_deltas;
use nexus_tests::TinyModel;

/// Tolerance against the f64 reference: max |ours − reference| over all logits, relative to
/// the largest |reference| logit. The runtime computes in f32 (base and delta alike); the
/// golden models run within ~1e-6 of the reference without adapters.
const REL_TOL: f64 = 1e-5;
/// The same bound for an F16 adapter, whose products take their input rounded to f16.
const F16_INPUT_REL_TOL: f64 = 2e-3;

fn base(dir: &Path, m: &TinyModel) -> PathBuf {
    let path = dir.join(format!("base-{}.gguf", m.arch));
    m.write(&path);
    path
}

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache(TOKENS.len());
    model.forward(&TOKENS, &mut cache, Logits::All).unwrap()
}

/// Decoding one token at a time (the mat-vec path) gives the same logits as one batch.
fn logits_one_by_one(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache(TOKENS.len());
    TOKENS.iter().flat_map(|&t| model.forward(&[t], &mut cache, Logits::All).unwrap()).collect()
}

/// (max abs difference, max abs difference relative to the largest |reference| logit).
fn diff(ours: &[f32], reference: &[Vec<f64>]) -> (f64, f64) {
    let (mut d, mut scale) = (0f64, 0f64);
    for (o, r) in ours.chunks(reference[0].len()).zip(reference) {
        for (a, b) in o.iter().zip(r) {
            d = d.max((*a as f64 - b).abs());
            scale = scale.max(b.abs());
        }
    }
    (d, d / scale)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn one_adapter_matches_the_f64_reference_on_merged_weights() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2"] {
        let m = TinyModel { arch, ..Default::default() };
        let base_path = base(dir.path(), &m);
        let base_logits = logits(&Model::load(&base_path).unwrap());
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
            // A Q8_0 row is whole 32-element blocks, and lora_b's rows are `rank` long.
            let rank = if ty == GgmlType::Q8_0 { 32 } else { 4 };
            let spec = LoraSpec { ty, ..LoraSpec::for_model(&m, &TARGETS, rank, 8.0, 11) };
            let path = dir.path().join(format!("{arch}-{ty}.lora.gguf"));
            spec.write(&path);
            let mut deltas = HashMap::new();
            add_merged_deltas(&path, 1.0, &mut deltas);
            let reference = forward_f64_with_deltas(&GgufFile::open(&base_path).unwrap(), &TOKENS, &deltas);

            let mut model = Model::load(&base_path).unwrap();
            let adapter = LoraAdapter::load(&path).unwrap();
            assert_eq!((adapter.weights.len(), adapter.alpha), (TARGETS.len(), 8.0));
            model.apply_lora(&[(&adapter, 1.0)]).unwrap();
            let ours = logits(&model);
            let (abs, rel) = diff(&ours, &reference);
            let (_, rel_base) = diff(&base_logits, &reference);
            eprintln!("{arch}, {ty} adapter: max |logit − f64 reference| {abs:.2e} ({rel:.2e} relative); base model {rel_base:.2e}");
            // An F16 adapter multiplies inputs rounded to f16 (2⁻¹¹ relative), as llama.cpp's
            // does; the reference multiplies the exact f32 inputs.
            let tol = if ty == GgmlType::F16 { F16_INPUT_REL_TOL } else { REL_TOL };
            assert!(rel < tol, "{arch} {ty}: {rel}");
            // The adapter must matter far beyond the tolerance, or the test proves nothing.
            assert!(rel_base > 1000.0 * REL_TOL, "{arch} {ty}: the adapter barely changes the logits ({rel_base})");
            assert!(max_abs_diff(&logits_one_by_one(&model), &ours) < 1e-4);

            // Removing it gives the base model back, bit for bit.
            model.clear_lora();
            assert!(!model.has_lora());
            assert_eq!(logits(&model), base_logits);
        }
    }
}

#[test]
fn two_adapters_and_a_scale_add_up_like_the_merged_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    // Overlapping targets and different ranks and alphas; alpha 0 means no alpha/rank factor.
    let first = LoraSpec::for_model(&m, &TARGETS[..5], 4, 8.0, 21);
    let second = LoraSpec::for_model(&m, &TARGETS[3..], 2, 0.0, 22);
    let (p1, p2) = (dir.path().join("first.lora.gguf"), dir.path().join("second.lora.gguf"));
    first.write(&p1);
    second.write(&p2);
    let mut deltas = HashMap::new();
    add_merged_deltas(&p1, 1.0, &mut deltas);
    add_merged_deltas(&p2, 0.5, &mut deltas);
    let reference = forward_f64_with_deltas(&GgufFile::open(&base_path).unwrap(), &TOKENS, &deltas);

    let (a1, a2) = (LoraAdapter::load(&p1).unwrap(), LoraAdapter::load(&p2).unwrap());
    let mut model = Model::load(&base_path).unwrap();
    model.apply_lora(&[(&a1, 1.0), (&a2, 0.5)]).unwrap();
    let ours = logits(&model);
    let (abs, rel) = diff(&ours, &reference);
    eprintln!("two adapters (scales 1 and 0.5): max |logit − f64 reference| {abs:.2e} ({rel:.2e} relative)");
    assert!(rel < REL_TOL, "{rel}");

    // Attached one call after the other they add up the same way.
    let mut stepwise = Model::load(&base_path).unwrap();
    stepwise.apply_lora(&[(&a1, 1.0)]).unwrap();
    stepwise.apply_lora(&[(&a2, 0.5)]).unwrap();
    assert!(max_abs_diff(&logits(&stepwise), &ours) < 1e-5);

    // The merged F32 model, as llama-export-lora would write it, runs to the same logits.
    let merged = dir.path().join("merged.gguf");
    write_merged(&base_path, &deltas, &merged);
    let merged_logits = logits(&Model::load(&merged).unwrap());
    let d = max_abs_diff(&merged_logits, &ours);
    eprintln!("two adapters against the merged F32 model: max |Δlogit| {d:.2e}");
    assert!(d < 1e-4, "{d}");
    // A wrong scale would be caught: scale 1 for the second adapter is far off.
    let mut wrong = Model::load(&base_path).unwrap();
    wrong.apply_lora(&[(&a1, 1.0), (&a2, 1.0)]).unwrap();
    assert!(max_abs_diff(&logits(&wrong), &merged_logits) > 1e-2);
}

/// An adapter file with the given metadata and tensors (random-free: zeros, the data does
/// not matter to these checks).
fn raw_adapter(meta: &[(&str, Value)], tensors: &[(&str, &[u64], GgmlType)]) -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    w.set("adapter.lora.alpha", Value::F32(8.0));
    for (k, v) in meta {
        w.set(*k, v.clone());
    }
    for &(name, dims, ty) in tensors {
        let n: u64 = dims.iter().product();
        w.add_tensor(name, dims, ty, vec![0u8; ty.row_size(n).unwrap() as usize]).unwrap();
    }
    w
}

/// A bad adapter: its file name, how it is written, what the error must say.
type BadCase<'a> = (&'static str, Box<dyn Fn(&Path) + 'a>, &'static str);

/// Every bad adapter of [`BadCase`], written into `dir`, with what its error must say.
fn bad_adapters(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let m = TinyModel::default();
    let (d, q, kv) = (64u64, 64u64, 32u64);
    let f32_ = GgmlType::F32;
    let q_a = "blk.0.attn_q.weight.lora_a";
    let q_b = "blk.0.attn_q.weight.lora_b";
    let s = |v: &str| Value::String(v.into());
    let cases: Vec<BadCase<'_>> = vec![
        ("a-base-model.gguf", Box::new(move |p: &Path| m.write(p)), "not an adapter file"),
        (
            "general-type-model.gguf",
            Box::new(|p: &Path| raw_adapter(&[("general.type", s("model"))], &[]).write(p).unwrap()),
            "general.type is \"model\"",
        ),
        (
            "control-vector.gguf",
            Box::new(|p: &Path| raw_adapter(&[("adapter.type", s("control_vector"))], &[]).write(p).unwrap()),
            "only \"lora\"",
        ),
        (
            "qwen2-arch.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[("general.architecture", s("qwen2"))], &[(q_a, &[d, 4], f32_), (q_b, &[4, q], f32_)])
                    .write(p)
                    .unwrap()
            }),
            "architecture \"qwen2\"",
        ),
        (
            "unknown-tensor.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[("blk.7.attn_q.weight.lora_a", &[d, 4], f32_), ("blk.7.attn_q.weight.lora_b", &[4, q], f32_)])
                    .write(p)
                    .unwrap()
            }),
            "\"blk.7.attn_q.weight\" does not exist in the base model",
        ),
        (
            "norm-tensor.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[("blk.0.attn_norm.weight.lora_a", &[d, 4], f32_), ("blk.0.attn_norm.weight.lora_b", &[4, d], f32_)])
                    .write(p)
                    .unwrap()
            }),
            "\"blk.0.attn_norm.weight\" is not a projection",
        ),
        (
            "shape-mismatch.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[(q_a, &[d, 4], f32_), ("blk.0.attn_q.weight.lora_b", &[4, kv], f32_)]).write(p).unwrap()
            }),
            "blk.0.attn_q.weight.lora_a/.lora_b: shape mismatch",
        ),
        (
            "rank-mismatch.gguf",
            Box::new(move |p: &Path| raw_adapter(&[], &[(q_a, &[d, 4], f32_), (q_b, &[3, q], f32_)]).write(p).unwrap()),
            "lora_a has rank 4",
        ),
        (
            "missing-b.gguf",
            Box::new(move |p: &Path| raw_adapter(&[], &[(q_a, &[d, 4], f32_)]).write(p).unwrap()),
            "blk.0.attn_q.weight.lora_a has no partner",
        ),
        (
            "missing-a.gguf",
            Box::new(move |p: &Path| raw_adapter(&[], &[(q_b, &[4, q], f32_)]).write(p).unwrap()),
            "blk.0.attn_q.weight.lora_b has no partner",
        ),
        (
            "token-embd.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[("token_embd.weight.lora_a", &[d, 4], f32_), ("token_embd.weight.lora_b", &[4, 300], f32_)])
                    .write(p)
                    .unwrap()
            }),
            "LoRA on the token embedding is not supported",
        ),
        (
            "q4_0.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[(q_a, &[d, 4], GgmlType::Q4_0), (q_b, &[4, q], f32_)]).write(p).unwrap()
            }),
            "adapters may be F32, F16, BF16 or Q8_0",
        ),
        (
            "stray-tensor.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[(q_a, &[d, 4], f32_), (q_b, &[4, q], f32_), ("blk.0.attn_q.weight", &[d, q], f32_)])
                    .write(p)
                    .unwrap()
            }),
            "neither a .lora_a nor a .lora_b tensor",
        ),
        (
            "one-dim.gguf",
            Box::new(move |p: &Path| raw_adapter(&[], &[(q_a, &[d * 4], f32_), (q_b, &[4, q], f32_)]).write(p).unwrap()),
            "a LoRA tensor is 2-D",
        ),
        ("no-tensors.gguf", Box::new(|p: &Path| raw_adapter(&[], &[]).write(p).unwrap()), "no tensors"),
        (
            "truncated.gguf",
            Box::new(move |p: &Path| {
                raw_adapter(&[], &[(q_a, &[d, 4], f32_), (q_b, &[4, q], f32_)]).write(p).unwrap();
                let bytes = std::fs::read(p).unwrap();
                std::fs::write(p, &bytes[..bytes.len() - 100]).unwrap();
            }),
            "past the end of the file",
        ),
        (
            // The tiny model below is untied; on a tied one output.weight does not exist.
            "different-base.gguf",
            Box::new(|p: &Path| {
                let other = TinyModel { n_embd: 32, n_head: 2, n_head_kv: 1, n_ff: 48, ..Default::default() };
                LoraSpec::for_model(&other, &TARGETS, 4, 8.0, 5).write(p)
            }),
            "shape mismatch: the adapter maps 32 inputs",
        ),
    ];
    cases
        .into_iter()
        .map(|(name, write, want)| {
            let path = dir.join(name);
            write(&path);
            (path, want)
        })
        .collect()
}

#[test]
fn bad_adapters_are_refused_naming_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), &TinyModel::default());
    let mut model = Model::load(&base_path).unwrap();
    let good = dir.path().join("good.lora.gguf");
    LoraSpec::for_model(&TinyModel::default(), &TARGETS, 4, 8.0, 3).write(&good);
    let good = LoraAdapter::load(&good).unwrap();
    for (path, want) in bad_adapters(dir.path()) {
        let err = match LoraAdapter::load(&path) {
            Err(e) => e.to_string(),
            // Structurally fine: the model refuses it, and a good adapter in the same call
            // is not attached either.
            Ok(adapter) => model.apply_lora(&[(&good, 1.0), (&adapter, 1.0)]).unwrap_err().to_string(),
        };
        eprintln!("{err}");
        assert!(err.contains(path.to_str().unwrap()), "the error does not name the file: {err}");
        assert!(err.contains(want), "expected {want:?} in: {err}");
        assert!(!model.has_lora(), "{}: a failed apply_lora left adapters attached", path.display());
    }
    // output.weight on a model with a tied head: there is no such base tensor.
    std::fs::create_dir(dir.path().join("tied")).unwrap();
    let tied = base(&dir.path().join("tied"), &TinyModel { tied: true, ..Default::default() });
    let err = Model::load(&tied).unwrap().apply_lora(&[(&good, 1.0)]).unwrap_err().to_string();
    assert!(err.contains("\"output.weight\" does not exist in the base model"), "{err}");
}

#[test]
fn a_non_finite_scale_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), &TinyModel::default());
    let path = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&TinyModel::default(), &TARGETS, 4, 8.0, 3).write(&path);
    let adapter = LoraAdapter::load(&path).unwrap();
    let err = Model::load(&base_path).unwrap().apply_lora(&[(&adapter, f32::NAN)]).unwrap_err().to_string();
    assert!(err.contains("a.lora.gguf") && err.contains("not a finite number"), "{err}");
}
