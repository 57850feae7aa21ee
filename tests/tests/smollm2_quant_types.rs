//! SmolLM2 requantized by our quantizer into the other block formats (8-bit, 4/5-bit legacy,
//! K-quants), each against llama.cpp's CPU backend on the same file: every step's whole logits
//! row bitwise llama.cpp's (fixtures `tests/fixtures/smollm2/quant/TYPE.json`, written by
//! `scripts/smollm2/quant_logits.sh`). tests/tests/smollm2.rs checks the file as shipped (Q4_1).

use std::sync::Arc;

use nexus_convert::quantize::{quantize_file, QuantType};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::smollm2::{assert_steps_bitwise, fixture, x86_kernels};
use sha2::{Digest, Sha256};
use nexus_tests::smollm2_path;

fn check(name: &str) {
    let Some(path) = smollm2_path() else { return };
    if !x86_kernels() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.gguf"));
    quantize_file(&path, &out, QuantType::from_name(name).unwrap(), None, |_| {}).unwrap();
    // The file llama.cpp ran is the one our quantizer writes today.
    let sha = format!("{:x}", Sha256::digest(std::fs::read(&out).unwrap()));
    assert_eq!(sha, fixture(&format!("quant/{name}.json"))["model_sha256"].as_str().unwrap(), "{name}: the quantized file changed");
    let file = Arc::new(GgufFile::open(&out).unwrap());
    let (tokenizer, model) = (Tokenizer::from_gguf(&file).unwrap(), Model::from_file(file).unwrap());
    let steps = assert_steps_bitwise(&model, &tokenizer, &format!("quant/{name}.json"), name);
    eprintln!("{name}: {steps} steps, every logits row bitwise llama.cpp's");
}

#[test]
fn q8_0_is_bitwise_llama_cpps() {
    check("q8_0");
}

#[test]
fn q4_k_m_is_bitwise_llama_cpps() {
    check("q4_k_m");
}

#[test]
fn q5_0_is_bitwise_llama_cpps() {
    check("q5_0");
}

#[test]
fn q6_k_is_bitwise_llama_cpps() {
    check("q6_k");
}

#[test]
fn q4_0_is_bitwise_llama_cpps() {
    check("q4_0");
}

#[test]
fn q5_k_m_is_bitwise_llama_cpps() {
    check("q5_k_m");
}
