//! `chat::ChatSession` across an adapter change: the KV cache it reuses for the unchanged
//! prefix holds keys and values the old weights computed, so attaching or removing an adapter
//! between turns must make the next turn recompute the whole history.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::chat::ChatSession;
use nexus_runtime::chat_template::ChatTemplate;
use nexus_runtime::generate::GenerateParams;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::Model;
use nexus_runtime::sampling::SamplingParams;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::lora::LoraSpec;
use nexus_tests::TinyModel;

const TARGETS: [&str; 3] = ["blk.0.attn_k.weight", "blk.1.attn_v.weight", "output.weight"];

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(n),
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        stop: Vec::new(),
    }
}

/// (prompt tokens fed, answer) of each turn of `users`; before the turn at index `change_at`,
/// `change` runs on the session.
fn turns(path: &std::path::Path, users: &[&str], change_at: usize, change: &dyn Fn(&mut ChatSession)) -> Vec<(usize, String)> {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let mut model = Model::from_file(file).unwrap();
    let template = ChatTemplate::builtin("chatml", "", "").unwrap();
    let mut session = ChatSession::new(&mut model, &tokenizer, template, None, 512);
    let cancel = AtomicBool::new(false);
    let mut out = Vec::new();
    for (i, user) in users.iter().enumerate() {
        if i == change_at {
            let before = session.cached_tokens();
            change(&mut session);
            assert!(before > 0 && session.cached_tokens() == 0, "cached {before} → {}", session.cached_tokens());
        }
        let reply = session.respond(user, &greedy(6), &cancel, |_| {}).unwrap();
        out.push((reply.generation.stats.prompt_tokens, reply.generation.text));
    }
    out
}

#[test]
fn an_adapter_change_makes_the_next_turn_recompute_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let lora = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 5).write(&lora);
    let adapter = LoraAdapter::load(&lora).unwrap();
    let users = ["hello there", "and then?", "why"];

    let unchanged = turns(&base, &users, usize::MAX, &|_| {});
    // Attaching and removing again leaves the base weights: the same answers, but the turn
    // after the change feeds the whole history instead of what follows the cached prefix.
    let on_off = turns(&base, &users, 1, &|s| {
        s.apply_lora(&[(&adapter, 1.0)]).unwrap();
        s.clear_lora().unwrap();
    });
    let texts = |t: &[(usize, String)]| t.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&on_off), texts(&unchanged));
    assert!(unchanged[1].0 < on_off[1].0, "turn 2 fed {} tokens both ways: the prefix was reused", on_off[1].0);
    // The turn after sees its own answer's cache again.
    assert_eq!(unchanged[2].0, on_off[2].0);
    // Attaching alone also forgets the cache; a failed attach keeps it.
    let attached = turns(&base, &users, 1, &|s| s.apply_lora(&[(&adapter, 1.0)]).unwrap());
    assert_eq!(attached[1].0, on_off[1].0);
    let other = dir.path().join("other.lora.gguf");
    LoraSpec::for_model(&TinyModel { n_embd: 32, n_ff: 48, ..m.clone() }, &TARGETS, 4, 8.0, 6).write(&other);
    let other = LoraAdapter::load(&other).unwrap();
    let file = Arc::new(GgufFile::open(&base).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let mut model = Model::from_file(file).unwrap();
    let mut session = ChatSession::new(&mut model, &tokenizer, ChatTemplate::builtin("chatml", "", "").unwrap(), None, 512);
    session.respond("hello there", &greedy(6), &AtomicBool::new(false), |_| {}).unwrap();
    let cached = session.cached_tokens();
    assert!(session.apply_lora(&[(&other, 1.0)]).is_err());
    assert_eq!(session.cached_tokens(), cached);
    assert!(!session.model().has_lora());
    // Removing adapters forgets the cache too.
    session.apply_lora(&[(&adapter, 1.0)]).unwrap();
    session.respond("and then?", &greedy(6), &AtomicBool::new(false), |_| {}).unwrap();
    assert!(session.cached_tokens() > 0);
    session.clear_lora().unwrap();
    assert_eq!(session.cached_tokens(), 0);
    assert!(!session.model().has_lora());
}

/// `replace_lora` swaps adapters in one step (one upload on a GPU): the session then answers
/// like one that only ever had the new adapter, and a replacement that does not fit the model
/// leaves the old adapter, and the cache, as they were.
#[test]
fn replace_lora_swaps_in_one_step_and_a_bad_replacement_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let write = |name: &str, targets: &[&str], seed: u64, model: &TinyModel| {
        let p = dir.path().join(name);
        LoraSpec::for_model(model, targets, 4, 8.0, seed).write(&p);
        LoraAdapter::load(&p).unwrap()
    };
    let a = write("a.lora.gguf", &TARGETS, 5, &m);
    let b = write("b.lora.gguf", &TARGETS[1..], 9, &m);
    let bad = write("bad.lora.gguf", &TARGETS, 6, &TinyModel { n_embd: 32, n_ff: 48, ..m.clone() });
    let users = ["hello there", "and then?", "why"];

    let only_b = turns(&base, &users, 1, &|s| s.apply_lora(&[(&b, 1.0)]).unwrap());
    let a_then_b = turns(&base, &users, 1, &|s| {
        s.apply_lora(&[(&a, 1.0)]).unwrap();
        s.replace_lora(&[(&b, 1.0)]).unwrap();
    });
    assert_eq!(a_then_b, only_b);

    let only_a = turns(&base, &users, 1, &|s| s.apply_lora(&[(&a, 1.0)]).unwrap());
    let refused = turns(&base, &users, 1, &|s| {
        s.apply_lora(&[(&a, 1.0)]).unwrap();
        let err = s.replace_lora(&[(&bad, 1.0)]).unwrap_err().to_string();
        assert!(err.contains("shape mismatch"), "{err}");
        assert!(s.model().has_lora());
    });
    assert_eq!(refused, only_a);
    assert_ne!(only_a, only_b, "the two adapters answer alike, so the test sees nothing");
}
