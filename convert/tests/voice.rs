//! `convert_voice`: the real Piper voice converts to the documented voice GGUF (skipped when
//! models/en_US-joe-medium.onnx has not been fetched), and bad inputs give errors that name the
//! file and what is wrong, leaving nothing under the output name.

use std::path::{Path, PathBuf};

use nexus_convert::onnx::parse_model;
use nexus_convert::voice::{convert_voice, default_config_path, VoiceError};
use nexus_runtime::gguf::{GgufFile, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn real_voice() -> Option<PathBuf> {
    let p = repo().join("models/en_US-joe-medium.onnx");
    if p.exists() && default_config_path(&p).exists() {
        Some(p)
    } else {
        println!("skipped: {} (or its .onnx.json) is absent; run models/fetch.sh", p.display());
        None
    }
}

/// Nothing under the final name, and no temporary file left beside it.
fn assert_nothing_written(dir: &Path, out: &Path) {
    assert!(!out.exists(), "{} exists after a failed conversion", out.display());
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains("gguf")), "left behind: {left:?}");
}

fn u32_array(g: &GgufFile, key: &str) -> Vec<u64> {
    g.get_array(key).unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn f32_at(data: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(data[4 * i..4 * i + 4].try_into().unwrap())
}

#[test]
fn real_voice_converts() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("en_US-joe-medium.gguf");
    let summary = convert_voice(&onnx, &default_config_path(&onnx), &out).unwrap();
    assert_eq!(summary.n_tensors, 350);
    assert_eq!(summary.n_constants, 51);

    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.tensors().len(), 350);
    let mut names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 350, "tensor names are not unique");
    let n_elements: u64 = g.tensors().iter().map(|t| t.n_elements()).sum();
    assert_eq!(n_elements, 15_650_459, "the voice's parameter count (piper-vits.md §3.3)");

    // metadata
    assert_eq!(g.get_str("general.architecture").unwrap(), "vits");
    assert_eq!(g.get_str("general.name").unwrap(), "en_US-joe-medium");
    assert_eq!(g.get_u64("vits.sample_rate").unwrap(), 22050);
    assert_eq!(g.get_str("vits.espeak.voice").unwrap(), "en-us");
    assert_eq!(g.get_str("vits.phoneme_type").unwrap(), "espeak");
    assert_eq!(g.get_f32("vits.noise_scale").unwrap(), 0.667);
    assert_eq!(g.get_f32("vits.length_scale").unwrap(), 1.0);
    assert_eq!(g.get_f32("vits.noise_w").unwrap(), 0.8);
    for (key, want) in [
        ("vits.n_vocab", 256),
        ("vits.hidden_channels", 192),
        ("vits.filter_channels", 768),
        ("vits.n_heads", 2),
        ("vits.n_layers", 6),
        ("vits.window_size", 4),
        ("vits.upsample_initial_channel", 256),
        ("vits.flow.n_flows", 4),
        ("vits.flow.n_wn_layers", 4),
        ("vits.flow.kernel_size", 5),
        ("vits.dp.n_bins", 10),
    ] {
        assert_eq!(g.get_u64(key).unwrap(), want, "{key}");
    }
    assert_eq!(u32_array(&g, "vits.upsample_rates"), [8, 8, 4]);
    assert_eq!(u32_array(&g, "vits.upsample_kernel_sizes"), [16, 16, 8]);
    assert_eq!(u32_array(&g, "vits.resblock_kernel_sizes"), [3, 5, 7]);
    assert_eq!(u32_array(&g, "vits.resblock_dilations"), [1, 2, 2, 6, 3, 12]);
    assert_eq!(g.get_f32("vits.dp.tail_bound").unwrap(), 5.0);
    assert_eq!(g.get_f32("vits.layer_norm_eps").unwrap(), 1e-5);

    // phoneme map: 151 keys sorted by first id, one id each here, ids 0..150
    let phonemes = g.get_str_array("vits.phoneme_id_map.phonemes").unwrap();
    let counts = u32_array(&g, "vits.phoneme_id_map.counts");
    let ids = u32_array(&g, "vits.phoneme_id_map.ids");
    assert_eq!(phonemes.len(), 151);
    assert_eq!(counts.iter().sum::<u64>() as usize, ids.len());
    assert_eq!(&phonemes[..4], ["_", "^", "$", " "]);
    assert_eq!(&ids[..4], [0, 1, 2, 3]);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    // Spot values: GGUF bytes equal the ONNX initializer bytes, dims reversed.
    let bytes = std::fs::read(&onnx).unwrap();
    let model = parse_model(&bytes).unwrap();
    for (onnx_name, vits) in [
        ("sid", "enc_p.emb.weight"),
        ("onnx::Conv_8168", "flow.flows.6.enc.in_layers.0.weight"),
        ("onnx::Conv_8261", "flow.flows.0.enc.res_skip_layers.3.weight"),
        ("/dp/flows.0/Exp_output_0", "dp.flows.0.exp_neg_logs"),
        ("dec.ups.0.weight", "dec.ups.0.weight"),
        ("dec.conv_post.weight", "dec.conv_post.weight"),
    ] {
        let init = model.graph.initializer.iter().find(|t| t.name == onnx_name).unwrap();
        let info = g.tensor_info(vits).unwrap_or_else(|| panic!("{vits} missing"));
        let reversed: Vec<u64> = init.dims.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, reversed, "{vits}");
        assert_eq!(g.tensor_data(info), init.raw_data.unwrap(), "{vits}");
    }
    // ...and independently of the reader: values printed by onnx.numpy_helper.
    let emb = g.tensor_data(g.tensor_info("enc_p.emb.weight").unwrap());
    assert_eq!(f32_at(emb, 3 * 192), -0.021234905_f32);
    assert_eq!(f32_at(emb, 255 * 192 + 191), -0.08282299_f32);
    let in0 = g.tensor_data(g.tensor_info("flow.flows.6.enc.in_layers.0.weight").unwrap());
    assert_eq!(g.tensor_info("flow.flows.6.enc.in_layers.0.weight").unwrap().dims, [5, 192, 384]);
    assert_eq!(f32_at(in0, 2), -0.020762749_f32);
    assert_eq!(f32_at(in0, 383 * 192 * 5 + 191 * 5 + 4), -0.014784367_f32);
    let e = g.tensor_data(g.tensor_info("dp.flows.0.exp_neg_logs").unwrap());
    assert!((f32_at(e, 0) - 0.9785079).abs() < 1e-6 && (f32_at(e, 1) - 1.051_145).abs() < 1e-6);
}

#[test]
fn truncated_real_voice_is_an_error() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&onnx).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("cut.gguf");
    let err = convert_voice(&cut, &default_config_path(&onnx), &out).unwrap_err();
    assert!(matches!(err, VoiceError::Onnx { .. }), "{err}");
    assert!(err.to_string().contains("cut.onnx"), "{err}");
    assert_nothing_written(dir.path(), &out);
}

#[test]
fn config_that_disagrees_with_the_graph_is_an_error_after_parsing() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(default_config_path(&onnx)).unwrap()).unwrap();
    cfg["num_symbols"] = 100.into();
    let cfg_path = dir.path().join("bad.onnx.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = dir.path().join("v.gguf");
    let err = convert_voice(&onnx, &cfg_path, &out).unwrap_err();
    assert!(matches!(&err, VoiceError::Config { key, .. } if key == "num_symbols"), "{err}");
    assert_nothing_written(dir.path(), &out);
}

/// The real voice with one initializer's raw bytes replaced (same length, so the protobuf stays valid).
fn patched_voice(dir: &Path, onnx: &Path, name: &str, value: f32) -> PathBuf {
    let mut bytes = std::fs::read(onnx).unwrap();
    let at = {
        let model = parse_model(&bytes).unwrap();
        let raw = model.graph.initializer.iter().find(|t| t.name == name).unwrap().raw_data.unwrap();
        assert_eq!(raw.len(), 4, "{name} is not an f32 scalar");
        raw.as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    let p = dir.join("patched.onnx");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn architecture_constant_that_differs_is_an_error() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.gguf");
    for (name, value, meaning) in [
        ("/enc_p/Constant_output_0", 14.0, "embedding scale"),
        ("/enc_p/encoder/attn_layers.0/Constant_10_output_0", 9.0, "attention scale"),
        ("/enc_p/encoder/attn_layers.0/Constant_85_output_0", -1e9, "mask"),
        ("/dp/flows.7/Constant_18_output_0", -4.0, "lower tail bound"),
        ("/dp/flows.7/Constant_193_output_0", 1e-7, "float graph constant"),
    ] {
        let p = patched_voice(dir.path(), &onnx, name, value);
        let Err(err) = convert_voice(&p, &default_config_path(&onnx), &out) else { panic!("{name} = {value} was accepted") };
        assert!(matches!(&err, VoiceError::Constant { name: n, .. } if n == name), "{name}: {err}");
        assert!(err.to_string().contains(meaning), "{name}: {err}");
        assert_nothing_written(dir.path(), &out);
    }
}

/// The real voice with the first occurrence of `from` replaced by `to` (same length).
fn patched_bytes(dir: &Path, onnx: &Path, from: &[u8], to: &[u8]) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(onnx).unwrap();
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern not in the voice");
    bytes[at..at + to.len()].copy_from_slice(to);
    let p = dir.join("patched.onnx");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn conv_attributes_that_disagree_are_an_error() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.gguf");
    // AttributeProto: name (field 1), one unpacked int (field 8, key 0x40).
    for (from, to, what) in [
        (&b"\x0a\x09dilations\x40\x06"[..], &b"\x0a\x09dilations\x40\x05"[..], "length-preserving"),
        (&b"\x0a\x07strides\x40\x08"[..], &b"\x0a\x07strides\x40\x07"[..], "upsampling"),
    ] {
        let p = patched_bytes(dir.path(), &onnx, from, to);
        let Err(err) = convert_voice(&p, &default_config_path(&onnx), &out) else { panic!("{what}: accepted") };
        assert!(matches!(err, VoiceError::Architecture { .. }) && err.to_string().contains(what), "{err}");
        assert_nothing_written(dir.path(), &out);
    }
}

// ---- a tiny ONNX encoder, for inputs the real voice cannot give ----

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(n: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(n) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn f32_tensor(name: &str, dims: &[i64]) -> Vec<u8> {
    let n: i64 = dims.iter().product();
    let mut t = Vec::new();
    let mut packed = Vec::new();
    dims.iter().for_each(|&d| varint(d as u64, &mut packed));
    field(1, &packed, &mut t);
    varint(2 << 3, &mut t);
    varint(1, &mut t);
    field(8, name.as_bytes(), &mut t);
    let raw: Vec<u8> = (0..n).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    field(9, &raw, &mut t);
    t
}

fn node(name: &str, op: &str, inputs: &[&str]) -> Vec<u8> {
    let mut n = Vec::new();
    inputs.iter().for_each(|i| field(1, i.as_bytes(), &mut n));
    field(2, format!("{name}_output_0").as_bytes(), &mut n);
    field(3, name.as_bytes(), &mut n);
    field(4, op.as_bytes(), &mut n);
    n
}

/// A ModelProto with these initializers and nodes.
fn tiny_onnx(inits: &[Vec<u8>], nodes: &[Vec<u8>]) -> Vec<u8> {
    let mut g = Vec::new();
    nodes.iter().for_each(|n| field(1, n, &mut g));
    inits.iter().for_each(|t| field(5, t, &mut g));
    let mut m = Vec::new();
    varint(1 << 3, &mut m);
    varint(8, &mut m);
    field(7, &g, &mut m);
    m
}

const CONFIG: &str = r#"{"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"},
  "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8}, "phoneme_type": "espeak",
  "num_symbols": 256, "num_speakers": 1, "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}}"#;

/// Writes `onnx` bytes and a valid config into `dir`; returns the ONNX path.
fn write_voice(dir: &Path, onnx: &[u8]) -> PathBuf {
    let p = dir.join("tiny.onnx");
    std::fs::write(&p, onnx).unwrap();
    std::fs::write(default_config_path(&p), CONFIG).unwrap();
    p
}

fn convert_err(onnx: &[u8]) -> VoiceError {
    let dir = tempfile::tempdir().unwrap();
    let p = write_voice(dir.path(), onnx);
    let out = dir.path().join("out.gguf");
    let err = convert_voice(&p, &default_config_path(&p), &out).unwrap_err();
    assert!(err.to_string().contains("tiny.onnx"), "error does not name the file: {err}");
    assert_nothing_written(dir.path(), &out);
    err
}

#[test]
fn unmappable_initializer_is_an_error_naming_it() {
    // A large initializer with no VITS name and no consumer.
    let onnx = tiny_onnx(&[f32_tensor("enc_p.emb.weight", &[4, 2]), f32_tensor("mystery", &[40])], &[]);
    let err = convert_err(&onnx);
    assert!(matches!(&err, VoiceError::Unmapped { name, .. } if name == "mystery"), "{err}");
    // A renamed Conv weight whose consumer is outside the VITS modules.
    let onnx = tiny_onnx(&[f32_tensor("onnx::Conv_1", &[4, 4, 3])], &[node("/enc_q/pre/Conv", "Conv", &["x", "onnx::Conv_1"])]);
    let err = convert_err(&onnx);
    assert!(matches!(&err, VoiceError::Unmapped { name, .. } if name == "onnx::Conv_1"), "{err}");
    // Two initializers that map to one VITS name.
    let onnx = tiny_onnx(
        &[f32_tensor("dec.conv_pre.weight", &[4, 4, 7]), f32_tensor("onnx::Conv_2", &[4, 4, 7])],
        &[node("/dec/conv_pre/Conv", "Conv", &["x", "onnx::Conv_2"])],
    );
    let err = convert_err(&onnx);
    assert!(matches!(&err, VoiceError::Duplicate { vits, .. } if vits == "dec.conv_pre.weight"), "{err}");
}

#[test]
fn incomplete_voice_is_an_error() {
    // Parses and maps, but lacks the rest of the VITS layout.
    let onnx = tiny_onnx(&[f32_tensor("enc_p.emb.weight", &[256, 8])], &[node("/enc_p/emb/Gather", "Gather", &["enc_p.emb.weight", "input"])]);
    let err = convert_err(&onnx);
    assert!(matches!(err, VoiceError::Missing { .. } | VoiceError::Architecture { .. }), "{err}");
}

#[test]
fn truncated_onnx_is_an_error() {
    let onnx = tiny_onnx(&[f32_tensor("enc_p.emb.weight", &[64, 8])], &[]);
    for cut in [onnx.len() - 1, onnx.len() / 2, 3] {
        let err = convert_err(&onnx[..cut]);
        assert!(matches!(err, VoiceError::Onnx { .. }), "cut at {cut}: {err}");
    }
}

#[test]
fn a_file_that_is_not_onnx_is_an_error() {
    let gguf = std::fs::read(repo().join("tests/fixtures/voice/golden.gguf")).unwrap();
    let err = convert_err(&gguf);
    assert!(matches!(err, VoiceError::Onnx { .. }), "{err}");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let err = convert_err(&noise);
    assert!(matches!(err, VoiceError::Onnx { .. }), "{err}");
    assert!(matches!(convert_err(b""), VoiceError::Onnx { .. }));
}

#[test]
fn missing_or_invalid_config_is_an_error() {
    let onnx = tiny_onnx(&[f32_tensor("enc_p.emb.weight", &[256, 8])], &[]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.onnx");
    std::fs::write(&p, &onnx).unwrap();
    let out = dir.path().join("v.gguf");
    let cfg = default_config_path(&p);

    let err = convert_voice(&p, &cfg, &out).unwrap_err();
    assert!(matches!(err, VoiceError::Io { .. }) && err.to_string().contains("v.onnx.json"), "{err}");

    std::fs::write(&cfg, "{not json").unwrap();
    let err = convert_voice(&p, &cfg, &out).unwrap_err();
    assert!(matches!(err, VoiceError::Json { .. }), "{err}");

    let mut c: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    c["audio"].as_object_mut().unwrap().remove("sample_rate");
    std::fs::write(&cfg, c.to_string()).unwrap();
    let err = convert_voice(&p, &cfg, &out).unwrap_err();
    assert!(matches!(&err, VoiceError::Config { key, .. } if key == "audio.sample_rate"), "{err}");

    let mut c: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    c["phoneme_id_map"]["a"] = serde_json::json!(["x"]);
    std::fs::write(&cfg, c.to_string()).unwrap();
    let err = convert_voice(&p, &cfg, &out).unwrap_err();
    assert!(matches!(&err, VoiceError::Config { key, .. } if key == "phoneme_id_map"), "{err}");
    std::fs::remove_file(&cfg).unwrap();
    assert_nothing_written(dir.path(), &out);
}

#[test]
fn metadata_value_types_are_as_documented() {
    let Some(onnx) = real_voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.gguf");
    convert_voice(&onnx, &default_config_path(&onnx), &out).unwrap();
    let g = GgufFile::open(&out).unwrap();
    assert!(matches!(g.get("vits.sample_rate"), Some(Value::U32(22050))));
    assert!(matches!(g.get("vits.noise_w"), Some(Value::F32(_))));
    assert!(matches!(g.get("vits.dp.tail_bound"), Some(Value::F32(_))));
    for key in ["vits.upsample_rates", "vits.resblock_dilations", "vits.phoneme_id_map.ids", "vits.phoneme_id_map.counts"] {
        match g.get(key) {
            Some(Value::Array(_, items)) => assert!(items.iter().all(|v| matches!(v, Value::U32(_))), "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(g.tensors().iter().all(|t| t.ty == nexus_kernels::GgmlType::F32));
}
