//! `synth` writes GGUFs of real models' shapes with random weights: the file must load as the
//! model it claims to be (hyper-parameters, tensor types from llama-quantize's policy, a working
//! tokenizer), and run.

use nexus_convert::quantize::QuantType;
use nexus_convert::synth;
use nexus_kernels::GgmlType;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};
use nexus_runtime::tokenizer::Tokenizer;

#[test]
fn smollm2_shape_loads_runs_and_tokenizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smollm2-q4_0.gguf");
    let cfg = synth::config("smollm2-135m").unwrap();
    synth::synth(cfg, QuantType::from_name("q4_0").unwrap(), &path, 7).unwrap();

    let model = Model::load(&path).unwrap();
    let c = &model.config;
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.n_ff, c.n_vocab), (30, 576, 9, 3, 1536, 49152));
    let file = GgufFile::open(&path).unwrap();
    let ty = |name: &str| file.tensors().iter().find(|t| t.name == name).map(|t| t.ty);
    // llama-quantize's Q4_0 mix: the projections are Q4_0, norms stay F32.
    assert_eq!(ty("blk.0.attn_q.weight"), Some(GgmlType::Q4_0));
    assert_eq!(ty("blk.0.attn_norm.weight"), Some(GgmlType::F32));
    assert!(ty("output.weight").is_none(), "SmolLM2 ties its output head to the embedding");

    let mut cache = model.new_cache(8);
    let logits = model.forward(&[1, 2, 3], &mut cache, Logits::Last).unwrap();
    assert_eq!(logits.len(), 49152);
    assert!(logits.iter().all(|x| x.is_finite()));

    let tok = Tokenizer::from_gguf(&file).unwrap();
    let ids = tok.encode("Hello, world", false, false);
    assert!(ids.len() >= 12, "byte-level BPE with one merge: about one token per byte");
    assert_eq!(tok.decode(&ids, false), "Hello, world");
}

#[test]
fn unknown_shape_names_the_known_ones() {
    let err = synth::config("gpt-5").unwrap_err().to_string();
    assert!(err.contains("smollm2-135m") && err.contains("llama-3.1-8b"), "{err}");
}
