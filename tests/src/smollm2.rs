//! SmolLM2 against llama.cpp's reference logits (`scripts/smollm2/llama_logits.py`): the
//! fixtures of `tests/fixtures/smollm2/` and the step-by-step comparison the tests share.

use nexus_runtime::model::{Logits, Model};
use nexus_runtime::tokenizer::Tokenizer;
use serde_json::Value;

use crate::{logits_fnv1a64, root};

/// A JSON fixture of `tests/fixtures/smollm2/`.
pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/smollm2").join(name)).unwrap()).unwrap()
}

/// The quantized dots match ggml's x86 kernels only on our AVX2 path; the portable one (other
/// CPUs, or NEXUS_NO_SIMD=1) follows ggml's generic C order, as llama.cpp does there.
pub fn x86_kernels() -> bool {
    let here = nexus_kernels::simd::detected().has_avx2();
    if !here {
        eprintln!("skipped: the bitwise comparison needs the AVX2 kernels (llama.cpp's reference ran on x86)");
    }
    here
}

/// The two largest logits, (index, value); llama.cpp's loop keeps the first of equal maxima.
pub fn top2(row: &[f32]) -> [(usize, f32); 2] {
    let best = (0..row.len()).fold(0, |b, v| if row[v] > row[b] { v } else { b });
    let second = (0..row.len()).filter(|&v| v != best).fold(usize::from(best == 0), |s, v| if row[v] > row[s] { v } else { s });
    [(best, row[best]), (second, row[second])]
}

/// Greedy decoding of each prompt of the logits fixture `name` (`llama_logits.py --out`): our
/// tokens of the prompt must be llama.cpp's, and at every step the whole logits row must hash
/// to llama.cpp's and pick its token. `what` names the setup in failure messages. Returns the
/// number of steps compared.
pub fn assert_steps_bitwise(model: &Model, tokenizer: &Tokenizer, name: &str, what: &str) -> usize {
    let reference = fixture(name);
    let mut steps = 0;
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = tokenizer.encode(prompt, true, true);
        let want_ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want_ids, "{what}, {prompt:?}: tokens differ from llama.cpp's");
        let mut cache = model.new_cache(512);
        let mut logits = model.forward(&ids, &mut cache, Logits::Last).unwrap();
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let token = step["token"].as_u64().unwrap() as usize;
            let [(top, top_logit), (second, second_logit)] = top2(&logits);
            assert!(
                logits_fnv1a64(&logits) == step["logits_fnv1a64"].as_str().unwrap() && top == token,
                "{what}, {prompt:?} step {i}: logits differ from llama.cpp's: ours top {top} ({top_logit}), then \
                 {second} ({second_logit}); llama.cpp's top {token} ({}), then {} ({})",
                step["top_logit"],
                step["second"],
                step["second_logit"]
            );
            steps += 1;
            logits = model.forward(&[token as u32], &mut cache, Logits::Last).unwrap();
        }
    }
    steps
}
