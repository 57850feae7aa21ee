//! One TOML file describes a distillation run; `--set section.key=value` overrides any of it.
//! Unknown keys are errors (a typo must not silently train with a default). Relative paths are
//! taken from the directory the command runs in, like every other path on the command line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The teacher GGUF.
    pub teacher: PathBuf,
    /// Where every stage writes: profile, data, checkpoints, metrics, reports, the student.
    pub run_dir: PathBuf,
    /// Seeds data order, initialization and the teacher's sampled answers.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub profile: ProfileSection,
    pub student: StudentSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub export: ExportSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Text or JSONL files to train on (chat items rendered with the teacher's template).
    pub sources: Vec<PathBuf>,
    /// Prompts the teacher answers to make training text (empty: none).
    pub prompts: Option<PathBuf>,
    pub per_prompt: usize,
    /// How many times the teacher's answers appear in the token stream: weight for a small,
    /// on-target set next to large user corpora (1: once).
    pub answers_repeat: usize,
    pub max_answer_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// Held-out evaluation files no training document may overlap.
    pub held_out: Vec<PathBuf>,
    /// Tokens per training sequence.
    pub seq_len: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            sources: Vec::new(),
            prompts: None,
            per_prompt: 1,
            answers_repeat: 1,
            max_answer_tokens: 256,
            temperature: 0.8,
            top_p: 0.95,
            held_out: Vec::new(),
            seq_len: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileSection {
    pub n_ctx: usize,
    pub max_tokens: usize,
    pub ablation_tokens: usize,
    pub variance_fraction: f64,
    pub scale: f32,
    pub noise: f32,
    pub sink_tokens: usize,
}

impl Default for ProfileSection {
    fn default() -> Self {
        let d = crate::profile::ProfileConfig::default();
        ProfileSection {
            n_ctx: d.n_ctx,
            max_tokens: d.max_tokens,
            ablation_tokens: d.ablation_tokens,
            variance_fraction: d.variance_fraction,
            scale: d.scale,
            noise: d.noise,
            sink_tokens: d.sink_tokens,
        }
    }
}

impl ProfileSection {
    pub fn to_config(&self, seed: u64) -> crate::profile::ProfileConfig {
        crate::profile::ProfileConfig {
            n_ctx: self.n_ctx,
            max_tokens: self.max_tokens,
            ablation_tokens: self.ablation_tokens,
            variance_fraction: self.variance_fraction,
            scale: self.scale,
            noise: self.noise,
            seed,
            sink_tokens: self.sink_tokens,
        }
    }
}

/// How the student starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// Keep the teacher's most important layers, heads, channels (needs the profile).
    Prune,
    /// Random weights (GPT-2 initialization).
    Random,
}

/// The student's shape; what is not given (vocabulary, head size, norms, RoPE, tying) is the
/// teacher's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSection {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    /// Context the student is trained for; default: the training sequence length.
    #[serde(default)]
    pub n_ctx: Option<usize>,
    #[serde(default = "default_init")]
    pub init: InitKind,
}

fn default_init() -> InitKind {
    InitKind::Prune
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accum: usize,
    pub lr: f32,
    pub min_lr_ratio: f32,
    pub warmup: usize,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Gradient-norm clip (0: none).
    pub clip: f64,
    /// α: weight of the next-token cross-entropy.
    pub ce: f32,
    /// β: weight of T²·KL(teacher ‖ student).
    pub kl: f32,
    pub temperature: f32,
    /// γ: weight of the subspace anchoring term (0: no anchors, no teacher residuals kept).
    pub anchor: f32,
    /// Anchor every n-th student layer, counting from the last.
    pub anchor_every: usize,
    /// Vocabulary rows per chunk of the fused head and loss.
    pub vocab_chunk: usize,
    pub checkpoint_every: usize,
    /// Compute threads (0: all cores).
    pub threads: usize,
    /// Where the student trains: `cpu`, or `cuda` / `cuda:N` (a build with the `cuda` feature;
    /// the teacher runs there too when it is a plain llama, else on the CPU).
    pub device: String,
    /// The GPU's GEMM precision: `f32` (exact), or `bf16` (tensor-core products, f32 weights).
    pub precision: String,
    /// MiB of a CPU teacher's outputs kept per training sequence, so data seen again does not
    /// run the teacher again (`trainer::teacher_cache`; 0: none). A GPU teacher keeps nothing.
    pub teacher_cache_mb: usize,
}

impl TrainSection {
    /// `None` for `device = "cpu"`, the GPU's number for `cuda` / `cuda:N`; checks the
    /// precision goes with the device.
    pub fn gpu(&self) -> Result<Option<usize>, String> {
        let d = self.device.as_str();
        let gpu = match d {
            "cpu" => None,
            "cuda" => Some(0),
            _ => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Some(n),
                _ => return Err(format!("train.device = {d:?}: expected cpu, cuda or cuda:N")),
            },
        };
        match (self.precision.as_str(), gpu) {
            ("f32", _) | ("bf16", Some(_)) => Ok(gpu),
            ("bf16", None) => Err("train.precision = \"bf16\" needs train.device = \"cuda\": the CPU engine computes in f32".into()),
            (p, _) => Err(format!("train.precision = {p:?}: expected f32 or bf16")),
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: 1000,
            batch: 8,
            accum: 1,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 50,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            clip: 1.0,
            ce: 0.5,
            kl: 1.0,
            temperature: 1.0,
            anchor: 0.1,
            anchor_every: 2,
            vocab_chunk: 4096,
            checkpoint_every: 100,
            threads: 0,
            device: "cpu".into(),
            precision: "f32".into(),
            teacher_cache_mb: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    pub contract: PathBuf,
    /// `(capability, file)` pairs; empty: the four committed sets in `heldout_dir`.
    pub sets: Vec<(String, PathBuf)>,
    pub heldout_dir: PathBuf,
    pub n_ctx: usize,
    pub max_tokens: usize,
    pub top_k: usize,
}

impl Default for VerifySection {
    fn default() -> Self {
        let d = crate::verify::VerifyConfig::default();
        VerifySection {
            contract: "models/distill/contract.toml".into(),
            sets: Vec::new(),
            heldout_dir: "models/distill/heldout".into(),
            n_ctx: d.n_ctx,
            max_tokens: d.max_tokens_per_capability,
            top_k: d.top_k,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// f32, f16 or q8_0.
    #[serde(rename = "type")]
    pub ty: String,
    /// Default: `<run_dir>/student.<type>.gguf`.
    pub out: Option<PathBuf>,
    pub name: String,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection { ty: "q8_0".into(), out: None, name: "nexus-student".into() }
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`section.key=value`, the value in TOML syntax or a
    /// bare string), and checks the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(path, &text, overrides)
    }

    pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<RunConfig, TrainError> {
        let bad = |what: String| TrainError::Config { path: path.to_path_buf(), what };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(format!("not a valid TOML run config: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o).map_err(|what| bad(format!("--set {o}: {what}")))?;
        }
        let cfg: RunConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let t = &self.train;
        let s = &self.student;
        let positive = [
            ("student.n_embd", s.n_embd),
            ("student.n_layer", s.n_layer),
            ("student.n_head", s.n_head),
            ("student.n_head_kv", s.n_head_kv),
            ("student.n_ff", s.n_ff),
            ("data.seq_len", self.data.seq_len),
            ("train.steps", t.steps),
            ("train.batch", t.batch),
            ("train.accum", t.accum),
            ("train.anchor_every", t.anchor_every),
            ("train.vocab_chunk", t.vocab_chunk),
            ("train.checkpoint_every", t.checkpoint_every),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{k} must be at least 1"));
        }
        if !s.n_head.is_multiple_of(s.n_head_kv) {
            return Err(format!("student.n_head ({}) must be a multiple of student.n_head_kv ({})", s.n_head, s.n_head_kv));
        }
        let finite_nonneg = [("train.ce", t.ce), ("train.kl", t.kl), ("train.anchor", t.anchor), ("train.weight_decay", t.weight_decay)];
        if let Some((k, v)) = finite_nonneg.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(format!("{k} = {v}: must be a finite number ≥ 0"));
        }
        if t.ce == 0.0 && t.kl == 0.0 {
            return Err("train.ce and train.kl are both 0: the student would learn nothing about tokens".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.temperature.is_finite() && t.temperature > 0.0) {
            return Err(format!("train.lr ({}) and train.temperature ({}) must be positive", t.lr, t.temperature));
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) || !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return Err("train.beta1 and train.beta2 must be in [0, 1), train.min_lr_ratio in [0, 1]".into());
        }
        t.gpu()?;
        self.export.ty.parse::<crate::export::ExportType>().map_err(|e| format!("export.type: {e}"))?;
        if self.data.sources.is_empty() && self.data.prompts.is_none() {
            return Err("no training data: give data.sources or data.prompts".into());
        }
        if self.data.answers_repeat == 0 {
            return Err("data.answers_repeat must be at least 1".into());
        }
        Ok(())
    }

    /// The student's context length.
    pub fn student_n_ctx(&self) -> usize {
        self.student.n_ctx.unwrap_or(self.data.seq_len)
    }

    pub fn export_path(&self) -> PathBuf {
        self.export.out.clone().unwrap_or_else(|| self.run_dir.join(format!("student.{}.gguf", self.export.ty)))
    }
}

/// Sets `a.b.c = value` in `table`, creating sections as needed.
fn apply_override(table: &mut toml::Table, o: &str) -> Result<(), String> {
    let (key, raw) = o.split_once('=').ok_or("expected section.key=value")?;
    let (key, raw) = (key.trim(), raw.trim());
    // A value that does not parse as TOML (a bare path, a word) is taken as a string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key \"{key}\""));
    }
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| format!("{p} is not a section"))?;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "teacher = \"t.gguf\"\nrun_dir = \"run\"\n[data]\nsources = [\"a.txt\"]\n[student]\nn_embd = 64\nn_layer = 2\nn_head = 4\nn_head_kv = 2\nn_ff = 128\n";

    #[test]
    fn the_reference_run_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/distill/smollm2-student.toml");
        let c = RunConfig::load(&path, &[]).unwrap();
        assert_eq!((c.train.device.as_str(), c.train.precision.as_str()), ("cuda", "bf16"));
        assert!(c.data.answers_repeat > 1 && c.data.prompts.is_some() && !c.data.sources.is_empty());
        // A CPU build runs it with the documented overrides.
        let cpu = ["train.device=cpu".to_string(), "train.precision=f32".into()];
        assert_eq!(RunConfig::load(&path, &cpu).unwrap().train.gpu(), Ok(None));
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let c = RunConfig::parse(Path::new("x.toml"), MIN, &[]).unwrap();
        assert_eq!(c.train, TrainSection::default());
        assert_eq!(c.student.init, InitKind::Prune);
        assert_eq!(c.student_n_ctx(), 256);
        assert_eq!(c.export_path(), PathBuf::from("run/student.q8_0.gguf"));
    }

    #[test]
    fn overrides_set_numbers_strings_and_new_sections() {
        let o = ["train.steps=7".to_string(), "train.lr = 3e-4".into(), "student.init=random".into(), "export.out=/tmp/s.gguf".into(), "verify.top_k=8".into()];
        let c = RunConfig::parse(Path::new("x.toml"), MIN, &o).unwrap();
        assert_eq!(c.train.steps, 7);
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.student.init, InitKind::Random);
        assert_eq!(c.export_path(), PathBuf::from("/tmp/s.gguf"));
        assert_eq!(c.verify.top_k, 8);
    }

    #[test]
    fn bad_configs_name_the_file_and_the_key() {
        let cases = [
            (format!("{MIN}[train]\nstep = 3\n"), "step"),
            (MIN.replace("n_head_kv = 2", "n_head_kv = 3"), "multiple"),
            (format!("{MIN}[train]\nce = 0\nkl = 0\n"), "both 0"),
            (format!("{MIN}[export]\ntype = \"q3\"\n"), "export.type"),
            (MIN.replace("sources = [\"a.txt\"]", ""), "no training data"),
            (MIN.replace("[data]", "[data]\nanswers_repeat = 0"), "answers_repeat"),
            ("teacher = 3".to_string(), "x.toml"),
        ];
        for (text, needle) in cases {
            let e = RunConfig::parse(Path::new("x.toml"), &text, &[]).unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains(needle), "{e}");
        }
        let e = RunConfig::parse(Path::new("x.toml"), MIN, &["train.lr".into()]).unwrap_err().to_string();
        assert!(e.contains("--set train.lr"), "{e}");
        let e = RunConfig::parse(Path::new("x.toml"), MIN, &["train.lr=-1".into()]).unwrap_err().to_string();
        assert!(e.contains("train.lr"), "{e}");
    }
}
