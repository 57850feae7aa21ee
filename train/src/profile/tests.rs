//! The profile stage on the golden tiny teacher (2 layers, n_embd 64, 4 heads, n_ff 128,
//! 512-token vocabulary; tests/fixtures/golden/README.md).

use std::path::Path;

use nexus_runtime::model::{Logits, Model, Probe};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::perturb::{self, Perturbation};
use super::*;

const TEACHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/golden/llama-spm-gqa.f32.gguf"
);

fn teacher() -> Model {
    Model::load(TEACHER).unwrap()
}

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..512)).collect()
}

fn small_config() -> ProfileConfig {
    ProfileConfig {
        n_ctx: 16,
        max_tokens: 96,
        ablation_tokens: 32,
        ..ProfileConfig::default()
    }
}

fn run_profile() -> Profile {
    let mut stages = Vec::new();
    let p = profile(
        &teacher(),
        &tokens(200, 1),
        &small_config(),
        &mut |stage, done, total| stages.push((stage.to_string(), done, total)),
    )
    .unwrap();
    for stage in ["activations", "spectra", "perturbations"] {
        let last = stages
            .iter()
            .rev()
            .find(|s| s.0 == stage)
            .unwrap_or_else(|| panic!("no {stage} progress"));
        assert_eq!(last.1, last.2, "{stage} ends complete");
    }
    p
}

#[test]
fn head_ablation_changes_the_loss_and_no_change_scores_exactly_zero() {
    let model = teacher();
    let toks = tokens(40, 2);
    let what = [
        Perturbation::None,
        Perturbation::Scale(1, 1.0),
        Perturbation::Head(0, 1),
        Perturbation::Ffn(1),
        Perturbation::Remove(0),
    ];
    let s = perturb::run(&model, &toks, 16, &what, 0, &mut |_, _| {}).unwrap();
    assert_eq!(s.tokens, 40);
    for (i, score) in s.scores[..2].iter().enumerate() {
        assert_eq!(
            score.loss - s.base_loss,
            0.0,
            "perturbation {i} changes nothing"
        );
        assert_eq!(score.kl, 0.0, "perturbation {i} changes nothing");
    }
    for score in &s.scores[2..] {
        assert_ne!(score.loss, s.base_loss);
        assert!(score.kl > 0.0);
    }
}

#[test]
fn noise_is_seeded() {
    let model = teacher();
    let toks = tokens(32, 3);
    let run = |seed| {
        perturb::run(
            &model,
            &toks,
            16,
            &[Perturbation::Noise(0, 0.1)],
            seed,
            &mut |_, _| {},
        )
        .unwrap()
        .scores[0]
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    assert!(a.kl > 0.0);
}

/// Keeps every residual-stream row the forward pass shows it.
struct Capture(Vec<Vec<f32>>);
impl Probe for Capture {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        self.0[layer].extend_from_slice(x);
    }
}

#[test]
fn profile_measures_the_teacher() {
    let p = run_profile();
    let model = teacher();
    let c = &model.config;
    assert_eq!(
        (p.n_layer, p.n_embd, p.n_head, p.n_ff),
        (c.n_layer, c.n_embd, c.n_head, c.n_ff)
    );
    assert_eq!((p.tokens, p.ablation_tokens), (96, 32));
    assert_eq!(p.teacher, "llama-spm-gqa.f32.gguf");
    assert!(p.base_loss > 0.0 && p.base_loss.is_finite());

    // The streamed statistics are those of the residual stream itself, seen in one piece.
    let toks = tokens(200, 1);
    let mut capture = Capture(vec![Vec::new(); c.n_layer]);
    let mut cache = model.new_cache(16);
    for seq in toks[..96].chunks(16) {
        cache.clear();
        model
            .forward_probed(seq, &mut cache, Logits::None, &mut capture)
            .unwrap();
    }
    let d = c.n_embd;
    // Mean and variance of channel j over the rows `keep` accepts (row index within its sequence).
    let moments = |rows: &[f32], j: usize, keep: &dyn Fn(usize) -> bool| {
        let col: Vec<f64> = rows
            .chunks_exact(d)
            .enumerate()
            .filter(|(i, _)| keep(i % 16))
            .map(|(_, r)| f64::from(r[j]))
            .collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        (mean, var)
    };
    for (l, (rows, lp)) in capture.0.iter().zip(&p.layers).enumerate() {
        let mut trace = 0.0;
        for j in 0..d {
            let (mean, var) = moments(rows, j, &|_| true);
            assert!(
                (f64::from(lp.residual.mean[j]) - mean).abs() < 1e-5 * mean.abs().max(1.0),
                "layer {l} channel {j} mean"
            );
            assert!(
                (f64::from(lp.residual.variance[j]) - var).abs() < 1e-5 * var.max(1e-3),
                "layer {l} channel {j} variance"
            );
            // The covariance leaves each sequence's first position (the sink) out.
            let (mean, var) = moments(rows, j, &|pos| pos >= 1);
            assert!(
                (f64::from(lp.mean[j]) - mean).abs() < 1e-5 * mean.abs().max(1.0),
                "layer {l} channel {j} spectral mean"
            );
            trace += var;
        }
        let total: f64 = lp.eigenvalues.iter().sum();
        assert!(
            (total - trace).abs() < 1e-6 * trace,
            "layer {l}: eigenvalues sum to the trace, {total} vs {trace}"
        );
        assert!(lp.k >= 1 && lp.k <= d && lp.basis.len() == lp.k * d);
        assert!(
            lp.sensitivity_remove > 0.0 && lp.sensitivity_scale > 0.0 && lp.sensitivity_noise > 0.0
        );
        assert!(
            lp.sensitivity_remove > lp.sensitivity_scale,
            "removing a layer changes more than halving it"
        );
        assert_eq!(lp.head_ablation.len(), c.n_head);
    }

    // Importance is the profile's measurements in pruning's shape.
    let imp = &p.importance;
    assert_eq!(
        imp.layers,
        p.layers
            .iter()
            .map(|l| l.sensitivity_remove as f32)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        imp.heads[1],
        p.layers[1]
            .head_ablation
            .iter()
            .map(|&h| h as f32)
            .collect::<Vec<_>>()
    );
    assert_eq!(imp.ffn_channels[0], p.layers[0].ffn.mean_abs);
    let embd0 = (p
        .layers
        .iter()
        .map(|l| f64::from(l.residual.mean_abs[0]))
        .sum::<f64>()
        / p.n_layer as f64) as f32;
    assert!((imp.embd_channels[0] - embd0).abs() <= 1e-6 * embd0.abs());
}

#[test]
fn bad_configuration_and_tokens_are_errors() {
    let model = teacher();
    let toks = tokens(64, 4);
    let err = |cfg: ProfileConfig, toks: &[u32]| {
        profile(&model, toks, &cfg, &mut |_, _, _| {})
            .unwrap_err()
            .to_string()
    };
    assert!(err(
        ProfileConfig {
            variance_fraction: 1.5,
            ..small_config()
        },
        &toks
    )
    .contains("variance_fraction"));
    assert!(err(
        ProfileConfig {
            n_ctx: 1,
            ..small_config()
        },
        &toks
    )
    .contains("n_ctx"));
    assert!(err(
        ProfileConfig {
            noise: -1.0,
            ..small_config()
        },
        &toks
    )
    .contains("noise"));
    assert!(err(
        ProfileConfig {
            sink_tokens: 16,
            ..small_config()
        },
        &toks
    )
    .contains("sink_tokens"));
    assert!(err(small_config(), &toks[..1]).contains("at least 2"));
    assert!(err(small_config(), &[1, 2, 600, 3]).contains("token id 600"));
}

#[test]
fn save_load_round_trip_report_and_bad_files() {
    let p = run_profile();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teacher.profile.safetensors");
    p.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), p);
    let bytes = std::fs::read(&path).unwrap();

    // Truncated anywhere, or with a damaged header, the file is refused with its name.
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let bad = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let e = Profile::load(&bad).unwrap_err();
        assert!(
            e.to_string().contains(&format!("cut{cut}.safetensors")),
            "{e}"
        );
    }
    let mut damaged = bytes.clone();
    damaged[12..20].copy_from_slice(b"@@@@@@@@");
    let bad = dir.path().join("damaged.safetensors");
    std::fs::write(&bad, &damaged).unwrap();
    assert!(matches!(
        Profile::load(&bad),
        Err(ProfileError::Format { .. })
    ));
    assert!(matches!(
        Profile::load(&dir.path().join("missing")),
        Err(ProfileError::Io { .. })
    ));

    // A tensor of the wrong shape is named.
    let mut wrong = p.clone();
    wrong.layers[1].k += 1;
    wrong.layers[1].basis.extend(vec![0.0; p.n_embd]);
    let other = dir.path().join("other.safetensors");
    wrong.save(&other).unwrap();
    let st_bytes = std::fs::read(&other).unwrap();
    let shifted = swap_basis(&st_bytes, &bytes);
    std::fs::write(&other, shifted).unwrap();
    let e = Profile::load(&other).unwrap_err().to_string();
    assert!(e.contains("layer.1.basis") && e.contains("shape"), "{e}");

    // Inconsistent in memory: refused before anything is written.
    let mut short = p.clone();
    short.layers[0].mean.pop();
    let e = short
        .save(&dir.path().join("short.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 0 mean"), "{e}");
    let mut nan = p.clone();
    nan.base_loss = f64::NAN;
    let e = nan
        .save(&dir.path().join("nan.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("base_loss"), "{e}");

    let report = dir.path().join("report");
    let files = p.write_report(&report).unwrap();
    assert_eq!(files.len(), 4);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if f.extension().is_some_and(|e| e == "png") {
            assert_png(&data, f);
        } else {
            let md = String::from_utf8(data).unwrap();
            assert!(
                md.contains("| 1 |") && md.contains(report::HEADS_PNG),
                "{md}"
            );
        }
    }
}

/// The file `with_k_plus_1` but with the metadata (k) of `original`: its `layer.1.basis` then
/// has one row more than the header says.
fn swap_basis(with_k_plus_1: &[u8], original: &[u8]) -> Vec<u8> {
    use safetensors::SafeTensors;
    let (_, meta) = SafeTensors::read_metadata(original).unwrap();
    let st = SafeTensors::deserialize(with_k_plus_1).unwrap();
    let views: Vec<_> = st.tensors();
    safetensors::serialize(views, meta.metadata()).unwrap()
}

fn assert_png(data: &[u8], path: &Path) {
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let w = u32::from_be_bytes(data[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(data[20..24].try_into().unwrap());
    assert!(w >= 300 && h >= 300, "{}: {w}×{h}", path.display());
    let mut reader = png::Decoder::new(data).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut pixels).unwrap();
    // Something was drawn: not a blank picture.
    assert!(pixels.iter().any(|&b| b != 255), "{}", path.display());
}

#[test]
fn sink_is_skipped_once_per_sequence_across_forward_batches() {
    // 600-token sequences reach the probe in batches of 512 and 88 rows.
    let model = teacher();
    let toks = tokens(700, 5);
    let cfg = ProfileConfig {
        n_ctx: 600,
        max_tokens: 700,
        ablation_tokens: 2,
        ..ProfileConfig::default()
    };
    let p = profile(&model, &toks, &cfg, &mut |_, _, _| {}).unwrap();
    let d = model.config.n_embd;
    let mut kept = vec![0f64; d];
    let mut count = 0;
    for seq in toks.chunks(600) {
        let mut capture = Capture(vec![Vec::new(); model.config.n_layer]);
        let mut cache = model.new_cache(600);
        model
            .forward_probed(seq, &mut cache, Logits::None, &mut capture)
            .unwrap();
        for row in capture.0[1].chunks_exact(d).skip(1) {
            kept.iter_mut()
                .zip(row)
                .for_each(|(k, &v)| *k += f64::from(v));
            count += 1;
        }
    }
    assert_eq!(count, 698);
    for (j, k) in kept.iter().enumerate() {
        let mean = k / count as f64;
        assert!(
            (f64::from(p.layers[1].mean[j]) - mean).abs() < 1e-5 * mean.abs().max(1.0),
            "channel {j}"
        );
    }
}
