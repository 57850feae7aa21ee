#!/usr/bin/env python3
"""Builds the seed corpora under fuzz/corpus/<target>/ from real files (issue 9).

Seeds are small slices of real inputs, each in the layout its fuzz target reads (see the
comment at the top of fuzz/fuzz_targets/<target>.rs):
  gguf_reader        tests/fixtures/gguf/all_types.gguf, the first 16 kB of the SmolLM2 model,
                     and SmolLM2's real metadata with every array cut to 24 items, plus three
                     small tensors (so valid tensor infos and offsets are in the corpus)
  tokenizer_vocab    the first tokens (with types and scores) of the llama SPM and GPT-2
                     vocabularies, GPT-2's first merges, and texts of the tokenizer corpus
  tokenizer_text     tokenizer corpus texts, each with a vocabulary selector byte
  detokenize         the llama.cpp ids of the corpus texts (tests/fixtures/tokenizer/corpus-ids-*)
  chat_template      every template of tests/fixtures/chat_templates with a short conversation
  safetensors_header a tiny llama config.json and a matching model.safetensors
  onnx_voice         the Piper voice's real .onnx.json with slices of its ONNX graph (the first
                     nodes with their initializers shrunk to one element, the flow's renamed
                     `onnx::Conv_*` WaveNet convs, and the first 16 kB of the real file); also
                     writes fuzz/dicts/onnx.dict (the graph's op types and attribute names)
  voice_gguf         the first 32 kB of the converted voice (header, metadata, tensor infos)
  lora_adapter       a LoRA adapter in llama.cpp's layout (written by gguf-py, as llama.cpp's
                     convert_lora_to_gguf.py writes them) for the golden llama-spm-gqa base:
                     F32 pairs on q, v, ffn_down and the output head, an F16 pair on k
  bundle_reader      a whole bundle made by `nexus-cli bundle pack` (target/release, built first)
                     from the golden llama-spm-gqa q8_0 backbone and the lora_adapter seed as
                     capability `code`
  peft_adapter       PEFT adapter folders for the same base, as `convert-lora` reads them
                     (adapter_config.json, PEFT's model card, adapter_model.safetensors): rank 2
                     on q, k, ffn_down and lm_head, F32; and BF16 with rsLoRA

Needs the `gguf` and `onnx` Python packages, models/ fetched by models/fetch.sh, and the voice
converted (nexus-cli convert-voice models/en_US-joe-medium.onnx -o models/en_US-joe-medium.gguf).
Run from the repository root: python3 scripts/fuzz/make_seeds.py [FUNCTION...] (e.g.
`lora_seeds` or `peft_seeds` alone, which need only gguf and numpy).
"""
import hashlib, json, os, struct, sys
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SPM = ROOT / "tests" / "fixtures" / "tokenizer" / "ggml-vocab-llama-spm.gguf"
GPT2 = ROOT / "models" / "vocab" / "ggml-vocab-gpt-2.gguf"


def put(target, name, data: bytes):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def field_value(f):
    """A gguf-py ReaderField as (GGUFValueType, python value) for GGUFWriter."""
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        items = [f.parts[i] for i in f.data]
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(x).decode("utf-8", "replace") for x in items]
        return [x.tolist()[0] for x in items]
    if t == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    return f.parts[f.data[0]].tolist()[0]


def gguf_seeds():
    put("gguf_reader", "all_types.gguf", (ROOT / "tests/fixtures/gguf/all_types.gguf").read_bytes())
    if not SMOL.is_file():
        sys.exit(f"{SMOL} is missing: run models/fetch.sh")
    put("gguf_reader", "smollm2-first-16k.gguf", SMOL.read_bytes()[:16384])
    r = gguf.GGUFReader(SMOL)
    out = CORPUS / "gguf_reader" / "smollm2-trimmed.gguf"
    w = gguf.GGUFWriter(out, "llama")
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        v = field_value(f)
        if isinstance(v, list):
            v = v[:24]
        if name == "tokenizer.chat_template":
            v = v[:300]
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, v, t, sub_type=f.types[1])
        else:
            w.add_key_value(name, v, t)
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
    q8 = np.zeros((1, 34), dtype=np.uint8)
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def corpus_texts():
    return [t["text"] for t in json.loads((ROOT / "tests/fixtures/tokenizer/corpus.json").read_text())]


def vocab_seed(path, spm, n_tokens, n_merges, text, flags):
    r = gguf.GGUFReader(path)
    tokens = field_value(r.fields["tokenizer.ggml.tokens"])[:n_tokens]
    types = field_value(r.fields["tokenizer.ggml.token_type"])[:n_tokens] if "tokenizer.ggml.token_type" in r.fields else []
    scores = field_value(r.fields["tokenizer.ggml.scores"])[:n_tokens] if "tokenizer.ggml.scores" in r.fields else []
    merges = field_value(r.fields["tokenizer.ggml.merges"])[:n_merges] if not spm else []
    # Newline and NUL separate the target's sections; tokens holding them are left out.
    keep = [i for i, t in enumerate(tokens) if "\n" not in t and "\0" not in t]
    head = bytes([flags | (0 if spm else 1), 0 if spm else 1, 1 if spm else 0xFF, 2 if spm else 0xFF])
    sec = [
        "\n".join(tokens[i] for i in keep).encode(),
        bytes(types[i] % 8 for i in keep if i < len(types)),
        bytes((int(max(-32, min(31, scores[i] * 4))) & 0xFF) for i in keep if i < len(scores)),
        "\n".join(m for m in merges if "\n" not in m and "\0" not in m).encode(),
        text.encode(),
    ]
    return head + b"\0".join(sec)


def tokenizer_seeds():
    texts = [t for t in corpus_texts() if "\0" not in t]
    picks = [t for t in texts if t.strip()][:12]
    for i, t in enumerate(picks):
        put("tokenizer_vocab", f"spm-{i:02}", vocab_seed(SPM, True, 400, 0, t, 0x22 if i % 2 else 0x80))
        if GPT2.is_file():
            put("tokenizer_vocab", f"gpt2-{i:02}", vocab_seed(GPT2, False, 600, 300, t, 0x80 if i % 3 else 0))
    for i, t in enumerate(texts):
        put("tokenizer_text", f"text-{i:03}", bytes([(i * 37) & 0xFF]) + t.encode())
    for name in ["llama-spm", "llama-bpe", "qwen2"]:
        for i, case in enumerate(json.loads((ROOT / f"tests/fixtures/tokenizer/corpus-ids-{name}.json").read_text())):
            ids = case["llama_cpp"]
            if not ids or i % 3:
                continue
            # Selector: 0 picks the SPM fixture; the BPE ids go to whichever vocabulary the
            # selector lands on, which is what an arbitrary id stream is anyway.
            sel = 0 if name == "llama-spm" else 2 if name == "llama-bpe" else 3
            put("detokenize", f"{name}-{i:03}", bytes([sel | (0x20 if i % 2 else 0)]) + struct.pack(f"<{len(ids)}I", *ids))


def chat_seeds():
    conv = ["system", "You are terse.", "user", "Hi there", "assistant", "Hello!", "user", "2+2?"]
    tail = b"\0" + b"\0".join(s.encode() for s in conv)
    for p in sorted((ROOT / "tests/fixtures/chat_templates").glob("*.jinja")):
        put("chat_template", p.stem, b"\x01" + p.read_bytes() + tail)
    put("chat_template", "loops", b"\x00{% for m in messages %}{% for i in range(3) %}{{ m.role ~ i }}{% endfor %}{% endfor %}" + tail)


def safetensors_seed():
    hidden, ffn, heads, kv, vocab = 8, 16, 2, 1, 16
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": ffn, "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": 1,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": True,
    }
    hd = hidden // heads
    shapes = {
        "model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
        "model.layers.0.input_layernorm.weight": [hidden], "model.layers.0.post_attention_layernorm.weight": [hidden],
        "model.layers.0.self_attn.q_proj.weight": [heads * hd, hidden], "model.layers.0.self_attn.k_proj.weight": [kv * hd, hidden],
        "model.layers.0.self_attn.v_proj.weight": [kv * hd, hidden], "model.layers.0.self_attn.o_proj.weight": [hidden, heads * hd],
        "model.layers.0.mlp.gate_proj.weight": [ffn, hidden], "model.layers.0.mlp.up_proj.weight": [ffn, hidden],
        "model.layers.0.mlp.down_proj.weight": [hidden, ffn],
    }
    for dtype, size in [("F32", 4), ("BF16", 2)]:
        header, data = {}, b""
        for name, shape in sorted(shapes.items()):
            n = int(np.prod(shape)) * size
            blob = hashlib.sha256(name.encode()).digest() * (n // 32 + 1)
            # Finite values: clear the exponent's top bit of every element.
            arr = bytearray(blob[:n])
            for j in range(size - 1, n, size):
                arr[j] &= 0x3F
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
            data += bytes(arr)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        shard = struct.pack("<Q", len(h)) + h + data
        put("safetensors_header", f"llama-{dtype.lower()}", json.dumps(cfg).encode() + b"\0" + shard)
    cfg3 = dict(cfg, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    put("safetensors_header", "llama3-rope-f32", json.dumps(cfg3).encode() + b"\0" + shard)


def voice_seeds():
    import onnx
    from onnx import helper, numpy_helper

    onnx_path = ROOT / "models" / "en_US-joe-medium.onnx"
    config = (ROOT / "models" / "en_US-joe-medium.onnx.json").read_bytes()
    model = onnx.load(str(onnx_path))
    inits = {t.name: t for t in model.graph.initializer}

    def shrunk(name):
        a = numpy_helper.to_array(inits[name])
        if a.size <= 16:
            return inits[name]
        return numpy_helper.from_array(np.full([1] * a.ndim, a.flat[0], dtype=a.dtype), name)

    def sliced(label, nodes):
        used = sorted({i for n in nodes for i in n.input if i in inits})
        graph = helper.make_graph(nodes, "main_graph", list(model.graph.input), list(model.graph.output),
                                  [shrunk(n) for n in used])
        m = helper.make_model(graph, opset_imports=model.opset_import, producer_name=model.producer_name)
        put("onnx_voice", label, config + b"\0" + m.SerializeToString())

    sliced("joe-first-120-nodes", list(model.graph.node[:120]))
    sliced("joe-flow-wavenet", [n for n in model.graph.node
                                if n.op_type == "Conv" and any(i.startswith("onnx::Conv_") for i in n.input)][:8])
    put("onnx_voice", "joe-first-16k", config + b"\0" + onnx_path.read_bytes()[:16384])

    ops = sorted({n.op_type for n in model.graph.node})
    attrs = sorted({a.name for n in model.graph.node for a in n.attribute})
    words = ops + attrs + ["enc_p.", "dp.", "flow.", "dec.", "onnx::Conv_", "/enc_p/emb/Gather", "sid",
                           ".weight", ".bias", "/Conv"]
    with open(ROOT / "fuzz" / "dicts" / "onnx.dict", "w") as f:
        f.write("# ONNX op types, attribute names and VITS module prefixes of the Piper voice "
                "(scripts/fuzz/make_seeds.py)\n")
        f.writelines(f'"{w}"\n' for w in words)

    put("voice_gguf", "joe-first-32k.gguf", (ROOT / "models" / "en_US-joe-medium.gguf").read_bytes()[:32768])


def lora_seeds():
    """An adapter for tests/fixtures/golden/llama-spm-gqa.f32.gguf (d 64, 4 heads / 2 KV of 16,
    FFN 128, vocabulary 512, untied head)."""
    rng = np.random.default_rng(7)
    out = CORPUS / "lora_adapter" / "llama-spm-gqa-rank4.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(out, "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    rank = 4
    # (base tensor, n_in, n_out, dtype): lora_a is ggml [n_in, rank], lora_b [rank, n_out].
    for base, n_in, n_out, dt in [("blk.0.attn_q.weight", 64, 64, np.float32), ("blk.0.attn_v.weight", 64, 32, np.float32),
                                  ("blk.1.attn_k.weight", 64, 32, np.float16), ("blk.1.ffn_down.weight", 128, 64, np.float32),
                                  ("output.weight", 64, 512, np.float32)]:
        w.add_tensor(base + ".lora_a", (rng.standard_normal((rank, n_in)) * 0.1).astype(dt))
        w.add_tensor(base + ".lora_b", (rng.standard_normal((n_out, rank)) * 0.1).astype(dt))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def peft_seeds():
    """PEFT folders for tests/fixtures/golden/llama-spm-gqa.f32.gguf, in the layout of
    fuzz/fuzz_targets/peft_adapter.rs: config, NUL, model card, NUL, safetensors."""
    rng = np.random.default_rng(11)
    card = ("---\nbase_model: meta-llama/Llama-2-7b-hf\nlibrary_name: peft\npipeline_tag: text-generation\n"
            "tags:\n- base_model:adapter:meta-llama/Llama-2-7b-hf\n- lora\n- transformers\n---\n\n# Model Card\n")
    rank = 2
    # (PEFT module, n_in, n_out)
    modules = [("model.layers.0.self_attn.q_proj", 64, 64), ("model.layers.1.self_attn.k_proj", 64, 32),
               ("model.layers.0.mlp.down_proj", 128, 64), ("lm_head", 64, 512)]
    for name, dtype, rslora in [("rank2-f32", "F32", False), ("rank2-bf16-rslora", "BF16", True)]:
        header, data = {"__metadata__": {"format": "pt"}}, b""
        for module, n_in, n_out in modules:
            for half, shape in [("lora_A", [rank, n_in]), ("lora_B", [n_out, rank])]:
                a = (rng.standard_normal(shape) * 0.1).astype(np.float32)
                blob = a.tobytes() if dtype == "F32" else (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
                header[f"base_model.model.{module}.{half}.weight"] = {"dtype": dtype, "shape": shape,
                                                                     "data_offsets": [len(data), len(data) + len(blob)]}
                data += blob
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 4, "use_rslora": rslora,
               "target_modules": ["q_proj", "k_proj", "down_proj", "lm_head"], "bias": "none", "use_dora": False,
               "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, "fan_in_fan_out": False}
        put("peft_adapter", name, json.dumps(cfg).encode() + b"\0" + card.encode() + b"\0"
            + struct.pack("<Q", len(h)) + h + data)


def bundle_seeds():
    """A whole bundle (docs/BUNDLE.md); run lora_seeds first (its adapter is packed)."""
    import subprocess, tempfile
    cli = ROOT / "target" / "release" / "nexus-cli"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "golden-q8_0-code.gguf"
        subprocess.run([str(cli), "bundle", "pack",
                        "--backbone", str(ROOT / "tests/fixtures/golden/llama-spm-gqa.q8_0.gguf"),
                        "--adapter", "code=" + str(CORPUS / "lora_adapter" / "llama-spm-gqa-rank4.gguf"),
                        "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
        put("bundle_reader", out.name, out.read_bytes())


if __name__ == "__main__":
    os.chdir(ROOT)
    chosen = sys.argv[1:] or ["gguf_seeds", "tokenizer_seeds", "chat_seeds", "safetensors_seed", "voice_seeds", "lora_seeds", "peft_seeds", "bundle_seeds"]
    for name in chosen:
        globals()[name]()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
