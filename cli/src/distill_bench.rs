//! `nexus-cli distill bench`: the time of one training step of a student shape (forward, fused
//! head and loss with a teacher's KL term, backward, clipping and AdamW) on the CPU engine or
//! the CUDA engine, from random weights and tokens — no teacher model or data needed, so the
//! GPU machine can measure it. Prints a table of median phase times and tokens/s.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_train::engine::head_loss::{head_loss, LossWeights, TeacherHead};
use nexus_train::optim::{adamw_params, clip_grad_norm, AdamW};
use nexus_train::student::{self, Params, StudentConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Args)]
pub struct BenchStepArgs {
    /// `cpu`, or `cuda` / `cuda:N` (a binary built with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// GEMM precision on CUDA: `f32` (exact) or `bf16` (tensor cores, f32 master weights).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Sequences per step and their length (the reference run's micro-batch: 8 × 256).
    #[arg(long, default_value_t = 8)]
    n_seq: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(short = 'r', long, default_value_t = 5)]
    steps: usize,
    /// The student's shape; the defaults are models/distill/smollm2-student.toml's.
    #[arg(long, default_value_t = 384)]
    n_embd: usize,
    #[arg(long, default_value_t = 8)]
    n_layer: usize,
    #[arg(long, default_value_t = 6)]
    n_head: usize,
    #[arg(long, default_value_t = 2)]
    n_head_kv: usize,
    #[arg(long, default_value_t = 1024)]
    n_ff: usize,
    #[arg(long, default_value_t = 49_152)]
    n_vocab: usize,
    /// The teacher's width for the KL term (SmolLM2-135M's 576); 0 trains on CE alone.
    #[arg(long, default_value_t = 576)]
    teacher_embd: usize,
    /// Vocabulary rows per chunk of the fused head and loss.
    #[arg(long, default_value_t = 4096)]
    vocab_chunk: usize,
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// Seconds of each phase of one step.
#[derive(Default, Clone, Copy)]
struct Phases {
    forward: f64,
    loss: f64,
    backward: f64,
    optimizer: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.forward + self.loss + self.backward + self.optimizer
    }
}

struct Inputs {
    cfg: StudentConfig,
    params: Params,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    t_hidden: Vec<f32>,
    t_head: Vec<f32>,
    weights: LossWeights,
}

fn inputs(a: &BenchStepArgs) -> Result<Inputs> {
    if a.n_head == 0 || a.n_head_kv == 0 || !a.n_embd.is_multiple_of(a.n_head) {
        bail!("--n-embd {} must be a multiple of --n-head {} (and both positive)", a.n_embd, a.n_head);
    }
    let cfg = StudentConfig {
        n_vocab: a.n_vocab,
        n_embd: a.n_embd,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_head_kv: a.n_head_kv,
        head_dim: a.n_embd / a.n_head,
        n_ff: a.n_ff,
        rms_eps: 1e-5,
        rope_base: 10_000.0,
        n_ctx: a.seq_len,
        tied: true,
    };
    cfg.check().map_err(|e| anyhow::anyhow!("student shape: {e}"))?;
    if a.n_seq == 0 || a.seq_len == 0 || a.steps == 0 {
        bail!("--n-seq, --seq-len and --steps must be positive");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut params = Params::zeros(&cfg);
    let names: Vec<String> = params.named().into_iter().map(|(n, _)| n).collect();
    for (t, name) in params.tensors_mut().into_iter().zip(names) {
        let norm = name.ends_with("_norm.weight");
        t.iter_mut().for_each(|x| *x = if norm { 1.0 } else { (rng.gen::<f32>() - 0.5) * 0.04 });
    }
    let n = a.n_seq * a.seq_len;
    let te = a.teacher_embd;
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.gen::<f32>() - 0.5).collect() };
    let (t_hidden, t_head) = (random(n * te), random(cfg.n_vocab * te));
    let tokens: Vec<u32> = (0..n).map(|_| rng.gen_range(0..cfg.n_vocab as u32)).collect();
    let targets = tokens[1..].iter().copied().chain([tokens[0]]).collect();
    let weights = LossWeights { ce: 1.0, kl: if te > 0 { 1.0 } else { 0.0 }, temperature: 2.0 };
    Ok(Inputs { cfg, params, tokens, targets, t_hidden, t_head, weights })
}

fn lap(clock: &mut Instant) -> f64 {
    let s = clock.elapsed().as_secs_f64();
    *clock = Instant::now();
    s
}

fn cpu_steps(a: &BenchStepArgs, x: &Inputs) -> Result<Vec<Phases>> {
    let (cfg, opt) = (&x.cfg, AdamW::default());
    let mut params = x.params.clone();
    let (mut m, mut v, mut grads) = (Params::zeros(cfg), Params::zeros(cfg), Params::zeros(cfg));
    let mut out = Vec::new();
    for step in 1..=a.steps + 1 {
        let mut p = Phases::default();
        let mut clock = Instant::now();
        grads.fill_zero();
        let acts = student::forward(cfg, &params, &x.tokens, a.n_seq)?;
        p.forward = lap(&mut clock);
        let teacher = (a.teacher_embd > 0).then(|| TeacherHead { hidden: &x.t_hidden, weight: &x.t_head, n_embd: a.teacher_embd, rows: None });
        let mut d_hidden = vec![0f32; acts.hidden().len()];
        head_loss(acts.hidden(), &params.embed, cfg.n_embd, &x.targets, teacher, &x.weights, a.vocab_chunk, 1.0, &mut d_hidden, &mut grads.embed)?;
        p.loss = lap(&mut clock);
        student::backward(cfg, &params, &acts, &d_hidden, &[], &mut grads)?;
        p.backward = lap(&mut clock);
        clip_grad_norm(&mut grads.tensors_mut(), 1.0);
        adamw_params(&mut params, &mut grads, &mut m, &mut v, step, opt.lr, &opt);
        p.optimizer = lap(&mut clock);
        out.push(p);
    }
    Ok(out)
}

#[cfg(feature = "cuda")]
fn cuda_steps(a: &BenchStepArgs, x: &Inputs, ordinal: usize, precision: &str) -> Result<(Vec<Phases>, String)> {
    use nexus_kernels::cuda::GemmPrecision;
    use nexus_train::cuda::CudaStudent;
    let precision = match precision {
        "f32" => GemmPrecision::F32,
        "bf16" => GemmPrecision::Bf16,
        p => bail!("--precision {p:?}: expected f32 or bf16"),
    };
    let mut s = CudaStudent::new(ordinal, &x.cfg, &x.params, precision)?;
    if a.teacher_embd > 0 {
        s.set_teacher_head(&x.t_head, a.teacher_embd)?;
    }
    // The teacher's hidden states are on the device in a training step (its forward leaves
    // them there): uploaded once, outside the timing.
    let t_hidden = match a.teacher_embd > 0 {
        true => Some(s.gpu().upload(&x.t_hidden)?),
        false => None,
    };
    let opt = AdamW::default();
    let sync = |s: &CudaStudent| s.gpu().sync().context("GPU step");
    let mut out = Vec::new();
    for step in 1..=a.steps + 1 {
        let mut p = Phases::default();
        let mut clock = Instant::now();
        s.zero_grads()?;
        let acts = s.forward(&x.tokens, a.n_seq)?;
        sync(&s)?;
        p.forward = lap(&mut clock);
        let (_, d_hidden) = s.head_loss(&acts, &x.targets, t_hidden.as_ref(), &x.weights, a.vocab_chunk, 1.0)?;
        sync(&s)?;
        p.loss = lap(&mut clock);
        s.backward(&acts, &d_hidden, &[])?;
        sync(&s)?;
        p.backward = lap(&mut clock);
        s.clip_grad_norm(1.0)?;
        s.adamw_step(step, opt.lr, &opt)?;
        sync(&s)?;
        p.optimizer = lap(&mut clock);
        out.push(p);
    }
    Ok((out, s.gpu().name.clone()))
}

#[cfg(not(feature = "cuda"))]
fn cuda_steps(_: &BenchStepArgs, _: &Inputs, _: usize, _: &str) -> Result<(Vec<Phases>, String)> {
    bail!("--device cuda: this nexus-cli was built without the `cuda` feature (cargo build --release --features cuda)")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn bench_step(a: BenchStepArgs) -> Result<()> {
    crate::load::set_threads(a.threads)?;
    let x = inputs(&a)?;
    let (runs, device) = match a.device.as_str() {
        "cpu" => (cpu_steps(&a, &x)?, format!("CPU, {} threads", rayon::current_num_threads())),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = d.strip_prefix("cuda:").map(|n| n.parse::<usize>()).transpose().with_context(|| format!("--device {d}"))?;
            let (r, name) = cuda_steps(&a, &x, ordinal.unwrap_or(0), &a.precision)?;
            (r, format!("CUDA {name}, {}", a.precision))
        }
        d => bail!("--device {d:?}: expected cpu, cuda or cuda:N"),
    };
    let timed = &runs[1..];
    let med = |f: fn(&Phases) -> f64| median(timed.iter().map(f).collect()) * 1e3;
    let n = (a.n_seq * a.seq_len) as f64;
    let step = med(Phases::total);
    println!(
        "student d={} L={} heads {}/{} ff={} vocab {} ({:.1} M params), {} × {} tokens, KL teacher width {}",
        x.cfg.n_embd,
        x.cfg.n_layer,
        x.cfg.n_head,
        x.cfg.n_head_kv,
        x.cfg.n_ff,
        x.cfg.n_vocab,
        x.cfg.n_params() as f64 / 1e6,
        a.n_seq,
        a.seq_len,
        a.teacher_embd
    );
    println!("| device | forward ms | head+loss ms | backward ms | optimizer ms | step ms | tokens/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {device} | {:.1} | {:.1} | {:.1} | {:.1} | {step:.1} | {:.0} |",
        med(|p| p.forward),
        med(|p| p.loss),
        med(|p| p.backward),
        med(|p| p.optimizer),
        n / (step / 1e3)
    );
    Ok(())
}
