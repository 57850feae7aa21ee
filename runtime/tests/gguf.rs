//! GGUF reader/writer: compatibility with llama.cpp's `gguf` Python package, and bad input.

use std::path::{Path, PathBuf};

use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufErrorKind, GgufFile, GgufWriter, Value, ValueType};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf").join(name)
}

/// The content of `all_types.gguf`, as scripts/gguf/make_all_types.py writes it.
fn all_types_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("test.u8", Value::U8(200));
    w.set("test.i8", Value::I8(-100));
    w.set("test.u16", Value::U16(60000));
    w.set("test.i16", Value::I16(-30000));
    w.set("test.u32", Value::U32(4_000_000_000));
    w.set("test.i32", Value::I32(-2_000_000_000));
    w.set("test.f32", Value::F32(3.25));
    w.set("test.bool", Value::Bool(true));
    w.set("test.string", Value::String("héllo, wörld ✓".into()));
    w.set("test.u64", Value::U64((1 << 63) + 5));
    w.set("test.i64", Value::I64(-(1 << 62)));
    w.set("test.f64", Value::F64(-1.0e-300));
    w.set("test.array.i32", Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2), Value::I32(3)]));
    w.set("test.array.f32", Value::Array(ValueType::F32, vec![Value::F32(0.5), Value::F32(-1.5)]));
    let strings = ["a", "", "ŧöken"].iter().map(|s| Value::String(s.to_string())).collect();
    w.set("test.array.string", Value::Array(ValueType::String, strings));
    let nested = vec![
        Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(2)]),
        Value::Array(ValueType::I32, vec![Value::I32(3)]),
    ];
    w.set("test.array.nested", Value::Array(ValueType::Array, nested));
    w.set("general.alignment", Value::U32(64));

    let f32_data: Vec<u8> = (0..12).flat_map(|i| (i as f32 - 5.5).to_le_bytes()).collect();
    w.add_tensor("t.f32", &[4, 3], GgmlType::F32, f32_data).unwrap();
    let f16_data: Vec<u8> =
        (0..32).flat_map(|i| half::f16::from_f32(i as f32 / 7.0).to_le_bytes()).collect();
    w.add_tensor("t.f16", &[32], GgmlType::F16, f16_data).unwrap();
    let mut q8 = half::f16::from_f32(1.0).to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    w.add_tensor("t.q8_0", &[32], GgmlType::Q8_0, q8).unwrap();
    w
}

#[test]
fn reads_every_value_type_written_by_gguf_python() {
    let f = GgufFile::open(fixture("all_types.gguf")).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.get("test.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("test.i8"), Some(&Value::I8(-100)));
    assert_eq!(f.get("test.u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("test.i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get_u64("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get("test.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get_f32("test.f32").unwrap(), 3.25);
    assert_eq!(f.get("test.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get_str("test.string").unwrap(), "héllo, wörld ✓");
    assert_eq!(f.get_u64("test.u64").unwrap(), (1 << 63) + 5);
    assert_eq!(f.get("test.i64"), Some(&Value::I64(-(1 << 62))));
    assert_eq!(f.get("test.f64"), Some(&Value::F64(-1.0e-300)));
    assert_eq!(f.get_i64_array("test.array.i32").unwrap(), vec![1, -2, 3]);
    assert_eq!(f.get_f32_array("test.array.f32").unwrap(), vec![0.5, -1.5]);
    assert_eq!(f.get_str_array("test.array.string").unwrap(), vec!["a", "", "ŧöken"]);
    let nested = f.get_array("test.array.nested").unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[0].as_array().unwrap(), &[Value::I32(1), Value::I32(2)]);

    let t = f.tensor_info("t.f32").unwrap();
    assert_eq!((t.dims.as_slice(), t.ty), (&[4u64, 3][..], GgmlType::F32));
    let data = f.tensor_data(t);
    assert_eq!(f32::from_le_bytes(data[4..8].try_into().unwrap()), -4.5);
    let q = f.tensor_info("t.q8_0").unwrap();
    assert_eq!((q.ty, q.n_bytes), (GgmlType::Q8_0, 34));
    assert_eq!(f.tensor_data(q)[2], (-16i8) as u8);
    assert_eq!(f.data_offset % 64, 0);
}

#[test]
fn writes_byte_identical_to_gguf_python() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours.gguf");
    all_types_writer().write(&out).unwrap();
    let ours = std::fs::read(&out).unwrap();
    let theirs = std::fs::read(fixture("all_types.gguf")).unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert!(ours == theirs, "first difference at byte {:?}", ours.iter().zip(&theirs).position(|(a, b)| a != b));
    // No temporary file is left beside the output.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn to_bytes_is_what_write_puts_in_the_file() {
    let w = all_types_writer();
    assert!(w.to_bytes().unwrap() == good_bytes());
    let f = GgufFile::from_bytes("mem.gguf", w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.metadata().len(), GgufFile::open(fixture("all_types.gguf")).unwrap().metadata().len());
    let mut bad = GgufWriter::new();
    bad.set("general.alignment", Value::U32(48));
    assert!(matches!(bad.to_bytes(), Err(GgufErrorKind::BadAlignment(48))));
}

/// Writes `bytes` to a file and returns the error kind opening it gives, with the message.
fn open_err(bytes: &[u8]) -> (GgufErrorKind, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path).err().expect("opening must fail");
    let msg = err.to_string();
    assert!(msg.contains("bad.gguf"), "message must name the file: {msg}");
    (err.kind, msg)
}

fn good_bytes() -> Vec<u8> {
    std::fs::read(fixture("all_types.gguf")).unwrap()
}

#[test]
fn wrong_magic() {
    let mut b = good_bytes();
    b[0..4].copy_from_slice(b"GGML");
    assert!(matches!(open_err(&b).0, GgufErrorKind::BadMagic(_)));
}

#[test]
fn wrong_version() {
    let mut b = good_bytes();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let (kind, msg) = open_err(&b);
    assert!(matches!(kind, GgufErrorKind::BadVersion(1)), "{msg}");
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(open_err(&b).0, GgufErrorKind::BadVersion(4)));
}

#[test]
fn truncated_anywhere_in_the_header_is_an_error() {
    let b = good_bytes();
    let f = GgufFile::open(fixture("all_types.gguf")).unwrap();
    for len in (0..f.data_offset as usize).step_by(7) {
        let (kind, msg) = open_err(&b[..len]);
        assert!(
            matches!(kind, GgufErrorKind::Truncated { .. } | GgufErrorKind::CountTooLarge { .. } | GgufErrorKind::TensorPastEnd { .. }),
            "cut at {len}: {msg}"
        );
    }
}

#[test]
fn tensor_data_past_end_of_file() {
    let b = good_bytes();
    let (kind, msg) = open_err(&b[..b.len() - 40]);
    assert!(matches!(kind, GgufErrorKind::TensorPastEnd { .. }), "{msg}");
    assert!(msg.contains("t.q8_0"), "{msg}");
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut b = good_bytes();
    b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(open_err(&b).0, GgufErrorKind::CountTooLarge { .. }));
    let mut b = good_bytes();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(open_err(&b).0, GgufErrorKind::CountTooLarge { .. }));
}

/// A file with one tensor whose type id and dims we can corrupt.
fn one_tensor_file(dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("weight", dims, ty, data).unwrap();
    w.write(&path).unwrap();
    std::fs::read(&path).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn unknown_tensor_type() {
    let mut b = one_tensor_file(&[8], GgmlType::F32, vec![0; 32]);
    // Tensor info: name, n_dims u32, dims u64…, type u32, offset u64.
    let ty_at = find(&b, b"weight") + 6 + 4 + 8;
    b[ty_at..ty_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let (kind, msg) = open_err(&b);
    assert!(matches!(kind, GgufErrorKind::UnknownTensorType { ty: 77, .. }), "{msg}");
    assert!(msg.contains("weight"));
}

#[test]
fn shape_overflow_and_bad_dims() {
    let b = one_tensor_file(&[8], GgmlType::F32, vec![0; 32]);
    let dims_at = find(&b, b"weight") + 6;
    let mut zero_dims = b.clone();
    zero_dims[dims_at..dims_at + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(open_err(&zero_dims).0, GgufErrorKind::BadTensor { .. }));
    let mut huge = b.clone();
    huge[dims_at + 4..dims_at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    let (kind, msg) = open_err(&huge);
    assert!(matches!(kind, GgufErrorKind::BadTensor { .. } | GgufErrorKind::TensorPastEnd { .. }), "{msg}");
}

#[test]
fn bad_alignment() {
    let mut b = good_bytes();
    let at = find(&b, b"general.alignment") + "general.alignment".len() + 4;
    b[at..at + 4].copy_from_slice(&48u32.to_le_bytes());
    assert!(matches!(open_err(&b).0, GgufErrorKind::BadAlignment(48)));
}

#[test]
fn missing_and_mistyped_keys_name_the_key() {
    let f = GgufFile::open(fixture("all_types.gguf")).unwrap();
    let e = f.get_str("llama.block_count").unwrap_err();
    assert!(e.to_string().contains("llama.block_count") && e.to_string().contains("all_types.gguf"));
    let e = f.get_str("test.u32").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::WrongType { .. }), "{e}");
    let e = f.tensor_checked("t.f32", &[3, 4]).unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::ShapeMismatch { .. }), "{e}");
}

#[test]
fn missing_file_names_it() {
    let err = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}
