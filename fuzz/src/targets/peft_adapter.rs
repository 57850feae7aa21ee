//! `nexus-cli convert-lora` from arbitrary input: a PEFT folder's `adapter_config.json`, model
//! card `README.md` and `adapter_model.safetensors` through
//! `nexus_convert::lora_peft::convert_peft` against the golden llama base (the config's
//! refusals, the model card's front matter and gguf-py's name heuristics, the safetensors
//! header, pairing, shapes against the base, the Q/K permutation, encoding); when it converts,
//! the written adapter must load (`LoraAdapter::load`).
//!
//! Input layout: `adapter_config.json` up to the first NUL, `README.md` up to the second, then
//! the bytes of `adapter_model.safetensors`.

use nexus_convert::hf::OutType;
use nexus_convert::lora_peft::convert_peft;
use nexus_runtime::adapter::LoraAdapter;

pub fn run(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(config), Some(card), Some(weights)) = (parts.next(), parts.next(), parts.next()) else { return };
    let dir = crate::scratch_path("peft");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    std::fs::write(dir.join("adapter_config.json"), config).expect("scratch config");
    std::fs::write(dir.join("README.md"), card).expect("scratch model card");
    std::fs::write(dir.join("adapter_model.safetensors"), weights).expect("scratch weights");
    let base = crate::data_path("tests/fixtures/golden/llama-spm-gqa.f32.gguf");
    let out = crate::scratch_path("peft.gguf");
    let outtype = [OutType::F32, OutType::F16, OutType::Bf16, OutType::Q8_0][card.len() % 4];
    if convert_peft(&dir, &base, &out, outtype, |_, _| {}).is_ok() {
        if let Err(e) = LoraAdapter::load(&out) {
            panic!("convert-lora wrote an adapter the runtime refuses: {e}");
        }
    }
}
