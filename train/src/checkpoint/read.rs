//! Reading a checkpoint back: every tensor checked (presence, dtype, shape) against the saved
//! config before anything is allocated, so a damaged or foreign file is an error naming the
//! file and the tensor, never a panic or an allocation the file cannot back.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{io_err, tensor_shapes, CheckpointError, ExtraEntry, STATE};
use crate::student::{Params, StudentConfig};

fn parse<'b>(path: &Path, bytes: &'b [u8]) -> Result<SafeTensors<'b>, CheckpointError> {
    SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format {
        path: path.into(),
        what: format!("safetensors: {e:?}"),
    })
}

/// Tensor `name` of `st`, checked to be F32 of `shape` (safetensors has checked that its data
/// lies within the file, so the size is backed by the file).
fn tensor<'b>(
    path: &Path,
    st: &SafeTensors<'b>,
    name: &str,
    shape: &[usize],
) -> Result<TensorView<'b>, CheckpointError> {
    let bad = |what: String| CheckpointError::Tensor {
        path: path.into(),
        name: name.into(),
        what,
    };
    let t = st.tensor(name).map_err(|_| bad("missing".into()))?;
    if t.dtype() != Dtype::F32 {
        return Err(bad(format!("dtype {:?}, expected F32", t.dtype())));
    }
    if t.shape() != shape {
        return Err(bad(format!("shape {:?}, expected {shape:?}", t.shape())));
    }
    Ok(t)
}

fn copy_f32(src: &TensorView, dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.data().chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Reads one `Params` per prefix from `path` (names `<prefix><gguf name>`), refusing any
/// tensor the config does not imply.
pub(super) fn read_params(
    path: &Path,
    cfg: &StudentConfig,
    prefixes: &[&str],
) -> Result<Vec<Params>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = parse(path, &bytes)?;
    // Count before building the expected list: a corrupt n_layer must not make us allocate.
    let per_set = cfg
        .n_layer
        .checked_mul(9)
        .and_then(|n| n.checked_add(if cfg.tied { 2 } else { 3 }));
    let expected = per_set.and_then(|n| n.checked_mul(prefixes.len()));
    if expected != Some(st.len()) {
        // Name the odd tensor when the counts are close (a tied/untied mix-up, a lost tensor);
        // a wildly different count (a corrupt n_layer) is reported as counts, without
        // building the list of names it implies.
        let close = expected.is_some_and(|n| n <= st.len().saturating_add(64));
        if let Some(e) = close
            .then(|| odd_tensor(path, &st, cfg, prefixes))
            .flatten()
        {
            return Err(e);
        }
        return Err(CheckpointError::Format {
            path: path.into(),
            what: format!(
                "{} tensors, the config (n_layer {}, tied {}) implies {}",
                st.len(),
                cfg.n_layer,
                cfg.tied,
                expected.map_or("more than can exist".into(), |n| n.to_string())
            ),
        });
    }
    let shapes = tensor_shapes(cfg);
    let mut out = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        // Every tensor checked before anything is allocated.
        let views = shapes
            .iter()
            .map(|(name, shape)| tensor(path, &st, &format!("{prefix}{name}"), shape))
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = Params::zeros(cfg);
        for (dst, src) in p.tensors_mut().into_iter().zip(&views) {
            copy_f32(src, dst);
        }
        out.push(p);
    }
    Ok(out)
}

/// The first expected tensor missing from `st`, else the first one `st` holds that the config
/// does not imply.
fn odd_tensor(
    path: &Path,
    st: &SafeTensors,
    cfg: &StudentConfig,
    prefixes: &[&str],
) -> Option<CheckpointError> {
    let expected: Vec<String> = prefixes
        .iter()
        .flat_map(|p| {
            tensor_shapes(cfg)
                .into_iter()
                .map(move |(n, _)| format!("{p}{n}"))
        })
        .collect();
    let err = |name: &str, what: &str| CheckpointError::Tensor {
        path: path.into(),
        name: name.into(),
        what: what.into(),
    };
    if let Some(name) = expected.iter().find(|n| st.tensor(n).is_err()) {
        return Some(err(name, "missing"));
    }
    let known: std::collections::HashSet<&String> = expected.iter().collect();
    let mut names: Vec<&String> = st
        .names()
        .into_iter()
        .filter(|n| !known.contains(n))
        .collect();
    names.sort();
    let first = names.first()?;
    Some(if first.ends_with("output.weight") {
        err(
            first,
            "unexpected: the config says the head is tied to the embedding",
        )
    } else {
        err(first, "unexpected: the config implies no such tensor")
    })
}

pub(super) fn read_extra(
    path: &Path,
    entries: &[ExtraEntry],
) -> Result<Vec<(String, Vec<f32>)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = parse(path, &bytes)?;
    if st.len() != entries.len() {
        return Err(CheckpointError::Format {
            path: path.into(),
            what: format!("{} tensors, {STATE} lists {}", st.len(), entries.len()),
        });
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let view = tensor(path, &st, &e.name, &[e.len])?;
        let mut data = vec![0f32; e.len];
        copy_f32(&view, &mut data);
        out.push((e.name.clone(), data));
    }
    Ok(out)
}
