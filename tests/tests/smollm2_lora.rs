//! SmolLM2-135M-Instruct Q4_1 with a LoRA adapter against llama.cpp with the same adapter
//! (`--lora`): every greedy step's logits row bitwise llama.cpp's, as without an adapter
//! (tests/tests/smollm2.rs). The adapter is F32, rank 16, alpha 32, on all seven projections of
//! every layer, with values from a fixed seed (`nexus_tests::lora::LoraSpec`); the reference
//! (tests/fixtures/smollm2/lora_logits.json) was made by scripts/smollm2/llama_logits.py
//! --lora on the file that `write_reference_adapter` below writes.

use std::path::Path;
use std::sync::Arc;

use nexus_kernels::GgmlType;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::lora::LoraSpec;
use nexus_tests::{logits_fnv1a64, root, smollm2_path};

const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

fn write_adapter(model: &Path, out: &Path, ty: GgmlType) {
    let file = GgufFile::open(model).unwrap();
    let targets = file
        .tensors()
        .iter()
        .filter(|t| PROJECTIONS.iter().any(|p| t.name.ends_with(&format!(".{p}.weight"))))
        .map(|t| (t.name.clone(), t.dims[0] as usize, t.dims[1] as usize))
        .collect();
    LoraSpec { arch: "llama".into(), alpha: 32.0, rank: 16, ty, seed: 2026, targets }.write(out);
}

/// Our greedy steps with the adapter of type `ty` against llama.cpp's in `fixture`: each
/// logits row hash-equal and the same token chosen.
fn check_against_llama_cpp(ty: GgmlType, fixture: &str) {
    let Some(path) = smollm2_path() else { return };
    if !nexus_kernels::simd::detected().has_avx2() {
        eprintln!("skipped: the bitwise comparison needs the AVX2 kernels");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter_path = dir.path().join(format!("smollm2-r16.{ty}.lora.gguf"));
    write_adapter(&path, &adapter_path, ty);
    let adapter = LoraAdapter::load(&adapter_path).unwrap();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let mut model = Model::from_file(file).unwrap();
    model.apply_lora(&[(&adapter, 1.0)]).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/smollm2").join(fixture)).unwrap()).unwrap();
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = tokenizer.encode(prompt, true, true);
        let mut cache = model.new_cache(256);
        let mut logits = model.forward(&ids, &mut cache, Logits::Last).unwrap();
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let token = step["token"].as_u64().unwrap() as u32;
            let top = (0..logits.len()).fold(0, |b, v| if logits[v] > logits[b] { v } else { b });
            assert!(
                logits_fnv1a64(&logits) == step["logits_fnv1a64"].as_str().unwrap() && top as u32 == token,
                "{ty} adapter, {prompt:?} step {i}: ours top {top} ({}), llama.cpp's {token} ({})",
                logits[top],
                step["top_logit"]
            );
            logits = model.forward(&[token], &mut cache, Logits::Last).unwrap();
        }
    }
}

#[test]
fn logits_with_an_adapter_are_bitwise_llama_cpps() {
    check_against_llama_cpp(GgmlType::F32, "lora_logits.json");
}

/// An F16 adapter is multiplied in f16 as llama.cpp multiplies it (inputs rounded to f16,
/// `ggml_vec_dot_f16`'s f64 finish), and stays bitwise too.
#[test]
fn logits_with_an_f16_adapter_are_bitwise_llama_cpps() {
    check_against_llama_cpp(GgmlType::F16, "lora_f16_logits.json");
}

/// Writes the reference adapter for the fixture script: `NEXUS_LORA_OUT=FILE [NEXUS_LORA_TYPE=f16]
/// cargo test --release -p nexus-tests --test smollm2_lora -- --ignored write_reference_adapter`.
#[test]
#[ignore]
fn write_reference_adapter() {
    let path = smollm2_path().expect("models/SmolLM2-135M-Instruct.Q4_1.gguf (models/fetch.sh)");
    let out = std::env::var("NEXUS_LORA_OUT").expect("NEXUS_LORA_OUT is set");
    let ty = match std::env::var("NEXUS_LORA_TYPE").as_deref() {
        Ok("f16") => GgmlType::F16,
        Ok("f32") | Err(_) => GgmlType::F32,
        Ok(other) => panic!("NEXUS_LORA_TYPE={other}: f32 or f16"),
    };
    write_adapter(&path, Path::new(&out), ty);
}
