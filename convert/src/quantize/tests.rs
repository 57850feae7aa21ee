use super::*;
use nexus_runtime::gguf::GgufWriter;

/// A llama-shaped file with `n_layer` layers of width `d` (F32), enough for the type rules.
fn write_model(path: &Path, d: u64, n_layer: u64, tied: bool) {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.file_type", Value::U32(0));
    w.set("llama.block_count", Value::U32(n_layer as u32));
    w.set("llama.attention.head_count", Value::U32(4));
    w.set("llama.attention.head_count_kv", Value::U32(2));
    let mut add = |name: String, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let vals: Vec<u8> = (0..n)
            .flat_map(|i| (((i * 7919) % 113) as f32 / 113.0 - 0.5).to_le_bytes())
            .collect();
        w.add_tensor(name, dims, GgmlType::F32, vals).unwrap();
    };
    add("token_embd.weight".into(), &[d, 8]);
    for i in 0..n_layer {
        add(format!("blk.{i}.attn_norm.weight"), &[d]);
        add(format!("blk.{i}.attn_v.weight"), &[d, d / 2]);
        add(format!("blk.{i}.ffn_down.weight"), &[d, d]);
    }
    add("output_norm.weight".into(), &[d]);
    if !tied {
        add("output.weight".into(), &[d, 8]);
    }
    w.write(path).unwrap();
}

#[test]
fn type_names_parse_case_insensitively() {
    assert_eq!(QuantType::parse("Q4_K_M"), Some(QuantType::Q4_K_M));
    assert_eq!(QuantType::parse("q4_k"), Some(QuantType::Q4_K_M));
    assert_eq!(QuantType::Q4_K_M.ftype(), 15);
    assert_eq!(QuantType::BF16.ftype(), 32);
    let err = QuantType::from_name("q9_9").unwrap_err().to_string();
    assert!(err.contains("q9_9") && err.contains("q4_k_m"), "{err}");
}

#[test]
fn plan_orders_by_layer_and_bumps_like_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path, 256, 12, false);
    let file = GgufFile::open(&path).unwrap();
    let (order, types, n_fallback) = plan(&file, QuantType::Q4_K_M).unwrap();
    let names: Vec<&str> = order
        .iter()
        .map(|&i| file.tensors()[i].name.as_str())
        .collect();
    // Non-layer tensors first (sorted by name), then blk.0, blk.1, … blk.10, blk.11.
    assert_eq!(
        &names[..3],
        ["output.weight", "output_norm.weight", "token_embd.weight"]
    );
    assert_eq!(names[3], "blk.0.attn_norm.weight");
    assert_eq!(names.last(), Some(&"blk.11.ffn_down.weight"));
    assert_eq!(n_fallback, 0);
    let ty = |n: &str| types[names.iter().position(|x| *x == n).unwrap()];
    assert_eq!(ty("output.weight"), GgmlType::Q6_K);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    // use_more_bits(i, 12): i < 1, i >= 10, or (i - 1) % 3 == 2.
    let bumped: Vec<u64> = (0..12)
        .filter(|i| ty(&format!("blk.{i}.attn_v.weight")) == GgmlType::Q6_K)
        .collect();
    assert_eq!(bumped, [0, 3, 6, 9, 10, 11]);
}

#[test]
fn rows_not_multiple_of_256_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path, 576, 2, true);
    let file = GgufFile::open(&path).unwrap();
    let (order, types, n_fallback) = plan(&file, QuantType::Q4_K_M).unwrap();
    assert!(n_fallback > 0);
    for (&i, &t) in order.iter().zip(&types) {
        let name = &file.tensors()[i].name;
        let want = if name.ends_with("norm.weight") {
            GgmlType::F32
        } else if name == "token_embd.weight"
            || (name.starts_with("blk.1.")
                && (name.contains("ffn_down") || name.contains("attn_v")))
        {
            // Tied output: 576 % 256 != 0 gives Q8_0; use_more_bits(1, 2) bumps layer 1's
            // attn_v/ffn_down to Q6_K, which falls back to Q8_0.
            GgmlType::Q8_0
        } else {
            GgmlType::Q5_0
        };
        assert_eq!(t, want, "{name}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path, 256, 1, true);
    let same = quantize_file(&path, &path, QuantType::Q8_0, Some(1), |_| {}).unwrap_err();
    assert!(matches!(same, QuantizeError::SameFile { .. }), "{same}");
    let missing = dir.path().join("missing.gguf");
    let err = quantize_file(
        &missing,
        &dir.path().join("o.gguf"),
        QuantType::Q8_0,
        Some(1),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let err = quantize_file(
        &junk,
        &dir.path().join("o.gguf"),
        QuantType::Q8_0,
        Some(1),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("junk.gguf"), "{err}");
    assert!(!dir.path().join("o.gguf").exists());
}

#[test]
fn quantizes_and_requantizes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.gguf"),
        dir.path().join("b.gguf"),
        dir.path().join("c.gguf"),
    );
    write_model(&a, 256, 2, false);
    let s = quantize_file(&a, &b, QuantType::Q8_0, Some(2), |_| {}).unwrap();
    assert_eq!(s.n_requantized, 0);
    assert!(s.bytes_out < s.bytes_in);
    let out = GgufFile::open(&b).unwrap();
    assert_eq!(
        out.get("general.file_type").and_then(|v| v.as_u64()),
        Some(7)
    );
    assert_eq!(
        out.get("general.quantization_version")
            .and_then(|v| v.as_u64()),
        Some(2)
    );
    let keys: Vec<&str> = out.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[keys.len() - 2..],
        ["general.quantization_version", "general.file_type"]
    );
    let s = quantize_file(&b, &c, QuantType::Q4_K_M, None, |_| {}).unwrap();
    assert!(s.n_requantized > 0);
    let out = GgufFile::open(&c).unwrap();
    assert_eq!(
        out.tensor_info("blk.1.ffn_down.weight").unwrap().ty,
        GgmlType::Q6_K
    );
}

/// The names in `dir`, sorted: what a failed run must leave is exactly what was there before.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn failure_midway_leaves_no_file_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.gguf");
    write_model(&input, 256, 3, false);
    let out = dir.path().join("o.gguf");
    let before = listing(dir.path());

    // An error while the writer is mid-file (three tensors already written to the temp file).
    let mut reported = 0;
    let err = quantize_file_with(
        &input,
        &out,
        QuantType::Q4_K_M,
        Some(2),
        |_| reported += 1,
        |k| match k {
            3 => {
                // The partial output exists at this point, as a temporary file beside `out`.
                let now = listing(dir.path());
                assert_eq!(now.len(), before.len() + 1, "{now:?}");
                assert!(!out.exists());
                Err(QuantizeError::Model {
                    path: input.clone(),
                    reason: "injected failure".into(),
                })
            }
            _ => Ok(()),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(reported, 3);
    assert!(!out.exists());
    assert_eq!(listing(dir.path()), before);

    // An older file under the final name survives a failed run untouched.
    std::fs::write(&out, b"previous model").unwrap();
    let err = quantize_file_with(
        &input,
        &out,
        QuantType::Q8_0,
        None,
        |_| {},
        |k| {
            if k == 5 {
                Err(QuantizeError::Model {
                    path: input.clone(),
                    reason: "injected failure".into(),
                })
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    std::fs::remove_file(&out).unwrap();
    assert_eq!(listing(dir.path()), before);

    // Every tensor written, then the final rename fails (the name is a non-empty folder).
    let blocker = dir.path().join("blocked.gguf");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    let before = listing(dir.path());
    let mut reported = 0;
    let err = quantize_file(&input, &blocker, QuantType::Q8_0, Some(1), |_| {
        reported += 1
    })
    .unwrap_err();
    assert!(matches!(err, QuantizeError::Gguf(_)), "{err}");
    assert_eq!(reported, GgufFile::open(&input).unwrap().tensors().len());
    assert_eq!(listing(dir.path()), before);
    assert_eq!(listing(&blocker), ["keep"]);

    // A destination folder that does not exist: nothing is created anywhere.
    let err = quantize_file(
        &input,
        &dir.path().join("no/such/dir/o.gguf"),
        QuantType::Q8_0,
        None,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("o.gguf"), "{err}");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn chunked_conversion_matches_whole_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path, 256, 1, false);
    let file = GgufFile::open(&path).unwrap();
    let info = file.tensor_info("blk.0.ffn_down.weight").unwrap();
    let row = 256 * 4;
    let convert = |chunk_bytes: usize, to: GgmlType| {
        let mut source = TensorSource::open(&path, &file).unwrap();
        source.chunk_bytes = chunk_bytes;
        convert_tensor(&mut source, info, to).unwrap()
    };
    for to in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let whole = convert(usize::MAX, to);
        // One row per step, a part of a row (rounded up to one), and uneven chunks of 3 rows.
        for chunk in [row, 100, 3 * row + 5] {
            assert_eq!(convert(chunk, to), whole, "{to} in chunks of {chunk} bytes");
        }
    }
    // The same bytes as converting straight from the map.
    let src = file.tensor_data(info);
    let mut want = vec![0u8; GgmlType::Q8_0.row_size(256).unwrap() as usize * 256];
    let mut row_f32 = vec![0f32; 256];
    for (d, s) in want
        .chunks_mut(GgmlType::Q8_0.row_size(256).unwrap() as usize)
        .zip(src.chunks(row))
    {
        dequantize_row(GgmlType::F32, s, &mut row_f32).unwrap();
        quantize_row(GgmlType::Q8_0, &row_f32, d).unwrap();
    }
    assert_eq!(convert(row, GgmlType::Q8_0), want);
}
