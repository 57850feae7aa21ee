//! The reader on crafted buffers: well-formed messages, and each way a buffer can be broken.

use crate::protobuf::{Reader, WireError};
use super::*;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn len_field(field: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn varint_field(field: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3, out);
    varint(v, out);
}

fn tensor(name: &str, dims: &[i64], data_type: i32, raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    let mut packed = Vec::new();
    for &d in dims {
        varint(d as u64, &mut packed);
    }
    len_field(1, &packed, &mut t);
    varint_field(2, data_type as u64, &mut t);
    len_field(8, name.as_bytes(), &mut t);
    len_field(9, raw, &mut t);
    t
}

fn model(graph: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    varint_field(1, 8, &mut m);
    len_field(7, graph, &mut m);
    m
}

#[test]
fn parses_a_node_with_attributes_and_an_initializer() {
    let mut node = Vec::new();
    len_field(1, b"x", &mut node);
    len_field(1, b"w", &mut node);
    len_field(2, b"y", &mut node);
    len_field(3, b"/dec/conv_pre/Conv", &mut node);
    len_field(4, b"Conv", &mut node);
    let mut attr = Vec::new();
    len_field(1, b"dilations", &mut attr);
    let mut packed = Vec::new();
    varint(3, &mut packed);
    len_field(8, &packed, &mut attr);
    varint_field(20, 7, &mut attr);
    len_field(5, &attr, &mut node);
    let mut alpha = Vec::new();
    len_field(1, b"alpha", &mut alpha);
    alpha.push(2 << 3 | 5);
    alpha.extend_from_slice(&0.1f32.to_le_bytes());
    varint_field(20, 1, &mut alpha);
    len_field(5, &alpha, &mut node);
    // a negative int attribute is a 10-byte sign-extended varint
    let mut axis = Vec::new();
    len_field(1, b"axis", &mut axis);
    varint_field(3, (-1i64) as u64, &mut axis);
    varint_field(20, 2, &mut axis);
    len_field(5, &axis, &mut node);

    let mut graph = Vec::new();
    len_field(1, &node, &mut graph);
    let raw: Vec<u8> = [1.0f32, -2.0, 3.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    len_field(5, &tensor("w", &[3, 1, 1], 1, &raw), &mut graph);
    let mut vi = Vec::new();
    len_field(1, b"x", &mut vi);
    len_field(11, &vi, &mut graph);

    let buf = model(&graph);
    let m = parse_model(&buf).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.graph.input, vec!["x"]);
    let n = &m.graph.node[0];
    assert_eq!((n.name, n.op_type), ("/dec/conv_pre/Conv", "Conv"));
    assert_eq!(n.input, vec!["x", "w"]);
    assert_eq!(n.attr_ints("dilations"), Some(vec![3]));
    assert!(matches!(n.attr("alpha"), Some(AttrValue::Float(a)) if *a == 0.1));
    assert!(matches!(n.attr("axis"), Some(AttrValue::Int(-1))));
    let t = &m.graph.initializer[0];
    assert_eq!(t.shape().unwrap(), vec![3, 1, 1]);
    assert_eq!(t.f32_bytes().unwrap().as_ref(), raw.as_slice());
    assert_eq!(t.float_values().unwrap(), vec![1.0, -2.0, 3.5]);
}

#[test]
fn typed_int64_data_and_unpacked_dims() {
    let mut t = Vec::new();
    varint_field(1, 2, &mut t); // dims, unpacked
    varint_field(2, 7, &mut t);
    let mut packed = Vec::new();
    varint((-5i64) as u64, &mut packed);
    varint(9, &mut packed);
    len_field(7, &packed, &mut t);
    let mut graph = Vec::new();
    len_field(5, &t, &mut graph);
    let buf = model(&graph);
    let m = parse_model(&buf).unwrap();
    assert_eq!(m.graph.initializer[0].int_values().unwrap(), vec![-5, 9]);
}

#[test]
fn varint_overflow_is_an_error() {
    let buf = [0xffu8; 11];
    let err = Reader::new(&buf).varint("test").unwrap_err();
    assert!(matches!(err, WireError::VarintOverflow { .. }), "{err}");
    // 10 bytes whose last carries more than the 64th bit
    let mut buf = vec![0xffu8; 9];
    buf.push(0x02);
    assert!(matches!(Reader::new(&buf).varint("test"), Err(WireError::VarintOverflow { .. })));
    // u64::MAX itself is fine
    let mut buf = vec![0xffu8; 9];
    buf.push(0x01);
    assert_eq!(Reader::new(&buf).varint("test").unwrap(), u64::MAX);
}

#[test]
fn truncated_varint_is_an_error() {
    let buf = [0x08u8, 0x80];
    assert!(matches!(parse_model(&buf), Err(OnnxError::Wire(WireError::Truncated { .. }))));
}

#[test]
fn length_past_the_end_is_an_error_without_allocating() {
    // graph field claiming 2^60 bytes
    let mut buf = Vec::new();
    varint_field(1, 8, &mut buf);
    varint(7 << 3 | 2, &mut buf);
    varint(1 << 60, &mut buf);
    buf.extend_from_slice(b"abc");
    let err = parse_model(&buf).unwrap_err();
    assert!(matches!(err, OnnxError::Wire(WireError::LengthPastEnd { length, left: 3, .. }) if length == 1 << 60), "{err}");
}

#[test]
fn wrong_wire_type_is_an_error() {
    // graph (field 7) sent as a varint
    let mut buf = Vec::new();
    varint_field(1, 8, &mut buf);
    varint_field(7, 1, &mut buf);
    let err = parse_model(&buf).unwrap_err();
    assert!(matches!(err, OnnxError::Wire(WireError::WireType { field: 7, .. })), "{err}");
    // group wire types are refused
    assert!(matches!(parse_model(&[0x0b]), Err(OnnxError::Wire(WireError::Malformed { .. }))));
}

#[test]
fn external_data_is_refused() {
    let mut t = tensor("big", &[4], 1, &[]);
    varint_field(14, 1, &mut t);
    let mut graph = Vec::new();
    len_field(5, &t, &mut graph);
    let err = parse_model(&model(&graph)).unwrap_err();
    assert!(matches!(&err, OnnxError::ExternalData { name } if name == "big"), "{err}");
}

#[test]
fn raw_data_size_must_match_the_shape() {
    let mut graph = Vec::new();
    len_field(5, &tensor("w", &[1 << 40, 1 << 40], 1, &[0; 8]), &mut graph);
    let buf = model(&graph);
    let m = parse_model(&buf).unwrap();
    assert!(matches!(m.graph.initializer[0].f32_bytes(), Err(OnnxError::BadTensor { .. })));
    let mut graph = Vec::new();
    len_field(5, &tensor("w", &[3], 1, &[0; 8]), &mut graph);
    let buf = model(&graph);
    let m = parse_model(&buf).unwrap();
    assert!(m.graph.initializer[0].f32_bytes().is_err());
    let mut graph = Vec::new();
    len_field(5, &tensor("w", &[-1], 1, &[]), &mut graph);
    let buf = model(&graph);
    assert!(parse_model(&buf).unwrap().graph.initializer[0].shape().is_err());
}

#[test]
fn not_onnx_is_reported() {
    // valid protobuf, no ir_version / graph
    assert!(matches!(parse_model(&[]), Err(OnnxError::NotOnnx(_))));
    let mut buf = Vec::new();
    varint_field(1, 8, &mut buf);
    assert!(matches!(parse_model(&buf), Err(OnnxError::NotOnnx(_))));
    // a GGUF header is not protobuf that makes sense
    assert!(parse_model(b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00").is_err());
}
