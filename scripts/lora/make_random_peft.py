#!/usr/bin/env python3
"""Writes a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) with
random A and nonzero random B for a llama-architecture model of the given shape, for timing
adapters (docs/PERF.md: decode with a rank-16 adapter on all seven projections). Convert it
with `nexus-cli convert-lora OUT --base MODEL.gguf -o adapter.gguf`.

    scripts/lora/make_random_peft.py OUT --layers 30 --d-model 576 --d-ff 1536 \
        --heads 9 --kv-heads 3 [--rank 16] [--alpha 32] [--seed 0]

Needs numpy only (the safetensors file is written by hand: an 8-byte little-endian header
length, the JSON header, then the tensors' bytes).
"""
import argparse
import json
import struct
from pathlib import Path

import numpy as np


def write_safetensors(path: Path, tensors: dict) -> None:
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--d-model", type=int, required=True)
    ap.add_argument("--d-ff", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, required=True)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    d, kv = a.d_model, a.d_model // a.heads * a.kv_heads
    shapes = {  # module: (in, out)
        "self_attn.q_proj": (d, d),
        "self_attn.k_proj": (d, kv),
        "self_attn.v_proj": (d, kv),
        "self_attn.o_proj": (d, d),
        "mlp.gate_proj": (d, a.d_ff),
        "mlp.up_proj": (d, a.d_ff),
        "mlp.down_proj": (a.d_ff, d),
    }
    tensors = {}
    for layer in range(a.layers):
        for module, (n_in, n_out) in shapes.items():
            p = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{p}.lora_A.weight"] = rng.uniform(-1, 1, (a.rank, n_in)) / np.sqrt(n_in)
            tensors[f"{p}.lora_B.weight"] = rng.normal(0, 0.01, (n_out, a.rank))
    a.out.mkdir(parents=True, exist_ok=True)
    write_safetensors(a.out / "adapter_model.safetensors", tensors)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": a.rank,
        "lora_alpha": a.alpha,
        "target_modules": sorted(m.split(".")[1] for m in shapes),
        "bias": "none",
        "fan_in_fan_out": False,
        "base_model_name_or_path": "random",
    }
    (a.out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {a.out}: {len(tensors)} tensors, rank {a.rank}")


if __name__ == "__main__":
    main()
