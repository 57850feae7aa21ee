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
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::lora::LoraSpec;
use nexus_tests::smollm2::{assert_steps_bitwise, x86_kernels};
use nexus_tests::smollm2_path;

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

/// Our greedy steps with the adapter of type `ty` against llama.cpp's in `fixture`: the prompt's
/// tokens equal, each logits row hash-equal and the same token chosen.
fn check_against_llama_cpp(ty: GgmlType, fixture: &str) {
    let Some(path) = smollm2_path() else { return };
    if !x86_kernels() {
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
    let steps = assert_steps_bitwise(&model, &tokenizer, fixture, &format!("{ty} adapter"));
    eprintln!("{ty} adapter: {steps} steps, every logits row bitwise llama.cpp's");
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
