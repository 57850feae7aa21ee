//! `nexus-cli distill train-router`: a router (`nexus_runtime::router`) trained on
//! capability-labelled prompts. Each prompt's pooled hidden state at the chosen layer comes
//! from the base model's own forward pass; a seeded, per-class held-out split measures the
//! routing accuracy (per capability, and the confusion matrix) on prompts it never saw.

mod data;
mod fit;

use std::path::{Path, PathBuf};

use nexus_runtime::model::{Model, ModelError};
use nexus_runtime::router::{pooled_hidden, route_tokens, Backbone, Router, BASE};
use nexus_runtime::tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use data::{read_labelled, LabelledPrompt};
pub use fit::{fit, loss_and_grads, predict, FitConfig};

#[derive(Debug, thiserror::Error)]
pub enum RouterTrainError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}{}: {what}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Data { path: PathBuf, line: usize, what: String },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Router(#[from] nexus_runtime::router::RouterError),
    #[error("{}: {source}", path.display())]
    Plot { path: PathBuf, source: crate::plot::PlotError },
    #[error("the training loss stopped being finite at step {0} (lower --lr)")]
    NonFinite(usize),
}

#[derive(Debug, Clone)]
pub struct TrainRouterConfig {
    /// The backbone layer whose output is pooled.
    pub layer: usize,
    pub fit: FitConfig,
    /// Below this probability the router falls back to the base.
    pub threshold: f32,
    /// Fraction of each class's prompts held out for evaluation.
    pub heldout: f32,
    /// The capabilities, in class order; `None`: those the data names, sorted.
    pub capabilities: Option<Vec<String>>,
}

/// What training measured on the held-out prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterReport {
    /// `none`, then the capabilities.
    pub classes: Vec<String>,
    pub n_train: usize,
    pub n_heldout: usize,
    pub train_accuracy: f64,
    pub train_loss: f64,
    /// Held-out accuracy of the classifier's most likely class (threshold not applied).
    pub heldout_accuracy: f64,
    /// `confusion[true][predicted]` counts on the held-out prompts.
    pub confusion: Vec<Vec<usize>>,
}

impl RouterReport {
    /// Held-out accuracy of class `c` (`None` when no prompt of it was held out).
    pub fn class_accuracy(&self, c: usize) -> Option<f64> {
        let n: usize = self.confusion[c].iter().sum();
        (n > 0).then(|| self.confusion[c][c] as f64 / n as f64)
    }

    /// The report as Markdown: accuracy per capability and the confusion matrix.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} training prompts, {} held out; training accuracy {:.3} (loss {:.4}); held-out accuracy {:.3}\n\n",
            self.n_train, self.n_heldout, self.train_accuracy, self.train_loss, self.heldout_accuracy
        );
        s.push_str("| capability | held out | correct | accuracy |\n|---|---:|---:|---:|\n");
        for (c, name) in self.classes.iter().enumerate() {
            let n: usize = self.confusion[c].iter().sum();
            let acc = self.class_accuracy(c).map_or("-".to_string(), |a| format!("{a:.3}"));
            s.push_str(&format!("| {name} | {n} | {} | {acc} |\n", self.confusion[c][c]));
        }
        s.push_str("\nconfusion (rows: true, columns: predicted)\n\n| |");
        for name in &self.classes {
            s.push_str(&format!(" {name} |"));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(self.classes.len()));
        for (c, row) in self.confusion.iter().enumerate() {
            s.push_str(&format!("\n| {} |", self.classes[c]));
            for v in row {
                s.push_str(&format!(" {v} |"));
            }
        }
        s.push('\n');
        s
    }

    /// The confusion matrix as a PNG heat map (row-normalized; rows true, columns predicted).
    pub fn write_confusion_png(&self, path: &Path) -> Result<(), RouterTrainError> {
        let values: Vec<Vec<f64>> = self
            .confusion
            .iter()
            .map(|row| {
                let n: usize = row.iter().sum();
                row.iter().map(|&v| if n == 0 { f64::NAN } else { v as f64 / n as f64 }).collect()
            })
            .collect();
        let names: Vec<String> = self.classes.iter().enumerate().map(|(i, c)| format!("{i} {c}")).collect();
        let title = format!("held-out confusion: {}", names.join(", "));
        crate::plot::heat_map(path, &title, "predicted class", "true class", &values)
            .map_err(|source| RouterTrainError::Plot { path: path.into(), source })
    }
}

/// The class of each prompt (0 = base, i + 1 = `capabilities[i]`), the capabilities in order.
fn classes(data_path: &Path, prompts: &[LabelledPrompt], given: Option<&[String]>) -> Result<(Vec<usize>, Vec<String>), RouterTrainError> {
    let caps: Vec<String> = match given {
        Some(list) => list.to_vec(),
        None => {
            let mut v: Vec<String> = prompts.iter().filter_map(|p| p.capability.clone()).collect();
            v.sort();
            v.dedup();
            v
        }
    };
    if caps.is_empty() {
        return Err(RouterTrainError::Invalid { path: data_path.into(), what: "no prompt is labelled with a capability: nothing to route to".into() });
    }
    let labels = prompts
        .iter()
        .map(|p| match &p.capability {
            None => Ok(0),
            Some(c) => caps.iter().position(|k| k == c).map(|i| i + 1).ok_or_else(|| RouterTrainError::Data {
                path: data_path.into(),
                line: p.line,
                what: format!("unknown capability {c:?}: --capabilities lists {} (and {BASE})", caps.join(", ")),
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok((labels, caps))
}

/// Splits indices per class: `heldout` of each class (at least one when it has two or more)
/// held out, chosen by a seeded shuffle.
fn split(labels: &[usize], n_classes: usize, heldout: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5b17);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..n_classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f32 * heldout).round() as usize).max(usize::from(idx.len() >= 2 && heldout > 0.0)).min(idx.len().saturating_sub(1));
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Trains a router for `model` (the backbone whose forward pass gives the features) from
/// `prompts` (read from `data_path`, named in errors). `on_feature(i, n)` after each prompt.
pub fn train_router(
    model: &Model,
    tokenizer: &Tokenizer,
    data_path: &Path,
    prompts: &[LabelledPrompt],
    cfg: &TrainRouterConfig,
    mut on_feature: impl FnMut(usize, usize),
) -> Result<(Router, RouterReport), RouterTrainError> {
    let n_layer = model.config.n_layer;
    if cfg.layer >= n_layer {
        let what = format!("--layer {} is out of range: the model has {n_layer} layers (0..={})", cfg.layer, n_layer - 1);
        return Err(RouterTrainError::Invalid { path: model.file().path().into(), what });
    }
    if !(0.0..1.0).contains(&cfg.heldout) || !(0.0..=1.0).contains(&cfg.threshold) {
        let what = format!("held-out fraction {} must be in [0, 1) and threshold {} in [0, 1]", cfg.heldout, cfg.threshold);
        return Err(RouterTrainError::Invalid { path: data_path.into(), what });
    }
    let (labels, capabilities) = classes(data_path, prompts, cfg.capabilities.as_deref())?;
    let n_classes = capabilities.len() + 1;
    let mut features = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let tokens = route_tokens(tokenizer, &p.text);
        features.push(pooled_hidden(model, &tokens, cfg.layer)?);
        on_feature(i + 1, prompts.len());
    }
    let (train, test) = split(&labels, n_classes, cfg.heldout, cfg.fit.seed);
    if train.is_empty() {
        return Err(RouterTrainError::Invalid { path: data_path.into(), what: "no prompt is left for training".into() });
    }
    // Standardize with the training prompts' statistics only.
    let d = model.config.n_embd;
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for &i in &train {
        for (j, &v) in features[i].iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let n = train.len() as f64;
    let feat_mean: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
    let feat_scale: Vec<f32> = mean.iter().zip(&sq).map(|(m, s)| (1.0 / ((s / n - (m / n).powi(2)).max(0.0) + 1e-6).sqrt()) as f32).collect();
    let standard = |i: &usize| -> Vec<f32> { features[*i].iter().zip(&feat_mean).zip(&feat_scale).map(|((h, m), s)| (h - m) * s).collect() };
    let x_train: Vec<Vec<f32>> = train.iter().map(standard).collect();
    let y_train: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
    let x_test: Vec<Vec<f32>> = test.iter().map(standard).collect();
    let (layers, train_loss) = fit(&x_train, &y_train, n_classes, &cfg.fit).map_err(RouterTrainError::NonFinite)?;

    let accuracy = |pred: &[usize], idx: &[usize]| -> f64 {
        let ok = pred.iter().zip(idx).filter(|(p, &i)| **p == labels[i]).count();
        ok as f64 / idx.len().max(1) as f64
    };
    let train_accuracy = accuracy(&predict(&layers, &x_train), &train);
    let pred_test = predict(&layers, &x_test);
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (p, &i) in pred_test.iter().zip(&test) {
        confusion[labels[i]][*p] += 1;
    }
    let heldout_accuracy = if test.is_empty() { f64::NAN } else { accuracy(&pred_test, &test) };
    let router = Router {
        path: PathBuf::new(),
        backbone: Backbone::of(model),
        layer: cfg.layer,
        capabilities: capabilities.clone(),
        threshold: cfg.threshold,
        feat_mean,
        feat_scale,
        layers,
        heldout_accuracy: heldout_accuracy.is_finite().then_some(heldout_accuracy as f32),
    };
    let report = RouterReport {
        classes: std::iter::once(BASE.to_string()).chain(capabilities).collect(),
        n_train: train.len(),
        n_heldout: test.len(),
        train_accuracy,
        train_loss,
        heldout_accuracy,
        confusion,
    };
    Ok((router, report))
}
