//! Converts the HF fixture directories of tests/fixtures/hf_convert/ and compares the result
//! with llama.cpp's converter output recorded there (manifests: every key's raw bytes hashed,
//! every tensor's name, type, shape and data hash). Safetensors weights are regenerated here
//! from the same integer hash as scripts/convert/make_hf_fixtures.py and checked by sha256.
//! The SentencePiece fixtures (llama-spm*) carry their own tokenizer.model; their manifests
//! come from scripts/convert/spm_on_device.sh and are skipped, with a message, until present.

use std::path::{Path, PathBuf};

use nexus_convert::hf::{convert, HfError, OutType};
use nexus_runtime::gguf::GgufFile;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf_convert")
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn fnv1a32(s: &str) -> u64 {
    let mut h: u32 = 0x811C9DC5;
    for b in s.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    h as u64
}

/// Mirror of make_hf_fixtures.py `tensor_values` + `encode`.
fn tensor_bytes(name: &str, n: usize, dtype: &str) -> Vec<u8> {
    let norm = name.ends_with("norm.weight");
    let mut out = Vec::new();
    for i in 0..n as u64 {
        let mut h = (i * 2654435761 + fnv1a32(name)) & 0xFFFF_FFFF;
        h ^= h >> 15;
        h = (h * 2246822519) & 0xFFFF_FFFF;
        h ^= h >> 13;
        let v = match (dtype, norm) {
            ("BF16", true) => ((h >> 26) as f64 - 32.0) / 128.0 + 1.0,
            ("BF16", false) => ((h >> 25) as f64 - 64.0) / 256.0,
            ("F16", true) => ((h >> 24) as f64 - 128.0) / 1024.0 + 1.0,
            ("F16", false) => ((h >> 22) as f64 - 512.0) / 4096.0,
            (_, true) => ((h >> 16) as f64 - 32768.0) / (1u64 << 20) as f64 + 1.0,
            (_, false) => ((h >> 16) as f64 - 32768.0) / (1u64 << 17) as f64,
        } as f32;
        match dtype {
            "F32" => out.extend_from_slice(&v.to_le_bytes()),
            "F16" => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            _ => out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes()),
        }
    }
    out
}

/// qwen2-bias has Qwen2's own vocabulary, committed gzipped (11 MB of JSON); the llama
/// fixtures share GPT-2's.
fn write_tokenizer(model: &str, dst: &Path) {
    if model.starts_with("llama-spm") {
        return;
    }
    if model.starts_with("qwen2") {
        let gz = std::fs::File::open(fixtures().join("qwen2-tokenizer.json.gz")).unwrap();
        let mut out = std::fs::File::create(dst).unwrap();
        std::io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
    } else {
        std::fs::copy(fixtures().join("tokenizer.json"), dst).unwrap();
    }
}

/// Builds the HF directory of fixture `model` in a temp dir, safetensors checked by sha256.
fn build(model: &str) -> tempfile::TempDir {
    let src = fixtures().join(model);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(model);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    write_tokenizer(model, &dir.join("tokenizer.json"));
    let layout: Json = serde_json::from_str(&std::fs::read_to_string(src.join("tensors.json")).unwrap()).unwrap();
    let mut files: Vec<(String, Vec<&Json>)> = Vec::new();
    for t in layout.as_array().unwrap() {
        let f = t["file"].as_str().unwrap().to_string();
        match files.iter_mut().find(|(n, _)| *n == f) {
            Some((_, v)) => v.push(t),
            None => files.push((f, vec![t])),
        }
    }
    for (file, tensors) in files {
        let (mut entries, mut data) = (Vec::new(), Vec::new());
        for t in tensors {
            let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let (name, dtype) = (t["name"].as_str().unwrap(), t["dtype"].as_str().unwrap());
            let blob = tensor_bytes(name, shape.iter().product(), dtype);
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            entries.push(format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                dims.join(","),
                data.len(),
                data.len() + blob.len()
            ));
            data.extend_from_slice(&blob);
        }
        let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&data);
        std::fs::write(dir.join(&file), &bytes).unwrap();
        let sums = std::fs::read_to_string(src.join("safetensors.sha256")).unwrap();
        assert!(sums.contains(&format!("{}  {file}", hex(&bytes))), "{model}/{file}: regenerated bytes differ from the device's");
    }
    tmp
}

/// general.* fields that describe rather than define the model may differ from llama.cpp's.
fn compared(key: &str) -> bool {
    !key.starts_with("GGUF.")
        && (!key.starts_with("general.")
            || ["general.architecture", "general.file_type", "general.quantization_version"].contains(&key))
}

fn check(model: &str, outtype: OutType, tag: &str) {
    let path = fixtures().join(format!("{model}.{tag}.manifest.json"));
    if !path.is_file() {
        eprintln!("SKIPPED {model}.{tag}: no reference manifest {} (run scripts/convert/spm_on_device.sh on the GPU machine)", path.display());
        return;
    }
    let tmp = build(model);
    let out = tmp.path().join("out.gguf");
    convert(&tmp.path().join(model), &out, outtype, |_, _| {}).unwrap();
    let manifest: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let g = GgufFile::open(&out).unwrap();
    let ours: Vec<(String, String)> = g
        .metadata()
        .iter()
        .filter(|(k, _)| compared(k))
        .map(|(k, v)| {
            let mut b = (v.value_type() as u32).to_le_bytes().to_vec();
            v.encode(&mut b);
            (k.clone(), hex(&b))
        })
        .collect();
    let theirs: Vec<(String, String)> = manifest["kv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| compared(e[0].as_str().unwrap()))
        .map(|e| (e[0].as_str().unwrap().to_string(), e[3].as_str().unwrap().to_string()))
        .collect();
    let keys = |v: &[(String, String)]| v.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs), "{model}.{tag}: key order");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.1, b.1, "{model}.{tag}: value of {}", a.0);
    }
    let theirs = manifest["tensors"].as_array().unwrap();
    assert_eq!(g.tensors().len(), theirs.len(), "{model}.{tag}: tensor count");
    for (t, e) in g.tensors().iter().zip(theirs) {
        assert_eq!(t.name, e[0].as_str().unwrap(), "{model}.{tag}: tensor order");
        assert_eq!(t.ty.to_string().to_uppercase(), e[1].as_str().unwrap().to_uppercase(), "{model}.{tag}: type of {}", t.name);
        let dims: Vec<u64> = e[2].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(t.dims, dims, "{model}.{tag}: shape of {}", t.name);
        if t.name == "rope_freqs.weight" {
            // Known difference: torch's f32 pow(5e5, 0.25) is 1 ulp above the correctly rounded
            // powf we use, so factor 1 differs by 2 ulp (3.5685332 vs llama.cpp's 3.5685337).
            let ours: Vec<f32> = g.tensor_data(t).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let want = [1.0f32, 3.568_533_7, 8.0, 8.0];
            assert!(ours.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-6 * b), "{ours:?}");
            continue;
        }
        assert_eq!(hex(g.tensor_data(t)), e[3].as_str().unwrap(), "{model}.{tag}: bytes of {}", t.name);
    }
}

#[test]
fn llama_gqa_f32() {
    check("llama-gqa", OutType::F32, "f32")
}
#[test]
fn llama_gqa_f16() {
    check("llama-gqa", OutType::F16, "f16")
}
#[test]
fn llama_gqa_bf16() {
    check("llama-gqa", OutType::Bf16, "bf16")
}
#[test]
fn llama_gqa_q8_0() {
    check("llama-gqa", OutType::Q8_0, "q8_0")
}
#[test]
fn llama3_sharded_f32() {
    check("llama3-sharded", OutType::F32, "f32")
}
#[test]
fn llama3_sharded_q8_0() {
    check("llama3-sharded", OutType::Q8_0, "q8_0")
}

fn err_of(model: &str, edit: impl FnOnce(&Path)) -> HfError {
    let tmp = build(model);
    let dir = tmp.path().join(model);
    edit(&dir);
    let out = tmp.path().join("out.gguf");
    let e = convert(&dir, &out, OutType::F32, |_, _| {}).unwrap_err();
    assert!(!out.exists(), "no file under the final name after an error");
    let tmp_files = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(tmp_files, 0, "temporary file removed");
    e
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Json>)) {
    let p = dir.join("config.json");
    let mut j: Json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(j.as_object_mut().unwrap());
    std::fs::write(p, j.to_string()).unwrap();
}

#[test]
fn error_missing_config_key() {
    let e = err_of("llama-gqa", |d| edit_config(d, |c| drop(c.remove("hidden_size"))));
    let m = e.to_string();
    assert!(m.contains("config.json") && m.contains("hidden_size"), "{m}");
}

#[test]
fn error_unsupported_architecture() {
    let e = err_of("llama-gqa", |d| {
        edit_config(d, |c| drop(c.insert("architectures".into(), serde_json::json!(["GPTNeoXForCausalLM"]))))
    });
    assert!(matches!(e, HfError::UnsupportedArch { .. }) && e.to_string().contains("GPTNeoXForCausalLM"), "{e}");
}

#[test]
fn error_unsupported_dtype() {
    let e = err_of("llama-gqa", |d| {
        let p = d.join("model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let s = String::from_utf8_lossy(&b[8..200]).to_string();
        let at = 8 + s.find("\"BF16\"").unwrap();
        b[at + 1..at + 6].copy_from_slice(b"I16\" ");
        std::fs::write(&p, b).unwrap();
    });
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn error_unsupported_tokenizer() {
    let e = err_of("llama-gqa", |d| {
        let p = d.join("tokenizer.json");
        let s = std::fs::read_to_string(&p).unwrap().replacen("\"type\": \"BPE\"", "\"type\": \"Unigram\"", 1);
        std::fs::write(p, s).unwrap();
    });
    assert!(matches!(e, HfError::UnsupportedTokenizer { .. }) && e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn error_missing_shard() {
    let e = err_of("llama3-sharded", |d| std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap());
    assert!(matches!(e, HfError::MissingShard { .. }) && e.to_string().contains("model-00002-of-00002"), "{e}");
}

#[test]
fn error_shape_mismatch() {
    let e = err_of("llama-gqa", |d| edit_config(d, |c| drop(c.insert("intermediate_size".into(), 96.into()))));
    assert!(matches!(e, HfError::ShapeMismatch { .. }) && e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn error_unused_tensor() {
    // Layer 1's tensors are of no use to a one-layer model.
    let e = err_of("llama-gqa", |d| edit_config(d, |c| drop(c.insert("num_hidden_layers".into(), 1.into()))));
    assert!(matches!(e, HfError::UnusedTensor { .. }) && e.to_string().contains("model.layers.1"), "{e}");
}

#[test]
fn qwen2_bias_f32() {
    check("qwen2-bias", OutType::F32, "f32")
}
#[test]
fn qwen2_bias_bf16() {
    check("qwen2-bias", OutType::Bf16, "bf16")
}
#[test]
fn qwen2_bias_q8_0() {
    check("qwen2-bias", OutType::Q8_0, "q8_0")
}

#[test]
fn llama_spm_f32() {
    check("llama-spm", OutType::F32, "f32")
}
#[test]
fn llama_spm_q8_0() {
    check("llama-spm", OutType::Q8_0, "q8_0")
}
#[test]
fn llama_spm_tj_f16() {
    check("llama-spm-tj", OutType::F16, "f16")
}

/// The reference's vocabulary of llama-spm, checked value by value (the manifest only has
/// hashes): pieces with their scores and types, added tokens, padding, special ids.
#[test]
fn llama_spm_vocabulary() {
    let tmp = build("llama-spm");
    let out = tmp.path().join("out.gguf");
    convert(&tmp.path().join("llama-spm"), &out, OutType::F32, |_, _| {}).unwrap();
    let g = GgufFile::open(&out).unwrap();
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    let scores = g.get_f32_array("tokenizer.ggml.scores").unwrap();
    let types: Vec<i32> = g.get_i64_array("tokenizer.ggml.token_type").unwrap().into_iter().map(|t| t as i32).collect();
    assert_eq!((tokens.len(), scores.len(), types.len()), (408, 408, 408));
    let at = |i: usize| (tokens[i], scores[i], types[i]);
    // added_tokens_decoder lists <unk> <s> </s> as special: CONTROL, score -1000 (as the reference).
    assert_eq!(at(0), ("<unk>", -1000.0, 3));
    assert_eq!(at(1), ("<s>", -1000.0, 3));
    assert_eq!(at(3), ("<ctrl>", 0.0, 3));
    // A user-defined piece of the model is written NORMAL (sentencepiece's Is* all say no).
    assert_eq!(at(4), ("<user>", 0.0, 1));
    assert_eq!(at(5), ("<0x00>", 0.0, 6));
    assert_eq!(at(262), ("he", -1.0, 1));
    assert_eq!(at(399), ("z", -138.0, 5));
    // added_tokens_decoder: not special but looks it → CONTROL; plain → USER_DEFINED, ▁ → space.
    assert_eq!(at(400), ("<|im_start|>", -1000.0, 3));
    assert_eq!(at(401), (" user tok", -1000.0, 4));
    assert_eq!(at(402), ("<extra>", -1000.0, 3));
    // added_tokens.json only.
    assert_eq!(at(403), ("<extra_json>", -1000.0, 4));
    assert_eq!(at(404), ("[PAD404]", -10000.0, 5));
    assert_eq!(at(407), ("[PAD407]", -10000.0, 5));
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "default");
    assert!(g.get("tokenizer.ggml.merges").is_none());
    assert_eq!(g.get_u64("tokenizer.ggml.padding_token_id").unwrap(), 0);
    assert_eq!(g.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()), Some(true));
}

/// The converted file loads in the runtime, tokenizes as sentencepiece itself does
/// (spm/spm_expected.json, written by make_spm_model.py), and runs a forward pass.
#[test]
fn llama_spm_runs_in_the_runtime() {
    use nexus_runtime::model::{Logits, Model};
    use nexus_runtime::tokenizer::Tokenizer;
    for model in ["llama-spm", "llama-spm-tj"] {
        let tmp = build(model);
        let out = tmp.path().join("out.gguf");
        convert(&tmp.path().join(model), &out, OutType::Q8_0, |_, _| {}).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!((tok.model_kind(), tok.n_vocab(), tok.bos(), tok.eos(), tok.add_bos()), ("llama", if model == "llama-spm" { 408 } else { 404 }, Some(1), Some(2), true));
        let expected: Json = serde_json::from_str(&std::fs::read_to_string(fixtures().join("spm/spm_expected.json")).unwrap()).unwrap();
        for e in expected.as_array().unwrap() {
            let text = e["text"].as_str().unwrap();
            let want: Vec<u32> = e["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(text, false, false), want, "{model}: {text:?}");
            let mut with_bos = vec![1];
            with_bos.extend(&want);
            assert_eq!(tok.encode(text, true, false), with_bos, "{model}: {text:?} with bos");
            assert_eq!(tok.decode(&want, true), text, "{model}: decode {text:?}");
        }
        // Added tokens are matched whole when special tokens are parsed.
        let ids = tok.encode("<|im_start|>he", false, true);
        assert_eq!(ids[0], 400, "{ids:?}");
        let m = Model::load(&out).unwrap();
        let mut cache = m.new_cache(16);
        let prompt = tok.encode("the model reads tokens", true, false);
        let logits = m.forward(&prompt, &mut cache, Logits::Last).unwrap();
        assert_eq!(logits.len(), tok.n_vocab());
        assert!(logits.iter().all(|x| x.is_finite()));
    }
}

fn spm_err(edit: impl FnOnce(&Path)) -> String {
    err_of("llama-spm", edit).to_string()
}

#[test]
fn error_spm_truncated() {
    let e = spm_err(|d| {
        let p = d.join("tokenizer.model");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    });
    assert!(e.contains("tokenizer.model") && e.contains("truncated"), "{e}");
}

/// Sets the type (field 3, key 0x18) of the piece whose text is `piece`: in the file it
/// follows the text and the score (key 0x15, 4 bytes).
fn retype_piece(d: &Path, piece: &[u8], new_type: u8) {
    let p = d.join("tokenizer.model");
    let mut b = std::fs::read(&p).unwrap();
    let at = b.windows(piece.len()).position(|w| w == piece).unwrap() + piece.len();
    assert_eq!((b[at], b[at + 5]), (0x15, 0x18));
    b[at + 6] = new_type;
    std::fs::write(&p, b).unwrap();
}

#[test]
fn error_spm_unknown_piece_type() {
    let e = spm_err(|d| retype_piece(d, b"\x0a\x03<s>", 9));
    assert!(e.contains("tokenizer.model") && e.contains("unknown type 9"), "{e}");
}

#[test]
fn error_spm_word_model() {
    let e = spm_err(|d| {
        // trainer_spec.model_type (field 3, key 0x18) = BPE (2) → WORD (3).
        let p = d.join("tokenizer.model");
        let mut b = std::fs::read(&p).unwrap();
        let spec = b.windows(2).rposition(|w| w == [0x18, 0x02]).unwrap();
        b[spec + 1] = 3;
        std::fs::write(&p, b).unwrap();
    });
    assert!(e.contains("tokenizer.model") && e.contains("WORD"), "{e}");
}

#[test]
fn error_byte_fallback_tokenizer_json_without_model() {
    let e = err_of("llama-spm-tj", |d| std::fs::remove_file(d.join("tokenizer.model")).unwrap()).to_string();
    assert!(e.contains("tokenizer.json") && e.contains("byte-fallback") && e.contains("tokenizer.model"), "{e}");
}
