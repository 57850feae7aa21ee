//! The profile stage on the real teacher, SmolLM2-135M-Instruct Q4_1 (`models/fetch.sh`),
//! calibrated on tests/fixtures/eval/nexus-prose.txt. Ignored by default (minutes of CPU):
//!
//! ```sh
//! cargo test --release -p nexus-train --test profile -- --ignored --nocapture
//! ```
//!
//! `NEXUS_PROFILE_TOKENS` / `NEXUS_PROFILE_ABLATION` set the calibration and ablation token
//! counts (default 4096 / 512), `NEXUS_PROFILE_OUT` a folder to keep the profile and report in.

use std::path::PathBuf;
use std::time::Instant;

use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_train::profile::{profile, Profile, ProfileConfig};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf and minutes of CPU"]
fn profile_smollm2() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let teacher = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = Model::load(&teacher).expect("run models/fetch.sh first");
    let tokenizer = Tokenizer::from_gguf(model.file()).unwrap();
    let text = std::fs::read_to_string(root.join("tests/fixtures/eval/nexus-prose.txt")).unwrap();
    let tokens = tokenizer.encode(&text, true, false);
    let cfg = ProfileConfig {
        max_tokens: env_usize("NEXUS_PROFILE_TOKENS", 4096),
        ablation_tokens: env_usize("NEXUS_PROFILE_ABLATION", 512),
        ..ProfileConfig::default()
    };
    assert!(
        tokens.len() >= cfg.max_tokens,
        "{} tokens in the text",
        tokens.len()
    );

    let start = Instant::now();
    let p = profile(&model, &tokens, &cfg, &mut |stage, done, total| {
        if stage != "perturbations" || done % 50 == 0 || done == total {
            eprintln!(
                "[{:7.1} s] {stage} {done}/{total}",
                start.elapsed().as_secs_f64()
            );
        }
    })
    .unwrap();
    let t = p.timings;
    eprintln!(
        "profile of {} on {} + {} tokens ({} threads): activations {:.1} s, spectra {:.1} s, perturbations {:.1} s, total {:.1} s",
        p.teacher,
        p.tokens,
        p.ablation_tokens,
        rayon::current_num_threads(),
        t.activations,
        t.spectra,
        t.perturbations,
        start.elapsed().as_secs_f64()
    );
    eprintln!(
        "base loss {:.4}, k per layer {:?}",
        p.base_loss,
        p.layers.iter().map(|l| l.k).collect::<Vec<_>>()
    );

    assert_eq!(p.n_layer, 30);
    assert!(
        p.base_loss.is_finite() && p.base_loss < 5.0,
        "a trained model predicts prose: {}",
        p.base_loss
    );
    // A trained model's residual stream is low-rank: 95% of its variance in fewer than all dimensions.
    assert!(p.layers.iter().all(|l| l.k < p.n_embd));
    assert!(p.layers.iter().all(|l| l.sensitivity_remove > 0.0));

    let keep = std::env::var_os("NEXUS_PROFILE_OUT").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let out = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let file = out.join("smollm2.profile.safetensors");
    std::fs::create_dir_all(&out).unwrap();
    p.save(&file).unwrap();
    assert_eq!(Profile::load(&file).unwrap(), p);
    for f in p.write_report(&out).unwrap() {
        eprintln!("wrote {}", f.display());
    }
}
