//! The real default model, SmolLM2-135M-Instruct Q4_1, against llama.cpp's greedy text.
//!
//! Exact greedy equality is not a sound bar for this model: flipping one activation value by one
//! Q8 quantum in a few of the ~200 mat-vecs per token (a tie rounded the other way) moves the top
//! logits by up to ~0.4 after 30 layers, so two correct implementations part ways at close
//! calls. Instead the test follows llama.cpp's text token by token (teacher forcing) and asks
//! that llama.cpp's token be our argmax, or within `MAX_GAP` of our top logit, at every step,
//! and our argmax at nearly every step.

use std::sync::Arc;

use nexus_tests::{root, smollm2_path};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};
use nexus_runtime::tokenizer::Tokenizer;

/// Largest logit gap allowed where our argmax differs from llama.cpp's token (measured: 0.44).
const MAX_GAP: f32 = 0.6;
/// Share of steps where llama.cpp's token must be our argmax (measured: 95.4%, 226 of 237).
const MIN_AGREEMENT: f64 = 0.92;

#[test]
fn follows_llama_cpp_greedy_text() {
    let Some(path) = smollm2_path() else { return };
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::from_file(file).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/smollm2/greedy.json")).unwrap()).unwrap();
    let (mut steps, mut agree) = (0usize, 0usize);
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let mut want = tokenizer.encode(case["llama_cpp_text"].as_str().unwrap(), false, false);
        if case["ended_with_eog"].as_bool().unwrap() {
            want.extend(tokenizer.eos());
        }
        let ids = tokenizer.encode(prompt, true, true);
        let mut cache = model.new_cache(512);
        let mut logits = model.forward(&ids, &mut cache, Logits::Last).unwrap();
        for (step, &w) in want.iter().enumerate() {
            let top = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
            let gap = logits[top] - logits[w as usize];
            steps += 1;
            if top as u32 == w {
                agree += 1;
            } else {
                eprintln!("{prompt:?} step {step}: ours {:?}, llama.cpp {:?}, gap {gap:.4}", tokenizer.decode(&[top as u32], false), tokenizer.decode(&[w], false));
                assert!(gap < MAX_GAP, "{prompt:?} step {step}: llama.cpp's token is {gap} below our top logit");
            }
            logits = model.forward(&[w], &mut cache, Logits::Last).unwrap();
        }
    }
    let share = agree as f64 / steps as f64;
    eprintln!("llama.cpp's token was our argmax at {agree} of {steps} steps ({:.1}%)", share * 100.0);
    assert!(share >= MIN_AGREEMENT, "agreement {share} below {MIN_AGREEMENT}");
}
