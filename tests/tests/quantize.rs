//! Our quantizer against llama-quantize: the same F32 inputs (nexus_tests::quantize_models)
//! must give the same tensor names, order, shapes and types, byte-identical data and the same
//! general.file_type as recorded in tests/fixtures/quantize/ by
//! scripts/quantize/make_reference.sh.

use std::path::{Path, PathBuf};

use nexus_convert::quantize::{quantize_file, QuantType, QuantizeError};
use nexus_runtime::gguf::GgufFile;
use nexus_tests::quantize_models::{quantize_model, QUANTIZE_MODELS};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn fixture(model: &str) -> Json {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/quantize/{model}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn check_against_llama(out: &Path, want: &Json, what: &str) {
    let file = GgufFile::open(out).unwrap();
    let file_type = file.get("general.file_type").and_then(|v| v.as_u64());
    assert_eq!(
        file_type,
        want["file_type"].as_u64(),
        "{what}: general.file_type"
    );
    assert_eq!(
        file.get("general.quantization_version")
            .and_then(|v| v.as_u64()),
        Some(2)
    );
    let want_tensors = want["tensors"].as_array().unwrap();
    assert_eq!(
        file.tensors().len(),
        want_tensors.len(),
        "{what}: tensor count"
    );
    for (got, want) in file.tensors().iter().zip(want_tensors) {
        let name = want["name"].as_str().unwrap();
        assert_eq!(got.name, name, "{what}: tensor order");
        let dims: Vec<u64> = want["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(got.dims, dims, "{what} {name}: shape");
        assert_eq!(
            got.ty.name(),
            want["type"].as_str().unwrap(),
            "{what} {name}: type"
        );
        let sha = format!("{:x}", Sha256::digest(file.tensor_data(got)));
        assert_eq!(
            sha,
            want["sha256"].as_str().unwrap(),
            "{what} {name} ({}): data differs",
            got.ty
        );
    }
}

#[test]
fn matches_llama_quantize_for_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for model in QUANTIZE_MODELS {
        let input = dir.path().join(format!("{model}.gguf"));
        quantize_model(model).unwrap().write(&input);
        let reference = fixture(model);
        let types = reference.as_object().unwrap();
        assert_eq!(
            types.len(),
            QuantType::ALL.len(),
            "{model}: fixture covers every type"
        );
        for (name, want) in types {
            let qtype = QuantType::from_name(name).unwrap();
            let out = dir.path().join(format!("{model}-{name}.gguf"));
            quantize_file(&input, &out, qtype, Some(2), |_| {}).unwrap();
            check_against_llama(&out, want, &format!("{model} {name}"));
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    quantize_model("tiny256").unwrap().write(&input);
    let err = QuantType::from_name("q4_k_x").unwrap_err().to_string();
    assert!(err.contains("q4_k_x") && err.contains("q4_k_m"), "{err}");

    let same = quantize_file(&input, &input, QuantType::Q8_0, None, |_| {}).unwrap_err();
    assert!(matches!(same, QuantizeError::SameFile { .. }), "{same}");
    // The same file through another spelling of its path.
    let other = dir.path().join(".").join("in.gguf");
    let same = quantize_file(&input, &other, QuantType::Q8_0, None, |_| {}).unwrap_err();
    assert!(matches!(same, QuantizeError::SameFile { .. }), "{same}");

    let out = dir.path().join("out.gguf");
    let missing = dir.path().join("nope.gguf");
    let err = quantize_file(&missing, &out, QuantType::Q8_0, None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.gguf"), "{err}");

    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = quantize_file(&truncated, &out, QuantType::Q4_K_M, None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated.gguf"), "{err}");
    assert!(!out.exists(), "no output after a failure");
}
