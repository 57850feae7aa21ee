//! `nexus-cli convert-voice` on arbitrary input: the ONNX protobuf reader (every message and
//! wire type it decodes, tensor data in raw and typed fields), the mapping of initializers to
//! VITS module names, the graph-constant and hyper-parameter checks, the `.onnx.json` config,
//! and, when all of that passes, the GGUF it writes (to tmpfs, then removed).
//!
//! Input layout: the `.onnx.json` config up to the first NUL, then the bytes of the `.onnx`.
//! Without a NUL the whole input is the ONNX and is only parsed.

use nexus_convert::onnx::parse_model;
use nexus_convert::voice::convert_voice;

pub fn run(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        touch_everything(data);
        return;
    };
    let (config, onnx) = (&data[..split], &data[split + 1..]);
    touch_everything(onnx);
    let onnx_path = crate::write_scratch("voice.onnx", onnx);
    let config_path = crate::write_scratch("voice.onnx.json", config);
    let out = crate::scratch_path("voice.gguf");
    if convert_voice(&onnx_path, &config_path, &out).is_ok() {
        // What was written must load as a voice.
        nexus_runtime::tts::vits::Voice::load(&out).expect("a converted voice loads");
        let _ = std::fs::remove_file(&out);
    }
}

/// Everything a caller may read from a parsed model must be safe too.
fn touch_everything(onnx: &[u8]) {
    let Ok(model) = parse_model(onnx) else { return };
    for t in &model.graph.initializer {
        let _ = (t.shape(), t.numel(), t.f32_bytes(), t.float_values(), t.int_values());
    }
    for n in &model.graph.node {
        let _ = (n.attr("strides"), n.attr_ints("dilations"), n.attr_ints("pads"));
    }
}
