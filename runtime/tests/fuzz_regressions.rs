//! Limits of the parsers of untrusted input (issue 9, docs/RELIABILITY.md) and regression
//! tests for what the hardening found. A finding of scripts/fuzz.sh gets its minimized input
//! in tests/fixtures/fuzz/ and a test here or beside the code it concerns.

use std::path::{Path, PathBuf};

use nexus_runtime::chat_template::{ChatTemplate, ChatTemplateError, Message, MAX_RENDER_BYTES};
use nexus_runtime::gguf::{GgufErrorKind, GgufFile, GgufWriter, Value, ValueType, MAX_METADATA_VALUES};
use nexus_runtime::tokenizer::Tokenizer;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A GGUF v3 header: counts, then raw metadata bytes.
fn header(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn kv_array(key: &str, elem: ValueType, n: u64) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
    b.extend_from_slice(&(elem as u32).to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b
}

fn open_err(path: &Path) -> GgufErrorKind {
    match GgufFile::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => {
            assert_eq!(e.path, path, "the error names the file");
            e.kind
        }
    }
}

#[test]
fn a_header_claiming_2_pow_60_tensors_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "tensors.gguf", &header(1 << 60, 0, &[0; 64]));
    assert!(matches!(open_err(&p), GgufErrorKind::CountTooLarge { count, .. } if count == 1 << 60));
    let p = write(dir.path(), "kv.gguf", &header(0, 1 << 60, &[0; 64]));
    assert!(matches!(open_err(&p), GgufErrorKind::CountTooLarge { count, .. } if count == 1 << 60));
}

#[test]
fn a_2_pow_60_element_array_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    for elem in [ValueType::U8, ValueType::String, ValueType::Array] {
        let mut body = kv_array("tokenizer.ggml.tokens", elem, 1 << 60);
        body.extend_from_slice(&[0; 256]);
        let p = write(dir.path(), "array.gguf", &header(0, 1, &body));
        assert!(matches!(open_err(&p), GgufErrorKind::CountTooLarge { count, .. } if count == 1 << 60), "{elem:?}");
    }
    // The same inside a nested array: the inner count is checked against what remains too.
    let mut body = kv_array("nested", ValueType::Array, 1);
    body.extend_from_slice(&(ValueType::U64 as u32).to_le_bytes());
    body.extend_from_slice(&(1u64 << 60).to_le_bytes());
    body.extend_from_slice(&[0; 64]);
    let p = write(dir.path(), "nested.gguf", &header(0, 1, &body));
    assert!(matches!(open_err(&p), GgufErrorKind::CountTooLarge { .. }));
}

#[test]
fn metadata_values_are_capped_so_one_byte_values_cannot_take_32_times_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Two u8 arrays that fit the file but together exceed the cap.
    let half = MAX_METADATA_VALUES / 2 + 1;
    let mut body = kv_array("a", ValueType::U8, half);
    body.resize(body.len() + half as usize, 7);
    body.extend_from_slice(&kv_array("b", ValueType::U8, half));
    body.resize(body.len() + half as usize, 7);
    let p = write(dir.path(), "many.gguf", &header(0, 2, &body));
    assert!(matches!(open_err(&p), GgufErrorKind::TooManyValues { ref key, .. } if key == "b"));
}

#[test]
fn tensor_offsets_past_the_end_and_overflowing_shapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("t", &[32], nexus_kernels::GgmlType::F32, vec![0u8; 128]).unwrap();
    let p = dir.path().join("ok.gguf");
    w.write(&p).unwrap();
    let good = std::fs::read(&p).unwrap();
    let at = |needle: &[u8]| good.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    // Tensor info after the name "t": n_dims u32, dims, type u32, offset u64.
    let info = at(b"\x01\x00\x00\x00\x00\x00\x00\x00t");
    for (field, value) in [(info + 4, u64::MAX), (info + 4, 1 << 40), (info + 16, u64::MAX - 31)] {
        let mut bad = good.clone();
        bad[field..field + 8].copy_from_slice(&value.to_le_bytes());
        let p = write(dir.path(), "bad.gguf", &bad);
        assert!(
            matches!(open_err(&p), GgufErrorKind::TensorPastEnd { .. } | GgufErrorKind::BadTensor { .. }),
            "field at {field} = {value}"
        );
    }
}

#[test]
fn a_chat_template_that_never_ends_runs_out_of_fuel() {
    let src = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let e = ChatTemplate::from_jinja(src, "<s>", "</s>").unwrap_err();
    assert!(matches!(&e, ChatTemplateError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("template instructions"), "{e}");
}

#[test]
fn a_chat_template_with_a_huge_output_is_cut_off() {
    let src = "{% set s = 'x' * 10000000 %}{% for i in range(100) %}{{ s }}{% endfor %}";
    let e = ChatTemplate::from_jinja(src, "<s>", "</s>").unwrap_err();
    assert!(matches!(&e, ChatTemplateError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains(&MAX_RENDER_BYTES.to_string()), "{e}");
}

#[test]
fn the_template_limits_leave_room_for_long_real_conversations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat_templates");
    let src = std::fs::read_to_string(root.join("Qwen-Qwen3-0.6B.jinja")).unwrap();
    let t = ChatTemplate::from_jinja(&src, "", "<|im_end|>").unwrap();
    let mut messages = vec![Message::new("system", "Be brief.")];
    for i in 0..5000 {
        messages.push(Message::new(if i % 2 == 0 { "user" } else { "assistant" }, format!("message number {i}")));
    }
    let text = t.render(&messages, true).unwrap();
    assert!(text.contains("message number 4999"));
}

/// Found by review: llama.cpp appends the whole token text after every char outside GPT-2's
/// byte alphabet, so one 60 kB token decoded to 1.2 GB. The text now follows the first only.
#[test]
fn a_bpe_token_of_unknown_chars_decodes_to_linear_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    let big = "中".repeat(20_000);
    let tokens = ["a", "b", big.as_str()].iter().map(|t| Value::String(t.to_string())).collect();
    w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens));
    w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![Value::String("a b".into())]));
    let p = dir.path().join("vocab.gguf");
    w.write(&p).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
    let piece = tok.token_to_piece(2, false);
    assert!(piece.len() < 1 << 20, "{} bytes", piece.len());
    let text = String::from_utf8(piece).unwrap();
    assert!(text.starts_with(&format!("[UNK_BYTE_0xe4b8ad{big}]")), "{}", &text[..40]);
    assert_eq!(text.matches("[UNK_BYTE_0xe4b8ad").count(), 20_000);
}

/// The `chat_template` finding (tests/fixtures/fuzz/chat_template/deep-nesting.bin): a list
/// nested 180 000 deep killed the process with a stack overflow when minijinja dropped it. Test
/// threads have a 2 MiB stack, so before the fix this died far earlier than the main thread.
#[test]
fn a_deeply_nested_template_value_neither_overflows_the_stack_nor_runs_unbounded() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let input = std::fs::read(root.join("tests/fixtures/fuzz/chat_template/deep-nesting.bin")).unwrap();
    // The fuzz target's layout: a flag byte, the template up to NUL, then role NUL content.
    let source = std::str::from_utf8(&input[1..input.iter().position(|&b| b == 0).unwrap()]).unwrap();
    assert!(source.contains("[ns.x]"));
    let tmpl = ChatTemplate::from_jinja(source, "<s>", "</s>").unwrap();
    assert_eq!(tmpl.render(&[Message::new("user", "hi")], true).unwrap(), "x");
    // As deep as the fuel allows: stopped by the fuel, not by the stack.
    let deeper = source.replace("range(9000)", "range(100000)").replace("range(20)", "range(10)");
    match ChatTemplate::from_jinja(&deeper, "<s>", "</s>") {
        Err(ChatTemplateError::TooLarge { limit, .. }) => assert!(limit.contains("instructions"), "{limit}"),
        other => panic!("expected the fuel to run out, got {other:?}"),
    }
}
