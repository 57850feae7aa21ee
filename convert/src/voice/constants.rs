//! The graph constants of a Piper export. Float scalars carry architecture constants (scales,
//! epsilons, the spline's bounds): each must equal a value the native forward uses, and the few
//! with a recognisable role are checked against that role. Integer constants can only take part
//! in integer arithmetic (every activation is float), so, when every reader is a shape/index op,
//! they are shape bookkeeping and are skipped; the indices into the `scales` input are checked.

use std::path::Path;

use crate::onnx::DataType;

use super::names::{Constant, Use};
use super::VoiceError;

/// Ops that read integer constants as shapes, axes, pads, indices or loop bounds.
const SHAPE_OPS: [&str; 19] = [
    "Gather", "Range", "Add", "Sub", "Mul", "Div", "Concat", "Expand", "Slice", "Squeeze", "Unsqueeze", "ReduceSum",
    "Reshape", "Pad", "Split", "Where", "Equal", "CumSum", "ConstantOfShape",
];

/// Values read from the constants, written to the GGUF as hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct GraphConstants {
    pub tail_bound: f32,
    pub layer_norm_eps: f32,
}

/// What the constants are checked against (from the tensor shapes).
pub struct Expect {
    pub hidden_channels: usize,
    pub n_heads: usize,
    pub n_bins: usize,
    pub n_resblock_kinds: usize,
}

/// Equal up to f32 rounding (relative, so 1e-7 is not mistaken for 1e-6; 0 must be exact).
/// (meaning, expected value, which reader identifies the constant).
type Role<'r> = (&'static str, f64, &'r dyn Fn(&Use) -> bool);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs()
}

fn scalar(c: &Constant, path: &Path) -> Result<f64, VoiceError> {
    let values = c.tensor.float_values().map_err(|error| VoiceError::Onnx { path: path.into(), error })?;
    match values.as_slice() {
        [v] => Ok(*v),
        _ => Err(VoiceError::Unmapped { path: path.into(), name: c.tensor.name.into(), shape: c.tensor.dims.clone() }),
    }
}

/// The float scalar read by a node that matches `role`, required to exist.
fn find(consts: &[(f64, &Constant)], path: &Path, what: &str, role: impl Fn(&Use) -> bool) -> Result<f64, VoiceError> {
    consts
        .iter()
        .find(|(_, c)| c.consumers.iter().any(&role))
        .map(|(v, _)| *v)
        .ok_or_else(|| VoiceError::Architecture { path: path.into(), problem: format!("no graph constant for the {what}") })
}

pub fn check(constants: &[Constant], expect: &Expect, path: &Path) -> Result<GraphConstants, VoiceError> {
    let mut floats = Vec::new();
    let mut scale_indices = Vec::new();
    for c in constants {
        let ty = c.tensor.data_type();
        if ty.is_integer() {
            if let Some(u) = c.consumers.iter().find(|u| !SHAPE_OPS.contains(&u.op)) {
                return Err(VoiceError::Architecture {
                    path: path.into(),
                    problem: format!("integer constant {:?} is read by {} {:?}, not a shape op", c.tensor.name, u.op, u.node),
                });
            }
            if c.consumers.iter().any(|u| u.op == "Gather" && u.slot == 1 && u.first_input == "scales") {
                let v = c.tensor.int_values().map_err(|error| VoiceError::Onnx { path: path.into(), error })?;
                scale_indices.extend(v);
            }
        } else if matches!(ty, DataType::Float | DataType::Double) {
            floats.push((scalar(c, path)?, c));
        } else {
            return Err(VoiceError::Unmapped { path: path.into(), name: c.tensor.name.into(), shape: c.tensor.dims.clone() });
        }
    }
    scale_indices.sort_unstable();
    if scale_indices != [0, 1, 2] {
        return Err(VoiceError::Architecture {
            path: path.into(),
            problem: format!("the `scales` input is indexed by {scale_indices:?}, expected 0, 1, 2 (noise_scale, length_scale, noise_w)"),
        });
    }

    let dp = |u: &Use| u.node.starts_with("/dp/");
    let tail_bound = find(&floats, path, "spline tail bound", |u| dp(u) && u.op == "LessOrEqual")?;
    let eps = find(&floats, path, "LayerNorm epsilon", |u| u.op == "Add" && u.node.contains("/norm"))?;
    let hidden = expect.hidden_channels as f64;
    let head = (expect.hidden_channels / expect.n_heads) as f64;
    // Role-specific checks first, then every float scalar must be one of the forward's constants.
    let roles: [Role; 5] = [
        ("embedding scale √hidden_channels", hidden.sqrt(), &|u: &Use| u.node == "/enc_p/Mul"),
        ("attention scale √(hidden_channels / n_heads)", head.sqrt(), &|u: &Use| {
            u.op == "Div" && u.node.starts_with("/enc_p/encoder/attn_layers.")
        }),
        ("attention mask fill", -1e4, &|u: &Use| u.op == "Where" && u.node.starts_with("/enc_p/encoder/attn_layers.")),
        ("spline lower tail bound", -tail_bound, &|u: &Use| dp(u) && u.op == "GreaterOrEqual"),
        ("resblock average over kernel sizes", expect.n_resblock_kinds as f64, &|u: &Use| u.node == "/dec/Div"),
    ];
    let known: [(f64, &str); 16] = [
        (hidden.sqrt(), "√hidden_channels (embedding scale, spline 1/√filter_channels)"),
        (head.sqrt(), "√(hidden/heads) attention scale"),
        (-1e4, "attention mask fill"),
        (eps, "LayerNorm epsilon"),
        (tail_bound, "spline tail bound"),
        (-tail_bound, "spline tail bound"),
        (1e-3, "spline minimum bin width / height / derivative"),
        (1e-6, "spline bin search epsilon"),
        (expect.n_bins as f64, "spline bins (min_bin_width · num_bins)"),
        (4.0, "spline quadratic 4ac"),
        (expect.n_resblock_kinds as f64, "resblock average"),
        (2.0, "LayerNorm square"),
        (1.0, "GELU / duration clip / ones"),
        (0.5, "GELU"),
        (std::f64::consts::SQRT_2, "GELU erf(x/√2)"),
        (0.0, "mask compare / zero"),
    ];
    for (value, c) in &floats {
        for (meaning, expected, role) in &roles {
            if c.consumers.iter().any(role) && !close(*value, *expected) {
                return Err(VoiceError::Constant {
                    path: path.into(),
                    name: c.tensor.name.into(),
                    found: *value,
                    expected: format!("{expected}"),
                    meaning: (*meaning).into(),
                });
            }
        }
        if !known.iter().any(|(k, _)| close(*value, *k)) {
            let list: Vec<String> = known.iter().map(|(k, m)| format!("{k} ({m})")).collect();
            return Err(VoiceError::Constant {
                path: path.into(),
                name: c.tensor.name.into(),
                found: *value,
                expected: format!("one of {}", list.join(", ")),
                meaning: "a float graph constant".into(),
            });
        }
    }
    let plausible = tail_bound.is_finite() && tail_bound > 0.0 && eps > 0.0 && eps < 1e-2;
    if !plausible {
        return Err(VoiceError::Architecture {
            path: path.into(),
            problem: format!("implausible tail bound {tail_bound} or LayerNorm epsilon {eps}"),
        });
    }
    Ok(GraphConstants { tail_bound: tail_bound as f32, layer_norm_eps: eps as f32 })
}
