#!/usr/bin/env python3
"""Make the HF-directory fixtures of tests/fixtures/hf_convert/ and llama.cpp's conversions of them.

Per model the script writes an HF directory: config.json, tokenizer.json / tokenizer_config.json
(one real byte-level BPE vocabulary, see below), generation_config.json, and safetensors weights
whose values come from a fixed integer hash of (tensor name, element index) (`tensor_values`),
so the Rust test regenerates byte-identical safetensors files instead of committing them
(`tensors.json` lists each tensor's file, dtype and shape; `safetensors.sha256` the files' hashes).
The safetensors writer is deliberately hand-rolled (sorted names, compact JSON header padded with
spaces to 8 bytes) so the Rust side can produce the same bytes.

Then it runs llama.cpp's own, unmodified `convert_hf_to_gguf.py DIR --outfile X --outtype T` and
writes `<model>.<outtype>.manifest.json`: every key (name, GGUF type, readable value for scalars,
sha256 of the raw type+value bytes as stored in the file) and every tensor (name, type, ne, sha256
of the data) in file order. The Rust test compares its own output with these manifests.

Tokenizer: `AutoTokenizer.from_pretrained(<llama.cpp>/models, gguf_file="ggml-vocab-gpt-2.gguf")`
re-saved by transformers: GPT-2's real 50257-token vocabulary and 50000 merges, whose
tokenization of llama.cpp's check text hashes to the known `gpt-2` pre-tokenizer entry.
qwen2-bias uses `ggml-vocab-qwen2.gguf` instead (hash entry `qwen2`): GPT-2's vocabulary loaded
through transformers' Qwen2 class hashes to nothing llama.cpp knows. Its tokenizer.json (11 MB)
is committed gzipped as qwen2-tokenizer.json.gz (`gzip -9 -n`), not per model dir.

SentencePiece models (`llama-spm`, `llama-spm-tj`): the HF directory gets the committed
tests/fixtures/hf_convert/spm/tokenizer.model (made by make_spm_model.py) instead of a
tokenizer.json, a hand-written tokenizer_config.json with `added_tokens_decoder`, an
added_tokens.json and a config vocab_size past the model's 400 pieces (padding). `llama-spm-tj`
adds a minimal Llama-2-style tokenizer.json (added tokens, normalizer, TemplateProcessing
post-processor): the reference reads it only for special tokens. These need the `sentencepiece`
package but not transformers' tokenizers; scripts/convert/spm_on_device.sh runs just them.
`--build-only` writes the directories without running the converter (numpy only).

Run on the GPU machine (CPU only is used), needs torch + transformers + the gguf wheel:
  python3 -m pip install --no-index --no-deps --target /tmp/site gguf-0.19.0-py3-none-any.whl
  PYTHONPATH=/tmp/site python3 scripts/convert/make_hf_fixtures.py \
      --llama-cpp <llama.cpp dir> --work /tmp/hfw --out <dir> [--only qwen2-bias]
then, for the fixtures: drop the per-model tokenizer.json and model*.safetensors, and
`gzip -9 -n -c <dir>/qwen2-bias/tokenizer.json > qwen2-tokenizer.json.gz`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                 "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\\n' }}{% endif %}")

MODELS = {
    # Llama 2 / Mistral style: GQA, untied output, bf16 checkpoint, one safetensors file.
    "llama-gqa": dict(
        arch="LlamaForCausalLM", model_type="llama", dtype="BF16", shards=1,
        cfg=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
                 tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256),
        outtypes=["f32", "f16", "bf16", "q8_0"]),
    # Llama 3 style: llama3 rope scaling (-> rope_freqs.weight), head_dim, tied, f16, two shards.
    "llama3-sharded": dict(
        arch="LlamaForCausalLM", model_type="llama", dtype="F16", shards=2,
        cfg=dict(hidden_size=64, intermediate_size=160, num_attention_heads=8, num_key_value_heads=2,
                 head_dim=8, num_hidden_layers=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                 rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_position_embeddings=256),
                 max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=50256,
                 eos_token_id=[50256]),
        outtypes=["f32", "q8_0"]),
    # Qwen2: q/k/v biases, no permutation, tied, f32 checkpoint, vocab padded past the tokenizer.
    # Its own tokenizer: Qwen2's real vocabulary (ggml-vocab-qwen2.gguf), which llama.cpp's
    # converter names "qwen2"; GPT-2's is refused once transformers loads it as a Qwen2 tokenizer.
    # SentencePiece (Llama 2 / TinyLlama / Mistral 7B style): MHA, untied, f16, vocab padded.
    "llama-spm": dict(
        arch="LlamaForCausalLM", model_type="llama", dtype="F16", shards=1, spm="plain", vocab=408,
        cfg=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                 num_hidden_layers=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        outtypes=["f32", "q8_0"]),
    # The same with a tokenizer.json beside tokenizer.model, add_prefix_space, chat_template.jinja,
    # tied, bf16, and a special id past the vocabulary (dropped by SpecialVocab).
    "llama-spm-tj": dict(
        arch="LlamaForCausalLM", model_type="llama", dtype="BF16", shards=1, spm="tokenizer.json", vocab=404,
        cfg=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096,
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, mask_token_id=999),
        outtypes=["f16"]),
    "qwen2-bias": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2", dtype="F32", shards=1, vocab_pad=7,
        vocab_file="ggml-vocab-qwen2.gguf",
        cfg=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096,
                 tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
        outtypes=["f32", "bf16", "q8_0"]),
}


def fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def tensor_values(name: str, n: int, dtype: str) -> np.ndarray:
    """float32 values exactly representable in `dtype`, from an integer hash (mirrored in Rust)."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(fnv1a32(name))) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    norm = name.endswith("norm.weight")
    if dtype == "BF16":
        v = ((h >> np.uint64(26)).astype(np.float64) - 32) / 128 + 1 if norm else \
            ((h >> np.uint64(25)).astype(np.float64) - 64) / 256
    elif dtype == "F16":
        v = ((h >> np.uint64(24)).astype(np.float64) - 128) / 1024 + 1 if norm else \
            ((h >> np.uint64(22)).astype(np.float64) - 512) / 4096
    else:
        m = (h >> np.uint64(16)).astype(np.float64) - 32768
        v = m / (1 << 20) + 1 if norm else m / (1 << 17)
    return v.astype(np.float32)


def encode(v: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return v.astype("<f4").tobytes()
    if dtype == "F16":
        return v.astype("<f2").tobytes()
    return (v.view(np.uint32) >> 16).astype("<u2").tobytes()  # values are exact in bf16


def hf_tensors(spec: dict, vocab: int) -> list[tuple[str, list[int]]]:
    c = spec["cfg"]
    h, f, nh, nkv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", h // nh)
    out = [("model.embed_tokens.weight", [vocab, h]), ("model.norm.weight", [h])]
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", [vocab, h]))
    for b in range(c["num_hidden_layers"]):
        p = f"model.layers.{b}."
        out += [(p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h]),
                (p + "self_attn.q_proj.weight", [nh * hd, h]), (p + "self_attn.k_proj.weight", [nkv * hd, h]),
                (p + "self_attn.v_proj.weight", [nkv * hd, h]), (p + "self_attn.o_proj.weight", [h, nh * hd]),
                (p + "mlp.gate_proj.weight", [f, h]), (p + "mlp.up_proj.weight", [f, h]),
                (p + "mlp.down_proj.weight", [h, f])]
        if spec["model_type"] == "qwen2":
            out += [(p + "self_attn.q_proj.bias", [nh * hd]), (p + "self_attn.k_proj.bias", [nkv * hd]),
                    (p + "self_attn.v_proj.bias", [nkv * hd])]
    return out


def write_safetensors(path: Path, tensors: list[tuple[str, list[int]]], dtype: str) -> None:
    entries, blobs, off = [], [], 0
    for name, shape in sorted(tensors):
        blob = encode(tensor_values(name, int(np.prod(shape)), dtype), dtype)
        entries.append('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'
                       % (name, dtype, ",".join(map(str, shape)), off, off + len(blob)))
        blobs.append(blob)
        off += len(blob)
    header = ("{" + ",".join(entries) + "}").encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for b in blobs:
            f.write(b)


SPM_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + "
                " ' [/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def spm_tokenizer_files(spec: dict, spm_model: Path, d: Path) -> None:
    """tokenizer.model + the JSON files a Llama 2 / Mistral HF directory has beside it."""
    shutil.copy(spm_model, d / "tokenizer.model")
    tj = spec["spm"] == "tokenizer.json"
    special = lambda c, sp=True: {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": sp}
    decoder = {"0": special("<unk>"), "1": special("<s>"), "2": special("</s>"),
               # not flagged special but looks special -> CONTROL
               "400": special("<|im_start|>", False),
               # a user-defined token with SentencePiece's space mark -> USER_DEFINED, with a space
               "401": special("\u2581user\u2581tok", False),
               "402": special("<extra>")}
    tc = {"add_bos_token": not tj, "add_eos_token": False, "added_tokens_decoder": decoder,
          "bos_token": "<s>", "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
          "model_max_length": 4096, "pad_token": None, "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
          "unk_token": "<unk>"}
    if tj:
        tc["add_prefix_space"] = True
        (d / "chat_template.jinja").write_text(SPM_TEMPLATE)
    else:
        tc["chat_template"] = SPM_TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    # Processed before added_tokens_decoder, which overrides id 400.
    (d / "added_tokens.json").write_text(json.dumps({"<extra_json>": 403, "<|im_start|>": 400}, indent=2) + "\n")
    if tj:
        added = [dict(id=int(i), **v) for i, v in decoder.items()]
        tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
               "normalizer": {"type": "Sequence", "normalizers": [
                   {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
               "pre_tokenizer": None,
               "post_processor": {"type": "TemplateProcessing",
                                  "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                                  "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                           {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                                  "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
               "decoder": None,
               # The reference never reads the model of a tokenizer.json beside tokenizer.model.
               "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "byte_fallback": True, "vocab": {}, "merges": []}}
        (d / "tokenizer.json").write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n")


def build_dir(name: str, spec: dict, tok_dir: Path | None, d: Path, spm_model: Path | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if "spm" in spec:
        spm_tokenizer_files(spec, spm_model, d)
        write_model_files(spec, spec["vocab"], d)
        return
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / fn, d / fn)
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    tok_cfg["add_bos_token"] = name == "llama-gqa"
    (d / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    n_tok = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])
    write_model_files(spec, n_tok + spec.get("vocab_pad", 0), d)


def write_model_files(spec: dict, vocab: int, d: Path) -> None:
    cfg = dict(architectures=[spec["arch"]], model_type=spec["model_type"], torch_dtype=spec["dtype"].lower()
               .replace("f32", "float32").replace("f16", "float16").replace("bf16", "bfloat16"),
               vocab_size=vocab, **spec["cfg"])
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (d / "generation_config.json").write_text(json.dumps(
        dict(bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"], do_sample=True,
             temperature=0.7), indent=2) + "\n")
    tensors = hf_tensors(spec, vocab)
    layout = []
    if spec["shards"] == 1:
        write_safetensors(d / "model.safetensors", tensors, spec["dtype"])
        layout = [dict(file="model.safetensors", name=n, dtype=spec["dtype"], shape=s) for n, s in sorted(tensors)]
    else:
        # shard 1: embeddings + layer 0; shard 2: the rest (real checkpoints split by size the same way)
        first = [t for t in tensors if "embed" in t[0] or ".layers.0." in t[0]]
        rest = [t for t in tensors if t not in first]
        weight_map, total = {}, 0
        for k, part in enumerate([first, rest], 1):
            fn = f"model-{k:05d}-of-00002.safetensors"
            write_safetensors(d / fn, part, spec["dtype"])
            for n, s in sorted(part):
                weight_map[n] = fn
                layout.append(dict(file=fn, name=n, dtype=spec["dtype"], shape=s))
                total += int(np.prod(s)) * (4 if spec["dtype"] == "F32" else 2)
        (d / "model.safetensors.index.json").write_text(json.dumps(
            dict(metadata=dict(total_size=total), weight_map=dict(sorted(weight_map.items()))), indent=2) + "\n")
    (d / "tensors.json").write_text(json.dumps(layout, indent=1) + "\n")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                   for p in sorted(d.glob("*.safetensors")))
    (d / "safetensors.sha256").write_text(sums)


def manifest(path: Path) -> dict:
    import gguf
    r = gguf.GGUFReader(path)
    kv = []
    for f in r.fields.values():
        raw = b"".join(bytes(p.tobytes()) for p in f.parts[2:])
        t = f.types[0].name if f.types else None
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            val = {"len": len(f.data), "item": f.types[-1].name}
        elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
            val = bytes(f.parts[-1]).decode("utf-8", "replace")[:200]
        else:
            val = f.parts[-1].tolist()[0]
        kv.append([f.name, t, val, hashlib.sha256(raw).hexdigest()])
    tensors = [[t.name, t.tensor_type.name, [int(x) for x in t.shape], hashlib.sha256(t.data.tobytes()).hexdigest()]
               for t in r.tensors]
    return {"llama_cpp_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": path.stat().st_size, "kv": kv, "tensors": tensors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", action="append", help="model name (repeatable); default: all")
    ap.add_argument("--spm-model", default=str(Path(__file__).resolve().parents[2] / "tests/fixtures/hf_convert/spm/tokenizer.model"))
    ap.add_argument("--build-only", action="store_true", help="write the HF directories, run nothing")
    a = ap.parse_args()
    llama, work, out = Path(a.llama_cpp).resolve(), Path(a.work).resolve(), Path(a.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, spec in MODELS.items():
        if a.only and name not in a.only:
            continue
        tok_dir = None
        if "spm" not in spec:
            import transformers
            vocab_file = spec.get("vocab_file", "ggml-vocab-gpt-2.gguf")
            tok_dir = work / ("tokenizer-" + vocab_file)
            if not tok_dir.is_dir():
                tok = transformers.AutoTokenizer.from_pretrained(str(llama / "models"), gguf_file=vocab_file)
                tok.save_pretrained(tok_dir)
        d = out / name
        build_dir(name, spec, tok_dir, d, Path(a.spm_model))
        if a.build_only:
            print("built", name, flush=True)
            continue
        for ot in spec["outtypes"]:
            dst = work / f"{name}.{ot}.gguf"
            cmd = [sys.executable, str(llama / "convert_hf_to_gguf.py"), str(d), "--outfile", str(dst), "--outtype", ot]
            res = subprocess.run(cmd, capture_output=True, text=True)
            (out / f"{name}.{ot}.convert.log").write_text(res.stdout + res.stderr)
            if res.returncode != 0:
                print(res.stderr[-3000:], flush=True)
                failed.append(f"{name}.{ot}")
                continue
            (out / f"{name}.{ot}.manifest.json").write_text(json.dumps(manifest(dst), indent=1) + "\n")
            print("ok", name, ot, flush=True)
    if failed:
        raise SystemExit(f"FAILED: {failed}")


if __name__ == "__main__":
    main()
