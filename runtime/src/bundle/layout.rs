//! How a component file is cut into tensor data and "rest", and put back together.
//!
//! A GGUF file is its header, then tensor data at offsets the header gives, with padding (or
//! anything else) between and after them. The bundle stores each tensor's bytes as a bundle
//! tensor and every byte no tensor covers — the header first — in file order as the rest.
//! Walking the same [`plan`] over the file (to split it) or over the rest and the tensors (to
//! join them) gives the file back exactly, whatever its padding holds, even when tensors
//! overlap.

use std::io::Write;

/// One step of walking a file from its first byte to its last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next `len` bytes are not tensor data: they come from (or go to) the rest.
    Rest { len: u64 },
    /// The next bytes are tensor `index`'s data from byte `skip` of it to its end (`skip > 0`
    /// where it overlaps a tensor already written).
    Tensor { index: usize, skip: u64 },
}

/// The walk over a file of `size` bytes whose tensors occupy `spans` (start, length): each
/// tensor in order of its start, the gaps between them as rest. Errors when a span does not
/// lie within the file.
pub fn plan(spans: &[(u64, u64)], size: u64) -> Result<Vec<Step>, String> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].0, std::cmp::Reverse(spans[i].1)));
    let mut steps = Vec::with_capacity(2 * spans.len() + 1);
    let mut pos = 0u64;
    for i in order {
        let (start, len) = spans[i];
        let end = start.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
            format!("tensor #{i} at [{start}, +{len}) lies past the end of the {size}-byte file")
        })?;
        if start > pos {
            steps.push(Step::Rest { len: start - pos });
            pos = start;
        }
        if end > pos {
            steps.push(Step::Tensor { index: i, skip: pos - start });
            pos = end;
        }
    }
    if size > pos {
        steps.push(Step::Rest { len: size - pos });
    }
    Ok(steps)
}

/// Bytes of the rest a plan takes.
pub fn rest_len(steps: &[Step]) -> u64 {
    steps.iter().map(|s| if let Step::Rest { len } = s { *len } else { 0 }).sum()
}

/// Splitting: the rest of `file` (its bytes outside every tensor) under `steps`.
pub fn split_rest(file: &[u8], steps: &[Step], spans: &[(u64, u64)]) -> Vec<u8> {
    let mut rest = Vec::with_capacity(rest_len(steps) as usize);
    let mut pos = 0usize;
    for s in steps {
        match *s {
            Step::Rest { len } => {
                rest.extend_from_slice(&file[pos..pos + len as usize]);
                pos += len as usize;
            }
            Step::Tensor { index, skip } => pos += (spans[index].1 - skip) as usize,
        }
    }
    rest
}

/// Joining: writes the file `steps` describe from its `rest` and its tensors' data, which
/// must have the lengths the plan was made with. Returns the bytes written.
pub fn join(steps: &[Step], rest: &[u8], tensors: &[&[u8]], out: &mut dyn Write) -> std::io::Result<u64> {
    let mut rest_pos = 0usize;
    let mut written = 0u64;
    for s in steps {
        let bytes = match *s {
            Step::Rest { len } => {
                let b = &rest[rest_pos..rest_pos + len as usize];
                rest_pos += len as usize;
                b
            }
            Step::Tensor { index, skip } => &tensors[index][skip as usize..],
        };
        out.write_all(bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splitting then joining gives the file back, with gaps, overlaps and trailing bytes.
    #[test]
    fn split_then_join_is_the_identity() {
        let file: Vec<u8> = (0..100u8).collect();
        let spans = [(40, 10), (10, 20), (20, 5), (45, 15), (60, 0), (90, 10)];
        let steps = plan(&spans, 100).unwrap();
        let rest = split_rest(&file, &steps, &spans);
        assert_eq!(rest.len() as u64, rest_len(&steps));
        let expected_rest: Vec<u8> = (0..10u8).chain(30..40).chain(60..90).collect();
        assert_eq!(rest, expected_rest);
        let data: Vec<&[u8]> = spans.iter().map(|&(s, l)| &file[s as usize..(s + l) as usize]).collect();
        let mut out = Vec::new();
        assert_eq!(join(&steps, &rest, &data, &mut out).unwrap(), 100);
        assert_eq!(out, file);
    }

    #[test]
    fn a_span_past_the_end_is_an_error() {
        assert!(plan(&[(90, 20)], 100).unwrap_err().contains("past the end"));
        assert!(plan(&[(u64::MAX, 2)], 100).is_err());
    }
}
