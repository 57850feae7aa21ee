//! Checking loaded adapters against a base model and attaching them to its projections.

use crate::model::{Linear, Model, ModelError};

use super::{LoraAdapter, LoraDelta};

impl Model {
    /// Attaches LoRA adapters, each with its user scale (llama.cpp's `--lora-scaled FILE
    /// SCALE`; 1.0 for `--lora FILE`), to the projections they name, on top of any already
    /// attached: several adapters add up. Every adapter is checked against this model first
    /// (architecture, that each base tensor is a projection of this model, shapes), and on
    /// any error nothing is attached. The token embedding cannot take an adapter; the output
    /// head can when the model has its own `output.weight`.
    pub fn apply_lora(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<(), ModelError> {
        let plan = self.check_lora(adapters)?;
        let mut targets = self.lora_targets_mut();
        for delta in plan {
            let Some(target) = targets.iter_mut().find(|l| l.name == delta.weight.base) else {
                unreachable!("check_lora returned {:?}, which is not a projection", delta.weight.base)
            };
            target.lora_mut().push(delta);
        }
        Ok(())
    }

    /// The checks of [`Model::apply_lora`] without attaching anything: every adapter against
    /// this model (architecture, finite scale, that each base tensor is a projection of this
    /// model and not the token embedding, shapes). Returns each pair with its effective scale,
    /// in adapter order, for whoever applies them (`apply_lora`, or a merge into the weights
    /// such as `nexus-cli export-lora`). Errors name the adapter file and the tensor.
    pub fn check_lora(&self, adapters: &[(&LoraAdapter, f32)]) -> Result<Vec<LoraDelta>, ModelError> {
        let arch = self.config.arch.name();
        let base_path = self.file().path().to_path_buf();
        let has_tensor = |name: &str| self.file().tensor_info(name).is_some();
        let mut plan = Vec::new();
        {
            let targets: Vec<(String, usize, usize)> =
                self.lora_targets().iter().map(|l| (l.name.clone(), l.cols, l.rows)).collect();
            for &(adapter, user_scale) in adapters {
                let invalid = |what: String| ModelError::Invalid { path: adapter.path.clone(), what };
                if adapter.arch != arch {
                    return Err(invalid(format!(
                        "an adapter for architecture {:?}, but the base model {} is {arch:?}",
                        adapter.arch,
                        base_path.display()
                    )));
                }
                if !user_scale.is_finite() {
                    return Err(invalid(format!("scale {user_scale} is not a finite number")));
                }
                for w in &adapter.weights {
                    if w.base == "token_embd.weight" {
                        return Err(ModelError::Unsupported {
                            path: adapter.path.clone(),
                            what: "token_embd.weight: LoRA on the token embedding is not supported".into(),
                        });
                    }
                    let Some(i) = targets.iter().position(|(name, ..)| *name == w.base) else {
                        let why = if has_tensor(&w.base) {
                            "is not a projection an adapter can change"
                        } else {
                            "does not exist in the base model (an adapter for another base model?)"
                        };
                        return Err(invalid(format!("{}.lora_a/.lora_b: base tensor {:?} {why}", w.base, w.base)));
                    };
                    let (_, cols, rows) = targets[i];
                    if (w.n_in, w.n_out) != (cols, rows) {
                        return Err(invalid(format!(
                            "{}.lora_a/.lora_b: shape mismatch: the adapter maps {} inputs to {} outputs (rank {}), \
                             the base tensor {} to {} (an adapter for another base model?)",
                            w.base, w.n_in, w.n_out, w.rank, cols, rows
                        )));
                    }
                    plan.push(LoraDelta { weight: w.clone(), scale: adapter.effective_scale(user_scale, w.rank) });
                }
            }
        }
        Ok(plan)
    }

    /// Replaces every attached adapter by `adapters` (none: the base model). They are checked
    /// first, so on error the adapters attached before stay.
    pub fn replace_lora(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<(), ModelError> {
        self.check_lora(adapters)?;
        self.clear_lora();
        self.apply_lora(adapters)
    }

    /// Removes every attached adapter: the model is the base model again.
    pub fn clear_lora(&mut self) {
        for l in self.lora_targets_mut() {
            l.lora_mut().clear();
        }
    }

    /// Every projection's attached adapters, for [`Model::restore_lora`] (a caller that must
    /// undo an attachment a later step refused, such as a GPU copy that cannot take it).
    pub(crate) fn lora_snapshot(&self) -> Vec<Vec<LoraDelta>> {
        self.lora_targets().iter().map(|l| l.lora().to_vec()).collect()
    }

    /// Puts back what [`Model::lora_snapshot`] took.
    pub(crate) fn restore_lora(&mut self, snapshot: Vec<Vec<LoraDelta>>) {
        for (l, deltas) in self.lora_targets_mut().into_iter().zip(snapshot) {
            *l.lora_mut() = deltas;
        }
    }

    /// Whether any adapter is attached.
    pub fn has_lora(&self) -> bool {
        self.lora_targets().iter().any(|l| !l.lora().is_empty())
    }

    /// The projections an adapter may change: every layer's seven, and the output head unless
    /// it is the (tied) token embedding.
    fn lora_targets(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .collect();
        if self.output.name == "output.weight" {
            v.push(&self.output);
        }
        v
    }

    /// [`Model::lora_targets`], mutable, in the same order.
    fn lora_targets_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self
            .layers
            .iter_mut()
            .flat_map(|l| [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down])
            .collect();
        if self.output.name == "output.weight" {
            v.push(&mut self.output);
        }
        v
    }
}
