//! SmolLM2's byte-level BPE vocabulary against llama.cpp's `llama-tokenize` and HF
//! `tokenizers` (built from the same vocabulary and merges) on the shared tokenizer corpus
//! (fixture made by scripts/smollm2/tokenize_corpus.py): ids must equal both.

use nexus_tests::{root, smollm2_path};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::tokenizer::Tokenizer;

#[test]
fn corpus_ids_match_llama_tokenize_and_hf_tokenizers() {
    let Some(path) = smollm2_path() else { return };
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/smollm2/corpus-ids.json")).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 100);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids = |key: &str| -> Vec<u32> { case[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
        let got = tokenizer.encode(text, false, case["parse_special"].as_bool().unwrap());
        for reference in ["llama_cpp", "hf"] {
            let want = ids(reference);
            if got != want {
                failures.push(format!("{text:?}: ours {got:?}, {reference} {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} texts differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
