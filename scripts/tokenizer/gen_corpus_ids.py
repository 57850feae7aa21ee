#!/usr/bin/env python3
"""Expected ids for tests/fixtures/tokenizer/corpus.json, per vocabulary.

For each vocabulary in models/vocab (see scripts/fetch_vocab.sh) this writes
tests/fixtures/tokenizer/corpus-ids-<name>.json: one entry per corpus case with
  "hf":        ids from HF tokenizers built from the same GGUF (transformers' gguf_file=),
  "llama_cpp": ids from llama.cpp's llama-tokenize, when --llama-tokenize is given.
The Rust test prefers llama_cpp (llama.cpp is the reference) and reports where they differ.

usage: gen_corpus_ids.py [--llama-tokenize PATH] [--vocab llama-spm --vocab qwen2 ...]
needs: pip install tokenizers 'transformers==4.47.1' gguf sentencepiece protobuf
(newer transformers import torch in their GGUF reader)
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from llama_tokenize import llama_cpp_ids  # noqa: E402
FIXTURES = ROOT / "tests/fixtures/tokenizer"
VOCABS = ["llama-spm", "llama-bpe", "qwen2"]


def vocab_path(name):
    for d in (FIXTURES, ROOT / "models/vocab"):
        p = d / f"ggml-vocab-{name}.gguf"
        if p.exists():
            return p
    raise SystemExit(f"ggml-vocab-{name}.gguf not found; run scripts/fetch_vocab.sh")


def hf_ids(tok, text, parse_special):
    # split_special_tokens=True treats special-token text as plain text, like
    # llama.cpp's parse_special=false.
    return tok.encode(text, add_special_tokens=False, split_special_tokens=not parse_special)




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize", help="path to llama.cpp's llama-tokenize binary")
    ap.add_argument("--vocab", action="append", help=f"vocabularies (default: {' '.join(VOCABS)})")
    args = ap.parse_args()
    # transformers' GGUF loader refuses to run without torch even when it only reads
    # metadata (return_tensors=False); the tokenizer conversion itself needs no torch.
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    gguf_utils.is_torch_available = lambda: True
    from transformers import AutoTokenizer

    cases = json.loads((FIXTURES / "corpus.json").read_text(encoding="utf-8"))
    for name in args.vocab or VOCABS:
        gguf = vocab_path(name)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        rows, disagree = [], 0
        for c in cases:
            row = dict(c)
            try:
                row["hf"] = hf_ids(tok, c["text"], c["parse_special"])
            except Exception as e:  # keep going; the case is then checked against llama.cpp only
                print(f"{name}: HF failed on {c['text']!r}: {e}")
                row["hf"] = None
            if args.llama_tokenize:
                row["llama_cpp"] = llama_cpp_ids(args.llama_tokenize, gguf, c["text"], c["parse_special"])
                if row["hf"] is not None and row["hf"] != row["llama_cpp"]:
                    disagree += 1
                    print(f"{name}: HF != llama.cpp for {c['text']!r} (parse_special={c['parse_special']})\n"
                          f"   hf        {row['hf']}\n   llama.cpp {row['llama_cpp']}")
            rows.append(row)
        out = FIXTURES / f"corpus-ids-{name}.json"
        with out.open("w", encoding="utf-8") as f:
            f.write("[\n")
            f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
            f.write("\n]\n")
        print(f"{out}: {len(rows)} cases, {disagree} HF/llama.cpp disagreements")


if __name__ == "__main__":
    main()
