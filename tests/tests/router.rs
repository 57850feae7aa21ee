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
