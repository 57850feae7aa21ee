//! The converter's reading of an HF directory: `config.json` and a safetensors shard (its
//! header, offsets, dtypes and shapes checked against the config), then every tensor's
//! GGUF bytes produced as `nexus-cli convert` would, without writing a file.
//!
//! Input layout: `config.json` up to the first NUL, then the bytes of `model.safetensors`.

use nexus_convert::hf::{check_tensors, OutType};

pub fn run(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else { return };
    let (config, shard) = (&data[..split], &data[split + 1..]);
    let dir = crate::scratch_path("hf");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    std::fs::write(dir.join("config.json"), config).expect("scratch config");
    std::fs::write(dir.join("model.safetensors"), shard).expect("scratch shard");
    let outtype = [OutType::F32, OutType::F16, OutType::Bf16, OutType::Q8_0][config.len() % 4];
    let _ = check_tensors(&dir, outtype);
}
