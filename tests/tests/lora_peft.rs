//! `nexus-cli convert-lora` (nexus_convert::lora_peft): a PEFT adapter folder written here is
//! converted, loaded by the runtime and applied unmerged; its logits must equal the f64
//! reference run on the base weights plus `(alpha/r)·B·A` with lora_b's Q/K rows moved as
//! llama.cpp moves the base's. The file's keys and tensor order are llama.cpp's, bad input is
//! refused with errors naming the file, and nothing is left behind on error. The fixture tests
//! (tests/fixtures/lora_peft/, made by scripts/lora/make_peft_fixtures.py with PEFT and
//! llama.cpp's converter) are in `lora_peft_fixtures.rs`.

use std::path::{Path, PathBuf};

use nexus_convert::hf::OutType;
use nexus_convert::lora_peft::convert_peft;
use nexus_kernels::GgmlType;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::{GgufFile, Value};
use nexus_runtime::model::{Logits, Model};
use nexus_tests::lora::TOKENS;
use nexus_tests::peft::{PeftDtype, PeftSpec};
use nexus_tests::reference::forward_f64_with_deltas;
use nexus_tests::TinyModel;

/// The seven projections of both layers, and `lm_head`.
const TARGETS: [&str; 15] = [
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "blk.1.attn_q.weight",
    "blk.1.attn_k.weight",
    "blk.1.attn_v.weight",
    "blk.1.attn_output.weight",
    "blk.1.ffn_gate.weight",
    "blk.1.ffn_up.weight",
    "blk.1.ffn_down.weight",
    "output.weight",
];

/// Against the f64 reference, relative to the largest |logit| (as in `lora.rs`).
const REL_TOL: f64 = 1e-5;

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache(TOKENS.len());
    model.forward(&TOKENS, &mut cache, Logits::All).unwrap()
}

fn rel_diff(ours: &[f32], reference: &[Vec<f64>]) -> f64 {
    let (mut d, mut scale) = (0f64, 0f64);
    for (o, r) in ours.chunks(reference[0].len()).zip(reference) {
        for (a, b) in o.iter().zip(r) {
            d = d.max((*a as f64 - b).abs());
            scale = scale.max(b.abs());
        }
    }
    d / scale
}

fn base(dir: &Path, m: &TinyModel) -> PathBuf {
    let path = dir.join(format!("base-{}.gguf", m.arch));
    m.write(&path);
    path
}

fn convert(peft: &Path, base: &Path, out: &Path, outtype: OutType) -> Result<(), String> {
    convert_peft(peft, base, out, outtype, |_, _| {}).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn converted_adapter_matches_the_f64_reference_with_permuted_q_k() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2"] {
        for dtype in [PeftDtype::F32, PeftDtype::Bf16] {
            let m = TinyModel { arch, ..Default::default() };
            let base_path = base(dir.path(), &m);
            let spec = PeftSpec { dtype, ..PeftSpec::for_model(&m, &TARGETS, 4, 8.0, 21) };
            let peft = dir.path().join(format!("peft-{arch}-{dtype:?}"));
            let weights = spec.write(&peft);
            let out = dir.path().join(format!("{arch}-{dtype:?}.gguf"));
            convert(&peft, &base_path, &out, OutType::F32).unwrap();

            // llama files have permuted Q/K rows; qwen2 files keep HF's order.
            let heads = (arch == "llama").then_some((m.n_head, m.n_head_kv));
            let file = GgufFile::open(&base_path).unwrap();
            let reference = forward_f64_with_deltas(&file, &TOKENS, &weights.deltas(&spec, heads));
            let mut model = Model::load(&base_path).unwrap();
            let adapter = LoraAdapter::load(&out).unwrap();
            assert_eq!((adapter.weights.len(), adapter.alpha, adapter.arch.as_str()), (TARGETS.len(), 8.0, arch));
            model.apply_lora(&[(&adapter, 1.0)]).unwrap();
            let ours = logits(&model);
            let rel = rel_diff(&ours, &reference);
            eprintln!("{arch}, {dtype:?} PEFT weights: max |logit − f64 reference| {rel:.2e} relative");
            assert!(rel < REL_TOL, "{arch} {dtype:?}: {rel}");
            // Without the adapter, or with lora_b of q/k left in HF's row order, the logits
            // are far off: the test sees the adapter and the permutation.
            let base_rel = rel_diff(&logits(&Model::load(&base_path).unwrap()), &reference);
            assert!(base_rel > 1000.0 * REL_TOL, "{arch}: the adapter barely matters ({base_rel})");
            if arch == "llama" {
                let unpermuted = forward_f64_with_deltas(&file, &TOKENS, &weights.deltas(&spec, None));
                let wrong = rel_diff(&ours, &unpermuted);
                assert!(wrong > 100.0 * REL_TOL, "the Q/K permutation makes no difference ({wrong})");
            }
        }
    }
}

/// Rounded adapters (`--outtype f16|bf16|q8_0`) stay within `OUTTYPE_TOLERANCES` of the f64
/// reference; the fixture test holds PEFT's logits to the same bounds.
#[test]
fn rounded_outtypes_stay_within_their_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let spec = PeftSpec::for_model(&m, &TARGETS, 4, 8.0, 31);
    let peft = dir.path().join("peft");
    let weights = spec.write(&peft);
    let reference = forward_f64_with_deltas(&GgufFile::open(&base_path).unwrap(), &TOKENS, &weights.deltas(&spec, Some((m.n_head, m.n_head_kv))));
    for (name, tol) in nexus_tests::peft::OUTTYPE_TOLERANCES {
        let outtype = match name {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::Bf16,
            _ => OutType::Q8_0,
        };
        let out = dir.path().join(format!("{name}.gguf"));
        convert(&peft, &base_path, &out, outtype).unwrap();
        let mut model = Model::load(&base_path).unwrap();
        model.apply_lora(&[(&LoraAdapter::load(&out).unwrap(), 1.0)]).unwrap();
        let rel = rel_diff(&logits(&model), &reference);
        eprintln!("--outtype {name}: max |logit − f64 reference| {rel:.2e} of the largest logit (bound {tol:.0e})");
        assert!(rel < tol, "{name}: {rel}");
    }
}

#[test]
fn keys_tensor_order_and_types_are_llama_cpps() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let spec = PeftSpec::for_model(&m, &TARGETS, 4, 16.0, 5);
    let peft = dir.path().join("peft_adapter");
    spec.write(&peft);
    // PEFT's model card: llama.cpp's metadata heuristics read its front matter.
    std::fs::write(
        peft.join("README.md"),
        "---\nbase_model: base\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- base_model:adapter:base\n- lora\n- transformers\n---\n\n# Model Card for Model ID\n",
    )
    .unwrap();
    for (outtype, a_ty, b_ty) in [
        (OutType::F32, GgmlType::F32, GgmlType::F32),
        (OutType::F16, GgmlType::F16, GgmlType::F16),
        (OutType::Bf16, GgmlType::BF16, GgmlType::BF16),
        // Rank-4 rows of lora_b are not whole Q8_0 blocks: gguf-py falls back to F16.
        (OutType::Q8_0, GgmlType::Q8_0, GgmlType::F16),
    ] {
        let out = dir.path().join(format!("{a_ty}.gguf"));
        convert(&peft, &base_path, &out, outtype).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "general.type",
                "adapter.type",
                "general.name",
                "general.base_model.count",
                "general.base_model.0.name",
                "general.tags",
                "adapter.lora.alpha",
                "general.quantization_version"
            ]
        );
        assert_eq!(f.get_str("general.type").unwrap(), "adapter");
        assert_eq!(f.get_str("adapter.type").unwrap(), "lora");
        assert_eq!(f.get_str("general.name").unwrap(), "Peft_Adapter");
        assert_eq!(f.get_str("general.base_model.0.name").unwrap(), "Base");
        assert_eq!(f.get("general.base_model.count"), Some(&Value::U32(1)));
        assert_eq!(
            f.get_str_array("general.tags").unwrap(),
            ["base_model:adapter:base", "lora", "transformers", "text-generation"]
        );
        assert_eq!(f.get("adapter.lora.alpha"), Some(&Value::F32(16.0)));
        assert_eq!(f.get("general.quantization_version"), Some(&Value::U32(2)));
        // Tensors in the order of the sorted PEFT names (mlp.down < mlp.gate < … < self_attn.v,
        // lm_head last), each pair lora_a then lora_b.
        let mut peft_names: Vec<(String, &str)> =
            TARGETS.iter().map(|t| (nexus_tests::peft::peft_module(t), *t)).collect();
        peft_names.sort();
        let expected: Vec<String> =
            peft_names.iter().flat_map(|(_, t)| [format!("{t}.lora_a"), format!("{t}.lora_b")]).collect();
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, expected);
        for t in f.tensors() {
            let want = if t.name.ends_with(".lora_a") { a_ty } else { b_ty };
            assert_eq!(t.ty, want, "{}", t.name);
            assert_eq!(t.offset % 32, 0, "{} is not 32-byte aligned", t.name);
        }
    }
}

#[test]
fn f32_data_is_peft_values_with_only_q_k_lora_b_rows_moved() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let names = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"];
    let spec = PeftSpec::for_model(&m, &names, 4, 8.0, 9);
    let peft = dir.path().join("peft");
    let w = spec.write(&peft);
    let out = dir.path().join("a.gguf");
    convert(&peft, &base_path, &out, OutType::F32).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let t = f.tensor_info(name).unwrap();
        f.tensor_data(t).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    for (name, heads) in [("blk.0.attn_q.weight", Some(m.n_head)), ("blk.0.attn_k.weight", Some(m.n_head_kv)), ("blk.0.attn_v.weight", None)] {
        let (a, b) = &w.pairs[name];
        assert_eq!(&floats(&format!("{name}.lora_a")), a, "{name}: lora_a is stored as PEFT wrote it");
        let got = floats(&format!("{name}.lora_b"));
        let n_out = b.len() / 4;
        for o in 0..n_out {
            let row = heads.map_or(o, |h| nexus_tests::peft::gguf_row(o, n_out, h));
            assert_eq!(&got[row * 4..row * 4 + 4], &b[o * 4..o * 4 + 4], "{name}: HF row {o} → GGUF row {row}");
        }
    }
}

#[test]
fn rslora_is_written_as_alpha_times_sqrt_r() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let spec = PeftSpec::for_model(&m, &TARGETS[..7], 4, 8.0, 3);
    let mut config = spec.config();
    config["use_rslora"] = serde_json::json!(true);
    let peft = dir.path().join("peft");
    let w = spec.write_with_config(&peft, &config);
    let out = dir.path().join("a.gguf");
    convert(&peft, &base_path, &out, OutType::F32).unwrap();
    let adapter = LoraAdapter::load(&out).unwrap();
    // PEFT's rsLoRA scale alpha/√r = 4 must be the runtime's alpha'/r.
    assert!((adapter.effective_scale(1.0, 4) - 4.0).abs() < 1e-6, "{}", adapter.alpha);
    let plain = PeftSpec { alpha: 16.0, ..spec }; // (alpha/r) = 4: the same delta
    let reference = forward_f64_with_deltas(&GgufFile::open(&base_path).unwrap(), &TOKENS, &w.deltas(&plain, Some((m.n_head, m.n_head_kv))));
    let mut model = Model::load(&base_path).unwrap();
    model.apply_lora(&[(&adapter, 1.0)]).unwrap();
    assert!(rel_diff(&logits(&model), &reference) < REL_TOL);
}

/// Every bad input is an error naming the file and the problem, and leaves no file behind.
#[test]
fn bad_input_is_refused_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let spec = PeftSpec::for_model(&m, &TARGETS[..7], 4, 8.0, 1);
    let out = dir.path().join("out").join("a.gguf");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut n = 0;
    let mut case = |what: &str, setup: &dyn Fn(&Path), base: &Path, expect: &[&str]| {
        n += 1;
        let peft = dir.path().join(format!("case{n}"));
        setup(&peft);
        let e = convert(&peft, base, &out, OutType::F32).expect_err(what);
        for s in expect {
            assert!(e.contains(s), "{what}: {e:?} lacks {s:?}");
        }
        assert!(!e.contains("panicked"), "{what}: {e}");
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
        eprintln!("{what}: {e}");
    };
    let with_config = |edit: fn(&mut serde_json::Value)| {
        let spec = &spec;
        move |p: &Path| {
            let mut c = spec.config();
            edit(&mut c);
            spec.write_with_config(p, &c);
        }
    };
    case("no folder", &|_| {}, &base_path, &["case1", "no such directory"]);
    case("no config", &|p| {
        spec.write(p);
        std::fs::remove_file(p.join("adapter_config.json")).unwrap();
    }, &base_path, &["adapter_config.json", "missing"]);
    case("no weights", &|p| {
        spec.write(p);
        std::fs::remove_file(p.join("adapter_model.safetensors")).unwrap();
    }, &base_path, &["adapter_model.safetensors", "missing"]);
    case("pickle only", &|p| {
        spec.write(p);
        std::fs::rename(p.join("adapter_model.safetensors"), p.join("adapter_model.bin")).unwrap();
    }, &base_path, &["adapter_model.bin", "safe_serialization"]);
    case("DoRA", &with_config(|c| c["use_dora"] = serde_json::json!(true)), &base_path, &["adapter_config.json", "DoRA"]);
    case("modules_to_save", &with_config(|c| c["modules_to_save"] = serde_json::json!(["lm_head"])), &base_path, &["modules_to_save"]);
    case("bias", &with_config(|c| c["bias"] = serde_json::json!("all")), &base_path, &["adapter_config.json", "bias"]);
    case("alpha_pattern", &with_config(|c| c["alpha_pattern"] = serde_json::json!({"q_proj": 3})), &base_path, &["alpha_pattern"]);
    case("fan_in_fan_out", &with_config(|c| c["fan_in_fan_out"] = serde_json::json!(true)), &base_path, &["fan_in_fan_out"]);
    case("rank differs from r", &with_config(|c| c["r"] = serde_json::json!(8)), &base_path, &["adapter_model.safetensors", "rank 4", "r = 8"]);
    case("not a target", &with_config(|c| c["target_modules"] = serde_json::json!(["q_proj"])), &base_path, &["target_modules", "down_proj"]);
    case("broken JSON", &|p| {
        spec.write(p);
        std::fs::write(p.join("adapter_config.json"), "{\"r\": 4,").unwrap();
    }, &base_path, &["adapter_config.json", "invalid JSON"]);
    case("broken safetensors", &|p| {
        spec.write(p);
        std::fs::write(p.join("adapter_model.safetensors"), [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    }, &base_path, &["adapter_model.safetensors", "safetensors"]);
    case("lora_A without lora_B", &|p| {
        let one = PeftSpec::for_model(&m, &["blk.0.attn_q.weight"], 4, 8.0, 1);
        one.write(p);
        let st = std::fs::read(p.join("adapter_model.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&st[8..8 + header_len]).unwrap().replace("lora_B", "lora_C");
        let mut patched = (header_len as u64).to_le_bytes().to_vec();
        patched.extend_from_slice(header.as_bytes());
        patched.extend_from_slice(&st[8 + header_len..]);
        std::fs::write(p.join("adapter_model.safetensors"), patched).unwrap();
    }, &base_path, &["lora_C", "not a lora_A or lora_B"]);

    // Against another base: a module it lacks, a shape it does not have, an adapter as base.
    let small = TinyModel { n_layer: 1, ..Default::default() };
    let small_path = dir.path().join("small.gguf");
    small.write(&small_path);
    case("module the base lacks", &|p| {
        PeftSpec::for_model(&m, &["blk.1.attn_v.weight"], 4, 8.0, 1).write(p);
    }, &small_path, &["small.gguf", "blk.1.attn_v.weight", "has no tensor"]);
    let narrow = TinyModel { n_ff: 64, ..Default::default() };
    let narrow_path = dir.path().join("narrow.gguf");
    narrow.write(&narrow_path);
    case("shape mismatch", &|p| {
        spec.write(p);
    }, &narrow_path, &["narrow.gguf", "shape mismatch"]);
    let tied = TinyModel { tied: true, ..Default::default() };
    let tied_path = dir.path().join("tied.gguf");
    tied.write(&tied_path);
    case("lm_head on a tied base", &|p| {
        PeftSpec::for_model(&m, &["output.weight"], 4, 8.0, 1).write(p);
    }, &tied_path, &["tied.gguf", "output.weight"]);
    let lora_gguf = dir.path().join("an-adapter.gguf");
    nexus_tests::lora::LoraSpec::for_model(&m, &["blk.0.attn_q.weight"], 4, 8.0, 1).write(&lora_gguf);
    case("an adapter as base", &|p| {
        spec.write(p);
    }, &lora_gguf, &["an-adapter.gguf", "not a base model"]);

    // The output may not replace an input.
    let peft = dir.path().join("same");
    spec.write(&peft);
    let e = convert(&peft, &base_path, &base_path, OutType::F32).unwrap_err();
    assert!(e.contains("would replace"), "{e}");
    assert!(Model::load(&base_path).is_ok());
}

/// Thousands of corrupted copies of a valid adapter folder (bytes of the config, the model card
/// and the safetensors file flipped, cut short or extended): each converts or is refused with an
/// error; none panics, and a refused one leaves no file.
#[test]
fn corrupted_inputs_never_panic() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let spec = PeftSpec { rank: 2, ..PeftSpec::for_model(&m, &["blk.0.attn_q.weight", "blk.1.attn_k.weight", "output.weight"], 2, 4.0, 2) };
    let good = dir.path().join("good");
    spec.write(&good);
    let card = b"---\nbase_model: meta-llama/Llama-2-7b-hf\nlicense: mit\ntags:\n- lora\nlanguage: [en, \"de\"]\nmodel_name: x-7B-v1.2-chat\n---\n".to_vec();
    let files: [(&str, Vec<u8>); 3] = [
        ("adapter_config.json", std::fs::read(good.join("adapter_config.json")).unwrap()),
        ("README.md", card),
        ("adapter_model.safetensors", std::fs::read(good.join("adapter_model.safetensors")).unwrap()),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (mut ok, mut refused) = (0, 0);
    for k in 0..1000 {
        let peft = dir.path().join(format!("m{k}"));
        std::fs::create_dir_all(&peft).unwrap();
        let victim = rng.gen_range(0..3);
        for (i, (name, bytes)) in files.iter().enumerate() {
            let mut b = bytes.clone();
            if i == victim {
                match rng.gen_range(0..4) {
                    0 => b.truncate(rng.gen_range(0..b.len())),
                    1 => b.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
                    _ => {
                        // The JSON and YAML text and the safetensors header are where the parsing is:
                        // aim most flips at the first kilobyte.
                        let span = if rng.gen_bool(0.8) { b.len().min(1024) } else { b.len() };
                        for _ in 0..rng.gen_range(1..8) {
                            let at = rng.gen_range(0..span);
                            b[at] = match rng.gen_range(0..3) {
                                0 => rng.gen(),
                                1 => b"{}[]:,\"-\n 0129eE.#'/"[rng.gen_range(0..20)],
                                _ => b[at] ^ (1 << rng.gen_range(0..8)),
                            };
                        }
                    }
                }
            }
            std::fs::write(peft.join(name), b).unwrap();
        }
        let out = out_dir.join(format!("m{k}.gguf"));
        match convert_peft(&peft, &base_path, &out, OutType::Q8_0, |_, _| {}) {
            Ok(_) => {
                ok += 1;
                LoraAdapter::load(&out).unwrap_or_else(|e| panic!("case {k}: converted but does not load: {e}"));
            }
            Err(_) => {
                refused += 1;
                assert!(!out.exists(), "case {k}: refused but wrote {}", out.display());
            }
        }
    }
    let left = std::fs::read_dir(&out_dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count();
    assert_eq!(left, 0, "temporary files left behind");
    eprintln!("{ok} converted, {refused} refused");
    assert!(ok > 50 && refused > 200, "{ok} converted, {refused} refused: the mutations miss");
}

/// A finite value beyond F16's range converts to F32 but is refused for F16 and Q8_0 (whose
/// block scale is F16), naming the tensor, instead of writing an infinity the runtime rejects.
#[test]
fn values_too_large_for_the_outtype_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base_path = base(dir.path(), &m);
    let peft = dir.path().join("peft");
    PeftSpec::for_model(&m, &["blk.0.attn_v.weight"], 4, 8.0, 4).write(&peft);
    let st_path = peft.join("adapter_model.safetensors");
    let mut st = std::fs::read(&st_path).unwrap();
    let data_start = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    st[data_start..data_start + 4].copy_from_slice(&1e10f32.to_le_bytes());
    std::fs::write(&st_path, st).unwrap();
    let out = dir.path().join("a.gguf");
    convert(&peft, &base_path, &out, OutType::F32).unwrap();
    assert!(LoraAdapter::load(&out).is_ok());
    for outtype in [OutType::F16, OutType::Q8_0] {
        let out = dir.path().join("b.gguf");
        let e = convert(&peft, &base_path, &out, outtype).unwrap_err();
        assert!(e.contains("adapter_model.safetensors") && e.contains("too large"), "{e}");
        assert!(!out.exists());
    }
}
