//! Initializer → VITS module name. Every initializer is either a parameter (mapped to its VITS
//! name) or a small graph constant (checked or recognised as shape bookkeeping by `constants`);
//! anything else is an error naming it, so nothing is silently dropped.

use std::collections::HashMap;
use std::path::Path;

use crate::onnx::{DataType, Graph, Tensor};

use super::VoiceError;

/// The VITS submodules of an inference-only Piper export.
const MODULES: [&str; 4] = ["enc_p.", "dp.", "flow.", "dec."];

/// A parameter and the VITS name it is stored under.
pub struct Param<'g, 'a> {
    pub vits: String,
    pub tensor: &'g Tensor<'a>,
}

/// A graph constant and the nodes that read it (op type, node name, input slot).
pub struct Constant<'g, 'a> {
    pub tensor: &'g Tensor<'a>,
    pub consumers: Vec<Use<'g, 'a>>,
}

#[derive(Clone, Copy)]
pub struct Use<'g, 'a> {
    pub op: &'a str,
    pub node: &'a str,
    pub slot: usize,
    /// The node's first input (to tell e.g. which graph input a Gather indexes).
    pub first_input: &'g str,
}

/// Largest element count a graph constant may have; parameters are larger or module-named.
const MAX_CONSTANT_ELEMENTS: usize = 16;

/// Splits the initializers into parameters (with VITS names, unique) and graph constants.
pub fn classify<'g, 'a>(graph: &'g Graph<'a>, path: &Path) -> Result<(Vec<Param<'g, 'a>>, Vec<Constant<'g, 'a>>), VoiceError> {
    let mut uses: HashMap<&str, Vec<Use<'g, 'a>>> = HashMap::new();
    for node in &graph.node {
        for (slot, input) in node.input.iter().enumerate() {
            let first_input = node.input.first().copied().unwrap_or("");
            uses.entry(input).or_default().push(Use { op: node.op_type, node: node.name, slot, first_input });
        }
    }
    let mut params: Vec<Param> = Vec::new();
    let mut by_vits: HashMap<String, &str> = HashMap::new();
    let mut constants = Vec::new();
    for t in &graph.initializer {
        let consumers = uses.get(t.name).cloned().unwrap_or_default();
        let vits = vits_name(t, &consumers);
        match vits {
            Some(vits) => {
                if let Some(first) = by_vits.insert(vits.clone(), t.name) {
                    return Err(VoiceError::Duplicate { path: path.into(), first: first.into(), second: t.name.into(), vits });
                }
                params.push(Param { vits, tensor: t });
            }
            None if t.numel().is_ok_and(|n| n <= MAX_CONSTANT_ELEMENTS) => constants.push(Constant { tensor: t, consumers }),
            None => return Err(VoiceError::Unmapped { path: path.into(), name: t.name.into(), shape: t.dims.clone() }),
        }
    }
    Ok((params, constants))
}

/// The VITS name of a parameter, or `None` for what is not one.
fn vits_name(t: &Tensor, consumers: &[Use]) -> Option<String> {
    if t.data_type() != DataType::Float {
        return None;
    }
    if MODULES.iter().any(|m| t.name.starts_with(m)) {
        return Some(t.name.to_string());
    }
    // The exporter renamed some weights (`sid` for the embedding, `onnx::Conv_N` for the
    // weight-norm-folded flow WaveNet convs); their only consumer's node name still carries the
    // module path: `/flow/flows.6/enc/in_layers.0/Conv`, input 1 → `flow.flows.6.enc.in_layers.0.weight`.
    if let [only] = consumers {
        let (suffix, role) = match (only.op, only.slot) {
            ("Conv", 1) | ("ConvTranspose", 1) => (only.op, "weight"),
            ("Conv", 2) | ("ConvTranspose", 2) => (only.op, "bias"),
            ("Gather", 0) => ("Gather", "weight"),
            _ => ("", ""),
        };
        if !role.is_empty() {
            let module = only.node.strip_prefix('/')?.strip_suffix(suffix)?.strip_suffix('/')?.replace('/', ".");
            if MODULES.iter().any(|m| module.starts_with(m)) {
                return Some(format!("{module}.{role}"));
            }
        }
        // ElementwiseAffine's exp(-logs), constant-folded: `/dp/flows.0/Exp_output_0` read by
        // `/dp/flows.0/Mul`. Stored under its own name with its value unchanged.
        if only.op == "Mul" {
            let flow = t.name.strip_prefix("/dp/flows.")?.strip_suffix("/Exp_output_0")?;
            if !flow.is_empty() && flow.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("dp.flows.{flow}.exp_neg_logs"));
            }
        }
    }
    None
}
