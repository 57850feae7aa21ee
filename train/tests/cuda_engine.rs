//! The CUDA training engine against the CPU engine (itself checked against PyTorch autograd in
//! grads.rs) on random inputs of odd sizes: activations, loss terms, every gradient, the norm
//! and an AdamW step, and a few steps of training. Runs only with `--features cuda`; without a
//! GPU it prints why and passes, unless NEXUS_REQUIRE_CUDA=1 (the GPU machine's script sets it).
#![cfg(feature = "cuda")]

use nexus_kernels::cuda::GemmPrecision;
use nexus_train::cuda::CudaStudent;
use nexus_train::engine::head_loss::{head_loss, LossParts, LossWeights, TeacherHead, IGNORE};
use nexus_train::optim::{adamw_params, clip_grad_norm, AdamW};
use nexus_train::student::{self, Params, StudentConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn student(cfg: &StudentConfig, precision: GemmPrecision, p: &Params) -> Option<CudaStudent> {
    match CudaStudent::new(0, cfg, p, precision) {
        Ok(s) => Some(s),
        Err(e) if std::env::var_os("NEXUS_REQUIRE_CUDA").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("NEXUS_REQUIRE_CUDA is set but the GPU cannot be used: {e}"),
    }
}

/// Grouped heads with more than one KV head: 6 query heads on 2, so a wrong head-to-group map
/// (or a wrong sum over a group in the backward) shows.
fn config_groups() -> StudentConfig {
    StudentConfig { n_head: 6, n_head_kv: 2, head_dim: 14, ..config(false) }
}

/// Odd sizes everywhere: no dimension a multiple of a warp or a tile; GQA with 3 heads on 1.
fn config(tied: bool) -> StudentConfig {
    StudentConfig {
        n_vocab: 301,
        n_embd: 72,
        n_layer: 2,
        n_head: 3,
        n_head_kv: 1,
        head_dim: 24,
        n_ff: 100,
        rms_eps: 1e-5,
        rope_base: 10_000.0,
        n_ctx: 64,
        tied,
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.gen::<f32>() - 0.5) * 2.0 * scale).collect()
}

fn random_params(cfg: &StudentConfig, rng: &mut ChaCha8Rng) -> Params {
    let mut p = Params::zeros(cfg);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    for (t, name) in p.tensors_mut().into_iter().zip(names) {
        let n = t.len();
        *t = if name.ends_with("_norm.weight") {
            random(rng, n, 0.2).into_iter().map(|x| 1.0 + x).collect()
        } else {
            random(rng, n, 0.15)
        };
    }
    p
}

/// max |a − b| over max |b|: an error relative to the tensor's scale (elements near zero do
/// not blow it up).
fn scaled_err(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f64, |m, &x| m.max(x.abs() as f64)).max(1e-30);
    ours.iter().zip(theirs).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

fn assert_params_close(what: &str, ours: &Params, theirs: &Params, tol: f64) {
    for ((name, a), (_, b)) in ours.named().into_iter().zip(theirs.named()) {
        let e = scaled_err(a, b);
        assert!(e <= tol, "{what} {name}: scaled error {e:.3e} above {tol:.0e}");
    }
}

struct Case {
    cfg: StudentConfig,
    params: Params,
    tokens: Vec<u32>,
    n_seq: usize,
    targets: Vec<u32>,
    t_hidden: Vec<f32>,
    t_head: Vec<f32>,
    t_embd: usize,
    d_res: Vec<(usize, Vec<f32>)>,
    weights: LossWeights,
}

fn case(tied: bool, seed: u64) -> Case {
    case_of(config(tied), seed)
}

fn case_of(cfg: StudentConfig, seed: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = random_params(&cfg, &mut rng);
    let (n_seq, seq_len, t_embd) = (3, 37, 40);
    let n = n_seq * seq_len;
    let tokens: Vec<u32> = (0..n).map(|_| rng.gen_range(0..cfg.n_vocab as u32)).collect();
    let targets = (0..n).map(|i| if i % 7 == 3 { IGNORE } else { rng.gen_range(0..cfg.n_vocab as u32) }).collect();
    Case {
        t_hidden: random(&mut rng, n * t_embd, 1.0),
        t_head: random(&mut rng, cfg.n_vocab * t_embd, 0.5),
        d_res: vec![(0, random(&mut rng, n * cfg.n_embd, 1e-3))],
        weights: LossWeights { ce: 0.7, kl: 0.5, temperature: 2.0 },
        cfg,
        params,
        tokens,
        n_seq,
        targets,
        t_embd,
    }
}

/// The CPU engine's step: loss parts, the final hidden states, layer 0's output, gradients.
fn cpu_step(c: &Case, chunk: usize, grad_scale: f32) -> (LossParts, Vec<f32>, Vec<f32>, Params) {
    let acts = student::forward(&c.cfg, &c.params, &c.tokens, c.n_seq).unwrap();
    let mut grads = Params::zeros(&c.cfg);
    let mut d_hidden = vec![0f32; acts.hidden().len()];
    let teacher = TeacherHead { hidden: &c.t_hidden, weight: &c.t_head, n_embd: c.t_embd, rows: None };
    let head = c.params.output.as_deref().unwrap_or(&c.params.embed);
    let d_head = match grads.output.as_mut() {
        Some(o) => o,
        None => &mut grads.embed,
    };
    let parts = head_loss(acts.hidden(), head, c.cfg.n_embd, &c.targets, Some(teacher), &c.weights, chunk, grad_scale, &mut d_hidden, d_head).unwrap();
    student::backward(&c.cfg, &c.params, &acts, &d_hidden, &c.d_res, &mut grads).unwrap();
    (parts, acts.hidden().to_vec(), acts.residual(0).to_vec(), grads)
}

fn gpu_step(s: &CudaStudent, c: &Case, chunk: usize, grad_scale: f32) -> (LossParts, Vec<f32>, Vec<f32>, Params) {
    s.zero_grads().unwrap();
    let acts = s.forward(&c.tokens, c.n_seq).unwrap();
    let t_hidden = s.gpu().upload(&c.t_hidden).unwrap();
    let (parts, d_hidden) = s.head_loss(&acts, &c.targets, Some(&t_hidden), &c.weights, chunk, grad_scale).unwrap();
    let d_res: Vec<_> = c.d_res.iter().map(|(l, d)| (*l, s.gpu().upload(d).unwrap())).collect();
    s.backward(&acts, &d_hidden, &d_res).unwrap();
    (parts, s.hidden(&acts).unwrap(), s.residual(&acts, 0).unwrap(), s.grads().unwrap())
}

/// `gemm_attention`: attention through batched GEMMs (the default) or the warp-per-row kernels.
fn check_against_cpu(tied: bool, precision: GemmPrecision, gemm_attention: bool, tol: f64) {
    check_case(case(tied, 7 + tied as u64), precision, gemm_attention, tol);
}

fn check_case(c: Case, precision: GemmPrecision, gemm_attention: bool, tol: f64) {
    let tied = c.cfg.tied;
    let Some(mut s) = student(&c.cfg, precision, &c.params) else { return };
    s.set_gemm_attention(gemm_attention);
    s.set_teacher_head(&c.t_head, c.t_embd).unwrap();
    // A chunk that does not divide the vocabulary (301 = 4·64 + 45).
    let (cpu, gpu) = (cpu_step(&c, 64, 0.5), gpu_step(&s, &c, 64, 0.5));
    let (cp, gp) = (cpu.0, gpu.0);
    eprintln!("{precision:?} tied={tied} gemm_attention={gemm_attention}: cpu {cp:?}\n  gpu {gp:?}");
    assert_eq!(gp.n, cp.n);
    for (what, a, b) in [("ce", gp.ce, cp.ce), ("kl", gp.kl, cp.kl), ("loss", gp.loss, cp.loss)] {
        assert!((a - b).abs() <= tol * b.abs().max(1e-3), "{what}: gpu {a} cpu {b}");
    }
    if precision == GemmPrecision::F32 {
        assert_eq!(gp.agree, cp.agree, "top-1 agreement with the teacher");
    }
    for (what, a, b) in [("hidden", &gpu.1, &cpu.1), ("layer 0 output", &gpu.2, &cpu.2)] {
        let e = scaled_err(a, b);
        assert!(e <= tol, "{what}: scaled error {e:.3e}");
    }
    assert_params_close("gradient", &gpu.3, &cpu.3, tol * 10.0);

    if precision != GemmPrecision::F32 {
        // bf16 products flip the sign of gradients near zero: the optimizer is compared in f32.
        return;
    }
    // Clipping and one AdamW step from the same gradients.
    let mut cpu_grads = cpu.3;
    let max_norm = 0.5 * nexus_train::optim::global_norm(&cpu_grads.named().iter().map(|(_, t)| *t).collect::<Vec<_>>());
    let cpu_norm = clip_grad_norm(&mut cpu_grads.tensors_mut(), max_norm);
    let gpu_norm = s.clip_grad_norm(max_norm).unwrap();
    assert!((gpu_norm - cpu_norm).abs() <= tol * 10.0 * cpu_norm, "grad norm: gpu {gpu_norm} cpu {cpu_norm}");
    let opt = AdamW { lr: 1e-2, ..AdamW::default() };
    let mut cpu_p = c.params.clone();
    let (mut m, mut v) = (Params::zeros(&c.cfg), Params::zeros(&c.cfg));
    adamw_params(&mut cpu_p, &mut cpu_grads, &mut m, &mut v, 1, opt.lr, &opt);
    s.adamw_step(1, opt.lr, &opt).unwrap();
    // The first Adam step moves every weight by about lr·sign(g): compare the moves.
    let gpu_p = s.params().unwrap();
    let moves = |p: &Params| -> Vec<f32> {
        p.named().iter().zip(c.params.named()).flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>()).collect()
    };
    let (gm, cm) = (moves(&gpu_p), moves(&cpu_p));
    let differ = gm.iter().zip(&cm).filter(|(a, b)| (*a - *b).abs() > 1e-4 * opt.lr).count();
    // A gradient within rounding of zero may take either sign's step; allow a few such weights.
    assert!(differ <= gm.len() / 500, "{differ} of {} weights moved differently after one AdamW step", gm.len());
}

#[test]
fn f32_step_matches_the_cpu_engine_tied() {
    check_against_cpu(true, GemmPrecision::F32, true, 2e-5);
}

#[test]
fn f32_step_matches_the_cpu_engine_untied() {
    check_against_cpu(false, GemmPrecision::F32, true, 2e-5);
}

#[test]
fn f32_step_with_the_attention_kernels_matches_the_cpu_engine() {
    check_against_cpu(true, GemmPrecision::F32, false, 2e-5);
}

#[test]
fn f32_step_with_two_kv_groups_matches_the_cpu_engine() {
    for gemm_attention in [true, false] {
        check_case(case_of(config_groups(), 13), GemmPrecision::F32, gemm_attention, 2e-5);
    }
}

#[test]
fn bf16_step_stays_close_to_the_cpu_engine() {
    check_against_cpu(true, GemmPrecision::Bf16, true, 2e-2);
}

#[test]
fn bf16_step_with_the_attention_kernels_stays_close_to_the_cpu_engine() {
    check_against_cpu(true, GemmPrecision::Bf16, false, 2e-2);
}

/// Five steps of training on both engines give the same loss curve.
#[test]
fn training_curves_match() {
    let c = case(true, 11);
    let Some(mut s) = student(&c.cfg, GemmPrecision::F32, &c.params) else { return };
    s.set_teacher_head(&c.t_head, c.t_embd).unwrap();
    let opt = AdamW { lr: 3e-3, ..AdamW::default() };
    let mut cpu = Case { params: c.params.clone(), ..case(true, 11) };
    let (mut m, mut v) = (Params::zeros(&c.cfg), Params::zeros(&c.cfg));
    for step in 1..=5 {
        let (cp, _, _, mut grads) = cpu_step(&cpu, 128, 1.0);
        let cn = clip_grad_norm(&mut grads.tensors_mut(), 1.0);
        adamw_params(&mut cpu.params, &mut grads, &mut m, &mut v, step, opt.lr, &opt);
        let (gp, ..) = gpu_step(&s, &c, 128, 1.0);
        let gn = s.clip_grad_norm(1.0).unwrap();
        s.adamw_step(step, opt.lr, &opt).unwrap();
        eprintln!("step {step}: loss cpu {:.6} gpu {:.6}, norm cpu {cn:.6} gpu {gn:.6}", cp.loss, gp.loss);
        assert!((gp.loss - cp.loss).abs() <= 1e-4 * cp.loss.abs(), "step {step}: loss gpu {} cpu {}", gp.loss, cp.loss);
    }
    assert_params_close("weights after 5 steps", &s.params().unwrap(), &cpu.params, 1e-3);
}

/// The anchoring term on the device against `Anchor::loss_grad`: loss, the gradient into the
/// student's stream and the map's gradient, with the attention-sink rows left out, widths and
/// a subspace size that are not multiples of a warp, and a map gradient that accumulates.
fn check_anchor(precision: GemmPrecision, tol: f64) {
    use nexus_train::anchor::{sink_mask, Anchor, MapInit};
    use nexus_train::cuda::AnchorRows;
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let cfg = config(true);
    let Some(s) = student(&cfg, precision, &random_params(&cfg, &mut rng)) else { return };
    let (n_seq, seq_len, dt, k) = (3, 37, 40, 13);
    let (ds, n) = (cfg.n_embd, n_seq * seq_len);
    let eigenvalues: Vec<f64> = (0..dt).map(|i| 4.0 / (1.0 + i as f64)).collect();
    let mut a = Anchor::new(1, 5, &random(&mut rng, k * dt, 0.3), k, &eigenvalues, ds, MapInit::Random(9)).unwrap();
    a.map = random(&mut rng, dt * ds, 0.2);
    let h_s = random(&mut rng, n * ds, 1.0);
    let h_t = random(&mut rng, n * dt, 1.0);
    let weight = 0.37;
    let g = s.gpu();
    let (hs, ht) = (g.upload(&h_s).unwrap(), g.upload(&h_t).unwrap());
    // The gradients land on what d_h already holds: compared as increments, since the
    // anchor's share is small next to a random start.
    let d_h0 = random(&mut rng, n * ds, 1e-3);
    let increment = |after: &[f32]| -> Vec<f32> { after.iter().zip(&d_h0).map(|(a, b)| a - b).collect() };

    // Two sink counts: the reference run's, and all rows of each sequence but its last.
    for sink in [2, seq_len - 1] {
        let mask = sink_mask(n_seq, seq_len, sink);
        let (mut cpu_dh, mut cpu_dmap) = (d_h0.clone(), vec![0f32; dt * ds]);
        let mut cpu_loss = 0.0;
        for _ in 0..2 {
            cpu_loss = a.loss_grad(&h_s, &h_t, n, Some(&mask), weight, &mut cpu_dh, &mut cpu_dmap).unwrap();
        }
        let dev = s.upload_anchor(&a).unwrap();
        let dh = g.upload(&d_h0).unwrap();
        let rows = AnchorRows { n_seq, seq_len, sink_tokens: sink };
        let mut gpu_loss = 0.0;
        for _ in 0..2 {
            gpu_loss = s.anchor_loss_grad(&dev, &hs, &ht, rows, weight, &dh).unwrap();
        }
        let (gpu_dh, gpu_dmap) = (g.read(&dh, dh.len()).unwrap(), s.anchor_map_grad(&dev).unwrap());
        eprintln!("{precision:?} anchor, {sink} sink rows: loss cpu {cpu_loss:.6} gpu {gpu_loss:.6}");
        assert!((gpu_loss - cpu_loss).abs() <= tol * cpu_loss, "anchor loss: gpu {gpu_loss} cpu {cpu_loss}");
        for (what, ours, theirs) in [("d_h", &increment(&gpu_dh), &increment(&cpu_dh)), ("d_map", &gpu_dmap, &cpu_dmap)] {
            let e = scaled_err(ours, theirs);
            assert!(e <= tol * 10.0, "anchor {what} ({sink} sink rows): scaled error {e:.3e}");
        }

        // Every row a sink: nothing counts, nothing moves.
        let all_sinks = AnchorRows { sink_tokens: seq_len, ..rows };
        assert_eq!(s.anchor_loss_grad(&dev, &hs, &ht, all_sinks, weight, &dh).unwrap(), 0.0);
        assert_eq!(g.read(&dh, dh.len()).unwrap(), gpu_dh);
    }
}

#[test]
fn f32_anchoring_matches_the_cpu() {
    check_anchor(GemmPrecision::F32, 2e-5);
}

#[test]
fn bf16_anchoring_stays_close_to_the_cpu() {
    check_anchor(GemmPrecision::Bf16, 2e-2);
}

/// A frozen model (how the teacher is held) runs forward like a student with the same weights
/// and refuses anything that needs gradients, instead of writing through buffers it lacks.
#[test]
fn a_frozen_model_runs_forward_and_refuses_training() {
    let c = case(true, 3);
    let Some(s) = student(&c.cfg, GemmPrecision::F32, &c.params) else { return };
    let frozen = CudaStudent::frozen_on(s.shared_gpu(), &c.cfg, &c.params, GemmPrecision::F32).unwrap();
    let (a, b) = (s.forward_frozen(&c.tokens, c.n_seq).unwrap(), frozen.forward_frozen(&c.tokens, c.n_seq).unwrap());
    assert_eq!(frozen.hidden(&b).unwrap(), s.hidden(&a).unwrap());
    for e in [frozen.zero_grads().err(), frozen.grads().err(), frozen.grad_norm().err(), frozen.adamw_step(1, 1e-3, &AdamW::default()).err()] {
        let e = e.expect("refused").to_string();
        assert!(e.contains("frozen"), "{e}");
    }
}

/// A config the kernels cannot run is refused before the GPU is touched.
#[test]
fn head_dim_above_the_kernels_limit_is_a_clear_error() {
    let mut cfg = config(true);
    cfg.n_head = 1;
    cfg.n_head_kv = 1;
    cfg.head_dim = 288;
    let p = random_params(&cfg, &mut ChaCha8Rng::seed_from_u64(1));
    let e = CudaStudent::new(0, &cfg, &p, GemmPrecision::F32).err().expect("refused");
    assert!(e.to_string().contains("head_dim 288"), "{e}");
}

fn golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden").join(name)
}

/// The GPU teacher (weights dequantized to f32, the training engine's forward) against the
/// runtime's CPU forward on an f32 llama fixture: hidden states and residual streams.
#[test]
fn the_gpu_teacher_matches_the_cpu_teacher() {
    use nexus_train::cuda::CudaTeacher;
    use nexus_train::teacher::Teacher;
    let t = Teacher::load(&golden("llama-spm-gqa.f32.gguf")).unwrap();
    let g = match CudaTeacher::load(0, &t.model, GemmPrecision::F32) {
        Ok(g) => g,
        Err(e) if std::env::var_os("NEXUS_REQUIRE_CUDA").is_none() => return eprintln!("skipped: {e}"),
        Err(e) => panic!("NEXUS_REQUIRE_CUDA is set: {e}"),
    };
    let c = &t.model.config;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tokens: Vec<u32> = (0..2 * 19).map(|_| rng.gen_range(0..c.n_vocab as u32)).collect();
    let layers = [0, c.n_layer - 1];
    let (cpu, gpu) = (t.run(&tokens, 2, &layers).unwrap(), g.run(&tokens, 2, &layers).unwrap());
    let e = scaled_err(&gpu.hidden, &cpu.hidden);
    eprintln!("GPU teacher vs CPU: hidden {e:.2e}");
    assert!(e <= 1e-4, "hidden states: scaled error {e:.3e}");
    for ((l, a), (_, b)) in gpu.residuals.iter().zip(&cpu.residuals) {
        let e = scaled_err(a, b);
        eprintln!("  residual after layer {l}: {e:.2e}");
        assert!(e <= 1e-4, "residual after layer {l}: scaled error {e:.3e}");
    }
}

/// A teacher whose RoPE the training engine does not implement is refused with the reason
/// (the trainer then keeps that teacher on the CPU), before any GPU work.
#[test]
fn a_teacher_with_scaled_rope_stays_off_the_gpu() {
    let t = nexus_train::teacher::Teacher::load(&golden("llama3-scaled.f32.gguf")).unwrap();
    let e = nexus_train::cuda::CudaTeacher::load(0, &t.model, GemmPrecision::F32).err().expect("refused");
    assert!(e.to_string().contains("RoPE"), "{e}");
}
