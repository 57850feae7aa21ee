#!/usr/bin/env python3
"""SmolLM2 GGUF -> HF dir (transformers) -> llama.cpp's converter and `nexus-cli convert` ->
manifests (make_hf_fixtures.manifest) compared key by key and tensor by tensor.
Driven by smollm2_roundtrip.sh; needs torch, transformers and the gguf package."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_hf_fixtures import manifest  # noqa: E402

OUTTYPES = ["bf16", "q8_0", "f16"]


def compared(key: str) -> bool:
    """Same rule as convert/tests/hf_convert.rs: descriptive general.* fields may differ."""
    return not key.startswith("GGUF.") and (not key.startswith("general.") or key in (
        "general.architecture", "general.file_type", "general.quantization_version"))


def compare(ref: dict, ours: dict) -> dict:
    rk = [(k[0], k[1], k[3]) for k in ref["kv"] if compared(k[0])]
    ok = [(k[0], k[1], k[3]) for k in ours["kv"] if compared(k[0])]
    rt, ot = ref["tensors"], ours["tensors"]
    return {
        "keys_compared": len(rk),
        "keys_identical": rk == ok,
        "key_order_identical": [k[0] for k in rk] == [k[0] for k in ok],
        "keys_only_in_llama_cpp": sorted({k[0] for k in rk} - {k[0] for k in ok}),
        "keys_only_in_ours": sorted({k[0] for k in ok} - {k[0] for k in rk}),
        "keys_differing": [a[0] for a, b in zip(rk, ok) if a[0] == b[0] and a != b],
        "tensors": len(rt),
        "tensors_identical": rt == ot,
        "tensor_order_identical": [t[0] for t in rt] == [t[0] for t in ot],
        "tensors_differing": [a[0] for a, b in zip(rt, ot) if a != b][:20],
        "sizes": [ref["size"], ours["size"]],
        "whole_file_identical": ref["llama_cpp_sha256"] == ours["llama_cpp_sha256"],
    }


def save_tokenizer_from_gguf(gguf_path: Path, hf: Path, transformers) -> None:
    """SmolLM2's byte-level BPE rebuilt from the GGUF's own tokens and merges, with SmolLM2's
    pre-tokenizer (individual Digits + ByteLevel). transformers' GGUF loader instead makes a
    byte-fallback (SentencePiece-style) BPE, which llama.cpp writes as a `llama` vocabulary."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    r = gguf.GGUFReader(gguf_path)
    get = lambda k: r.fields[k].contents()
    tokens, types, merges = get("tokenizer.ggml.tokens"), get("tokenizer.ggml.token_type"), get("tokenizer.ggml.merges")
    print("gguf tokenizer:", get("tokenizer.ggml.model"), get("tokenizer.ggml.pre"), len(tokens), len(merges), flush=True)
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                              merges=[tuple(m.split(" ")) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3])
    kw = {f"{n}_token": tokens[get(f"tokenizer.ggml.{k}_token_id")] for n, k in
          (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")) if f"tokenizer.ggml.{k}_token_id" in r.fields}
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, chat_template=get("tokenizer.chat_template"), **kw)
    fast.save_pretrained(hf)


def main() -> None:
    ap = argparse.ArgumentParser()
    for a in ("--gguf", "--llama-cpp", "--nexus", "--work", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--tokenizer", choices=["gguf", "transformers"], default="gguf",
                    help="gguf: rebuild SmolLM2's byte-level BPE from the GGUF (default); "
                         "transformers: AutoTokenizer's GGUF loader (byte-fallback BPE, refused by nexus)")
    a = ap.parse_args()
    tok_mode = a.tokenizer
    gguf_path, work, out = Path(a.gguf), Path(a.work), Path(a.out)
    res = work / "res"
    res.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    t0 = time.time()
    hf = work / "SmolLM2-135M-Instruct"
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.bfloat16)
    # The weights are dequantized already; drop the GGUF "quantization" so save_pretrained writes them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(hf)
    if tok_mode == "gguf":
        save_tokenizer_from_gguf(gguf_path, hf, transformers)
    else:
        tok.save_pretrained(hf)
    summary = {"transformers": transformers.__version__, "torch": torch.__version__,
               "hf_dir_s": round(time.time() - t0, 1),
               "hf_files": sorted(p.name for p in hf.iterdir()), "runs": {}}
    print("hf dir", summary, flush=True)
    for ot in OUTTYPES:
        r = {}
        ref, ours = work / f"ref.{ot}.gguf", work / f"ours.{ot}.gguf"
        t = time.time()
        p = subprocess.run([sys.executable, str(Path(a.llama_cpp) / "convert_hf_to_gguf.py"), str(hf),
                            "--outfile", str(ref), "--outtype", ot], capture_output=True, text=True)
        r["llama_cpp_s"] = round(time.time() - t, 1)
        (res / f"smollm2.{ot}.convert.log").write_text(p.stdout + p.stderr)
        t = time.time()
        q = subprocess.run([a.nexus, "convert", str(hf), "-o", str(ours), "--outtype", ot],
                           capture_output=True, text=True)
        r["nexus_s"] = round(time.time() - t, 1)
        (res / f"smollm2.{ot}.nexus.log").write_text(q.stdout + q.stderr)
        r["llama_cpp_rc"], r["nexus_rc"] = p.returncode, q.returncode
        if p.returncode == 0:
            mr = manifest(ref)
            (res / f"smollm2.{ot}.manifest.json").write_text(json.dumps(mr, indent=1) + "\n")
        else:
            print(p.stderr[-2000:], flush=True)
        if q.returncode == 0:
            mo = manifest(ours)
            (res / f"smollm2.{ot}.nexus-manifest.json").write_text(json.dumps(mo, indent=1) + "\n")
        else:
            print(q.stderr[-2000:], flush=True)
        if p.returncode == 0 and q.returncode == 0:
            r.update(compare(mr, mo))
        summary["runs"][ot] = r
        print(ot, json.dumps(r), flush=True)
        (res / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        with tarfile.open(out / "smollm2.tgz", "w:gz") as tf:
            tf.add(res, arcname="smollm2")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
