//! Writes one of the quantizer's reference inputs: `write_tiny NAME OUT.gguf`, NAME one of
//! `nexus_tests::quantize_models::QUANTIZE_MODELS`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: write_tiny NAME OUT.gguf");
        std::process::exit(2);
    };
    let Some(model) = nexus_tests::quantize_models::quantize_model(name) else {
        eprintln!(
            "unknown model {name:?}; known: {:?}",
            nexus_tests::quantize_models::QUANTIZE_MODELS
        );
        std::process::exit(2);
    };
    model.write(std::path::Path::new(out));
}
