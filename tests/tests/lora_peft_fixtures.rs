//! `nexus-cli convert-lora` against the reference: tests/fixtures/lora_peft/ holds a PEFT 0.21
//! adapter of a tiny llama, llama.cpp's `convert_lora_to_gguf.py` outputs for it, the base as
//! llama.cpp's `convert_hf_to_gguf.py` wrote it (vocabulary truncated to 512 ids), and PEFT's
//! logits (made by scripts/lora/make_peft_fixtures.py on the GPU machine). Our conversion must
//! be byte-identical to llama.cpp's for every outtype, and the runtime with the adapter must
//! reproduce PEFT's logits. Skipped, with the reason printed, while the folder is absent.

use std::path::{Path, PathBuf};

use nexus_convert::hf::OutType;
use nexus_convert::lora_peft::convert_peft;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};
use nexus_tests::peft::OUTTYPE_TOLERANCES;
use nexus_tests::root;

/// Our f32 forward with each converted adapter against PEFT's float32 logits (see
/// `OUTTYPE_TOLERANCES`).
const TOLERANCES: [(&str, f64); 4] = OUTTYPE_TOLERANCES;

/// The fixture folder; `NEXUS_LORA_PEFT_FIXTURES` points the tests at another copy (a fresh
/// output of the generator, before it is committed).
fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("NEXUS_LORA_PEFT_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root().join("tests/fixtures/lora_peft"));
    if dir.join("logits.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} is absent (made by scripts/lora/make_peft_fixtures.py on the GPU machine, with PEFT and llama.cpp's converter)",
            dir.display()
        );
        None
    }
}

fn outtype(name: &str) -> OutType {
    match name {
        "f32" => OutType::F32,
        "f16" => OutType::F16,
        "bf16" => OutType::Bf16,
        _ => OutType::Q8_0,
    }
}

/// Names the first difference between two GGUF files: key, tensor, or bytes.
fn explain_difference(ours: &Path, theirs: &Path) -> String {
    let (a, b) = (GgufFile::open(ours).unwrap(), GgufFile::open(theirs).unwrap());
    let (ka, kb) = (a.metadata(), b.metadata());
    for i in 0..ka.len().max(kb.len()) {
        if ka.get(i) != kb.get(i) {
            return format!("key #{i}: ours {:?}, llama.cpp's {:?}", ka.get(i), kb.get(i));
        }
    }
    let (ta, tb) = (a.tensors(), b.tensors());
    for i in 0..ta.len().max(tb.len()) {
        let (x, y) = (ta.get(i), tb.get(i));
        let same_info = matches!((x, y), (Some(x), Some(y)) if x.name == y.name && x.ty == y.ty && x.dims == y.dims && x.offset == y.offset);
        if !same_info {
            let d = |t: Option<&nexus_runtime::gguf::TensorInfo>| t.map(|t| format!("{} {} {:?} @{}", t.name, t.ty, t.dims, t.offset));
            return format!("tensor #{i}: ours {:?}, llama.cpp's {:?}", d(x), d(y));
        }
        let (x, y) = (x.unwrap(), y.unwrap());
        let (da, db) = (a.tensor_data(x), b.tensor_data(y));
        if let Some(k) = da.iter().zip(db).position(|(p, q)| p != q) {
            return format!("tensor {}: byte {k} differs", x.name);
        }
    }
    format!("same keys and tensors; file sizes {} and {}", a.file_len(), b.file_len())
}

#[test]
fn conversion_is_byte_identical_to_llama_cpps() {
    let Some(dir) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (ot, _) in TOLERANCES {
        let theirs = dir.join(format!("adapter.{ot}.gguf"));
        let ours = tmp.path().join(format!("adapter.{ot}.gguf"));
        convert_peft(&dir.join("peft_adapter"), &dir.join("base.f32.gguf"), &ours, outtype(ot), |_, _| {}).unwrap();
        let same = std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap();
        assert!(same, "{ot}: differs from llama.cpp's {}: {}", theirs.display(), explain_difference(&ours, &theirs));
        eprintln!("{ot}: byte-identical to {}", theirs.display());
    }
}

struct Prompt {
    ids: Vec<u32>,
    base: Vec<f32>,
    peft: Vec<f32>,
}

fn prompts(dir: &Path) -> Vec<Prompt> {
    let text = std::fs::read_to_string(dir.join("logits.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect()
    };
    json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Prompt {
            ids: p["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
            base: rows(&p["base_f32"]),
            peft: rows(&p["peft_f32"]),
        })
        .collect()
}

fn logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len());
    model.forward(ids, &mut cache, Logits::All).unwrap()
}

/// (max |a − b|, that relative to the largest |b|).
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    (d, d / scale)
}

#[test]
fn logits_with_the_converted_adapter_equal_pefts() {
    let Some(dir) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base_path = dir.join("base.f32.gguf");
    let prompts = prompts(&dir);
    let base = Model::load(&base_path).unwrap();
    for p in &prompts {
        let (_, rel) = diff(&logits(&base, &p.ids), &p.base);
        eprintln!("base, {} tokens: max relative difference from transformers {rel:.2e}", p.ids.len());
        assert!(rel < 1e-4, "the base model itself differs from transformers: {rel}");
    }
    for (ot, tol) in TOLERANCES {
        let path = tmp.path().join(format!("adapter.{ot}.gguf"));
        convert_peft(&dir.join("peft_adapter"), &base_path, &path, outtype(ot), |_, _| {}).unwrap();
        let adapter = LoraAdapter::load(&path).unwrap();
        let mut model = Model::load(&base_path).unwrap();
        model.apply_lora(&[(&adapter, 1.0)]).unwrap();
        for p in &prompts {
            let ours = logits(&model, &p.ids);
            let (abs, rel) = diff(&ours, &p.peft);
            let (_, effect) = diff(&p.base, &p.peft);
            eprintln!("{ot} adapter, {} tokens: max |ours − PEFT| {abs:.2e} ({rel:.2e} relative; the adapter moves logits by {effect:.2e})", p.ids.len());
            assert!(rel < tol, "{ot}: relative difference {rel} from PEFT over {tol}");
            assert!(effect > 100.0 * TOLERANCES[0].1, "the adapter barely changes the logits ({effect}): the check has no teeth");
        }
    }
}
