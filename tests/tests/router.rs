//! The router's input: the pooled hidden state that `router::pooled_hidden` captures inside
//! the forward pass (which stops after the chosen layer) equals a recomputation from a full
//! forward pass of every layer with a probe that records the residual stream; the backbone
//! identity a router stores tells models apart.

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model, Probe};
use nexus_runtime::router::{backbone_hash, pooled_hidden, MAX_ROUTE_TOKENS};
use nexus_tests::TinyModel;

/// Keeps every layer's residual rows of a whole forward pass.
struct Record(Vec<Vec<f32>>);

impl Probe for Record {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        self.0[layer].extend_from_slice(x);
    }
}

fn model(m: &TinyModel, dir: &std::path::Path, name: &str) -> Model {
    let path = dir.join(name);
    m.write(&path);
    Model::load(&path).unwrap()
}

#[test]
fn pooled_hidden_equals_the_mean_of_a_full_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_layer: 3, n_ctx: 1024, ..Default::default() };
    let model = model(&m, dir.path(), "base.gguf");
    let tokens: Vec<u32> = (0..23).map(|i| (i * 37 + 11) % 300).collect();
    let d = m.n_embd;
    let mut rec = Record(vec![Vec::new(); m.n_layer]);
    let mut cache = model.new_cache(64);
    let logits = model.forward_probed(&tokens, &mut cache, Logits::Last, &mut rec).unwrap();
    assert_eq!(logits.len(), m.n_vocab, "the full pass ran to the head");
    for layer in 0..m.n_layer {
        let rows = &rec.0[layer];
        assert_eq!(rows.len(), tokens.len() * d);
        // Mean over every position but the first (the attention sink), in f64.
        let expect: Vec<f32> = (0..d)
            .map(|j| ((1..tokens.len()).map(|t| rows[t * d + j] as f64).sum::<f64>() / (tokens.len() - 1) as f64) as f32)
            .collect();
        let got = pooled_hidden(&model, &tokens, layer).unwrap();
        assert_eq!(got, expect, "layer {layer}");
    }
    // One token: its own row.
    let mut one = Record(vec![Vec::new(); m.n_layer]);
    model.forward_probed(&tokens[..1], &mut model.new_cache(4), Logits::None, &mut one).unwrap();
    assert_eq!(pooled_hidden(&model, &tokens[..1], 1).unwrap(), one.0[1]);
    // A long prompt is pooled over its first MAX_ROUTE_TOKENS tokens.
    let long: Vec<u32> = (0..MAX_ROUTE_TOKENS as u32 + 40).map(|i| (i * 7) % 300).collect();
    assert_eq!(pooled_hidden(&model, &long, 0).unwrap(), pooled_hidden(&model, &long[..MAX_ROUTE_TOKENS], 0).unwrap());
    // A layer out of range is an error naming the file, not a panic.
    let e = pooled_hidden(&model, &tokens, 3).unwrap_err().to_string();
    assert!(e.contains("base.gguf") && e.contains("layer 3 is out of range"), "{e}");
}

#[test]
fn backbone_hash_tells_models_apart() {
    let dir = tempfile::tempdir().unwrap();
    let hash = |m: &TinyModel, name: &str| {
        let path = dir.path().join(name);
        m.write(&path);
        backbone_hash(&GgufFile::open(&path).unwrap())
    };
    let base = TinyModel::default();
    let a = hash(&base, "a.gguf");
    assert_eq!(a, hash(&base, "again.gguf"), "the same model gives the same identity");
    assert_ne!(a, hash(&TinyModel { seed: 8, ..Default::default() }, "seed.gguf"), "other weights");
    assert_ne!(a, hash(&TinyModel { n_embd: 32, ..Default::default() }, "narrow.gguf"), "other width");
}

/// The library's `generate` with a capability: a named one runs its adapter (the same tokens as
/// attaching it by hand), `none` and no router run the base, an unknown name is an error.
#[test]
fn generate_with_a_capability() {
    use nexus_runtime::adapter::LoraAdapter;
    use nexus_runtime::generate::GenerateParams;
    use nexus_runtime::router::{generate, Capabilities, Source};
    use nexus_runtime::sampling::SamplingParams;
    use nexus_runtime::tokenizer::Tokenizer;
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 256, ..Default::default() };
    let mut model = model(&m, dir.path(), "base.gguf");
    let lora = dir.path().join("code.lora.gguf");
    nexus_tests::lora::LoraSpec::for_model(&m, &["blk.0.attn_q.weight", "output.weight"], 4, 8.0, 41).write(&lora);
    let tokenizer = Tokenizer::from_gguf(model.file()).unwrap();
    let adapter = LoraAdapter::load(&lora).unwrap();
    let caps = Capabilities::new(&model, None, vec![("code".into(), LoraAdapter::load(&lora).unwrap())]).unwrap();
    let params = GenerateParams { max_tokens: Some(8), sampling: SamplingParams::greedy(), stop: Vec::new() };
    let cancel = AtomicBool::new(false);
    let run = |model: &mut Model, cap: Option<&str>| generate(model, &caps, &tokenizer, "abcab", cap, 64, &params, &cancel, |_| {});

    let (choice, with_code) = run(&mut model, Some("code")).unwrap();
    assert_eq!((choice.capability.as_deref(), choice.source), (Some("code"), Source::Explicit));
    let (choice, base) = run(&mut model, Some("none")).unwrap();
    assert_eq!((choice.capability, choice.source), (None, Source::Explicit));
    let (choice, no_router) = run(&mut model, None).unwrap();
    assert_eq!((choice.capability, choice.source), (None, Source::NoRouter));
    assert_eq!(base.tokens, no_router.tokens);
    assert!(!model.has_lora(), "the base choice leaves no adapter attached");
    let Err(e) = run(&mut model, Some("poetry")) else { panic!("an unknown capability ran") };
    let e = e.to_string();
    assert!(e.contains("unknown capability \"poetry\"") && e.contains("code"), "{e}");

    // By hand: the adapter attached, the same prompt, the same greedy tokens.
    model.apply_lora(&[(&adapter, 1.0)]).unwrap();
    let prompt = tokenizer.encode("abcab", true, true);
    let mut cache = model.new_cache(64);
    let mut dec = nexus_runtime::decoder::CpuDecoder { model: &model, cache: &mut cache };
    let by_hand = nexus_runtime::generate::generate(&mut dec, &tokenizer, &prompt, &params, &cancel, |_| {}).unwrap();
    assert_eq!(with_code.tokens, by_hand.tokens);
    assert_ne!(with_code.tokens, base.tokens, "the adapter changes the text, so the comparison means something");
}
