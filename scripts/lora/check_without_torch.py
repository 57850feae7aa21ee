#!/usr/bin/env python3
"""Cross-check of `nexus-cli convert-lora` against llama.cpp's LoRA converter where torch is not
installed: NOT the reference (that is tests/fixtures/lora_peft/, made by make_peft_fixtures.py
with torch, PEFT and llama.cpp's own convert_lora_to_gguf.py), but the same file written by
llama.cpp's own gguf-py code for everything that does not need torch.

convert_lora_to_gguf.py imports torch, so here its torch-free steps are replayed with gguf-py:
tensors paired in the sorted safetensors order (`safe_open().keys()`), A/B cast to f32 when
their dtypes differ, BF16 widened to f32 (prepare_tensors), base names mapped with gguf-py's
TensorNameMap, lora_b of q_proj/k_proj permuted as LlamaModel.permute does, each tensor
encoded with gguf.quants (F16 fallback on QuantError), then gguf.Metadata.load (model card,
folder name) and GGUFWriter exactly in ModelBase.write's order. The torch-specific part that
remains untested here is LoraTorchTensor's permute, which tests/tests/lora_peft.rs checks
against an f64 merged-weights reference.

Cases: PEFT folders (F32, F16, BF16 weights) with no model card, PEFT's card and a Hub-style
card, under tricky folder names, each converted to f32/f16/bf16/q8_0 by both; every pair must be
byte-identical. Needs numpy and pyyaml, and a llama.cpp dir with gguf-py/ (see
scripts/lora/prepare_carry.sh). From the repository root, after `cargo build --release`:

  python3 scripts/lora/check_without_torch.py --llama-cpp .carry/lora_peft/llama.cpp --work /tmp/lora-check
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

BASE = "tests/fixtures/golden/llama-spm-gqa.f32.gguf"  # llama, hidden 64, 4 heads / 2 KV, FFN 128, 2 layers
N_HEAD, N_KV, N_LAYER = 4, 2, 2
MODULES = [("self_attn.q_proj", 64, 64), ("self_attn.k_proj", 64, 32), ("self_attn.v_proj", 64, 32),
           ("self_attn.o_proj", 64, 64), ("mlp.gate_proj", 64, 128), ("mlp.up_proj", 64, 128), ("mlp.down_proj", 128, 64)]
CARDS = {
    "none": None,
    "peft": "---\nbase_model: base\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n"
            "- base_model:adapter:base\n- lora\n- transformers\n---\n\n# Model Card for Model ID\n",
    "hub": "---\nbase_model:\n- meta-llama/Llama-3.2-1B-Instruct\n- https://huggingface.co/Qwen/Qwen2-0.5B\n"
           "license: apache-2.0\nlanguage:\n- en\n- fr\ndatasets: [tatsu-lab/alpaca]\nmodel_name: My Tuned Thing\ntags: lora\n---\n",
}
NAMES = ["peft_adapter", "rank2-bf16-rslora", "Mistral-7B-Instruct-v0.2-lora", "llama-3.1-8b-it-lora-r16", "bloom-7b1-chat",
         "Qwen2.5-0.5B-Instruct-LoRA", "v2", "SmolLM2-135M-Instruct", "gemma-2b-128k", "TinyLlama-1.1B-Chat-v1.0",
         "foo--bar", "Model-8x7B-q4_k", "adapter.v1", "UPPER-lower-MiXeD", "a-1B-2B"]


def load_safetensors(path: Path) -> dict:
    b = path.read_bytes()
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = b[8 + n + s: 8 + n + e]
        if v["dtype"] == "F32":
            a = np.frombuffer(raw, np.float32)
        elif v["dtype"] == "F16":
            a = np.frombuffer(raw, np.float16)
        else:  # BF16: prepare_tensors widens it to f32 exactly
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        out[k] = a.reshape(v["shape"])
    return out


def llama_cpp_convert(gguf, dir_lora: Path, outfile: Path, outtype: str) -> None:
    lparams = json.loads((dir_lora / "adapter_config.json").read_text())
    lora = load_safetensors(dir_lora / "adapter_model.safetensors")
    qt = gguf.GGMLQuantizationType
    ftype = {"f32": qt.F32, "f16": qt.F16, "bf16": qt.BF16, "q8_0": qt.Q8_0}[outtype]
    w = gguf.GGUFWriter(path=None, arch="llama")
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, N_LAYER)
    pairs: dict = {}
    for name in sorted(lora):
        base = name.replace("base_model.model.", "").replace(".lora_A.weight", ".weight").replace(".lora_B.weight", ".weight")
        pairs.setdefault(base, {})["A" if ".lora_A.weight" in name else "B"] = lora[name]
    for base, p in pairs.items():
        a, b = p["A"], p["B"]
        if a.dtype != b.dtype:
            a, b = a.astype(np.float32), b.astype(np.float32)
        new = tmap.get_name(base, try_suffixes=(".weight", ".bias"))
        if base.endswith(("q_proj.weight", "k_proj.weight")):
            nh = N_HEAD if base.endswith("q_proj.weight") else N_KV
            b = b.reshape(nh, 2, b.shape[0] // nh // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)
        for suffix, d in (("lora_a", a), ("lora_b", b)):
            q = ftype
            try:
                data = gguf.quants.quantize(np.ascontiguousarray(d), q)
            except gguf.QuantError:
                q = qt.F16
                data = gguf.quants.quantize(np.ascontiguousarray(d), q)
            w.add_tensor(new + "." + suffix, data, raw_dtype=q)
    total = w.get_total_parameter_count()[0]
    meta = gguf.Metadata.load(None, dir_lora, None, total)
    if meta.name is None:
        meta.name = "base"
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    meta.set_gguf_meta_model(w)
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lparams["lora_alpha"]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file(path=outfile)
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def make_peft(d: Path, dtype: str, seed: int, card) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    r = 4
    tensors = {}
    for layer in range(N_LAYER):
        for m, n_in, n_out in MODULES:
            pre = f"base_model.model.model.layers.{layer}.{m}"
            tensors[pre + ".lora_A.weight"] = (rng.standard_normal((r, n_in)) * 0.16).astype(np.float32)
            tensors[pre + ".lora_B.weight"] = (rng.standard_normal((n_out, r)) * 0.16).astype(np.float32)
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k in sorted(tensors, key=lambda k: (len(k), k)):  # file order differs from the sorted order on purpose
        a = tensors[k]
        raw = {"F16": lambda: a.astype(np.float16).tobytes(),
               "BF16": lambda: (a.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
               "F32": a.tobytes}[dtype]()
        header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    (d / "adapter_model.safetensors").write_bytes(len(hb).to_bytes(8, "little") + hb + b"".join(blobs))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 8, "target_modules": [m.split(".")[1] for m, _, _ in MODULES],
           "bias": "none", "use_dora": False, "use_rslora": False, "base_model_name_or_path": "base", "task_type": "CAUSAL_LM"}
    (d / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    if card is not None:
        (d / "README.md").write_text(card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp dir with gguf-py/")
    ap.add_argument("--work", required=True, help="scratch dir (emptied first)")
    ap.add_argument("--nexus-cli", default="target/release/nexus-cli")
    args = ap.parse_args()
    sys.path.insert(1, str(Path(args.llama_cpp) / "gguf-py"))
    import gguf
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    cases = [(dtype, card, name) for dtype in ["F32", "F16", "BF16"] for card in CARDS for name in NAMES[:2]]
    cases += [("F32", "none", name) for name in NAMES[2:]]
    same, differ = 0, []
    for i, (dtype, card, name) in enumerate(cases):
        d = work / f"case{i}" / name
        make_peft(d, dtype, i, CARDS[card])
        for ot in ["f32", "f16", "bf16", "q8_0"]:
            ref, ours = d.parent / f"llama.cpp.{ot}.gguf", d.parent / f"nexus.{ot}.gguf"
            llama_cpp_convert(gguf, d, ref, ot)
            subprocess.run([args.nexus_cli, "convert-lora", str(d), "--base", BASE, "-o", str(ours), "--outtype", ot],
                           check=True, capture_output=True)
            if ref.read_bytes() == ours.read_bytes():
                same += 1
            else:
                differ.append(f"{dtype} {card} {name} {ot}")
    print(f"{same} of {same + len(differ)} conversions byte-identical")
    for d in differ:
        print("DIFFERS:", d)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
