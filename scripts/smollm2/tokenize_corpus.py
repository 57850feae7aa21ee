#!/usr/bin/env python3
"""Tokenize the shared tokenizer corpus with llama.cpp on SmolLM2-135M-Instruct.

Writes tests/fixtures/smollm2/corpus-ids.json: one entry per text of
tests/fixtures/tokenizer/corpus.json with the ids llama-tokenize gives (no BOS, special
tokens parsed as the corpus entry says) and the ids of HF `tokenizers` built from the same
vocabulary and merges with SmolLM2's pre-tokenizer (individual digits, then byte-level).
tests/tests/smollm2_tokenize.rs compares ours with both.

usage: tokenize_corpus.py [--llama-tokenize PATH] [--model PATH]
needs: pip install tokenizers numpy; the gguf package (../shared/tools/llama-cpp-ref/gguf-py
on PYTHONPATH works)
"""
import argparse
import hashlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "tokenizer"))
from llama_tokenize import llama_cpp_ids  # noqa: E402




def hf_tokenizer(gguf_path):
    """HF tokenizers' byte-level BPE from the GGUF's own tokens and merges, with the
    pre-tokenizer of SmolLM2's tokenizer.json; control tokens as special added tokens."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    r = gguf.GGUFReader(gguf_path)
    get = lambda k: r.fields[k].contents()
    tokens, types, merges = get("tokenizer.ggml.tokens"), get("tokenizer.ggml.token_type"), get("tokenizer.ggml.merges")
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3])
    return tk


def hf_ids(tk, text, parse_special):
    # Without special-token parsing, special texts are tokenized as plain text.
    tk.encode_special_tokens = not parse_special
    return tk.encode(text, add_special_tokens=False).ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize", default="/work/ref/build-cpu/bin/llama-tokenize")
    ap.add_argument("--model", default=str(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    corpus = json.loads((ROOT / "tests/fixtures/tokenizer/corpus.json").read_text(encoding="utf-8"))
    sha = hashlib.sha256(pathlib.Path(args.model).read_bytes()).hexdigest()
    tk = hf_tokenizer(args.model)
    cases = []
    for case in corpus:
        ids = llama_cpp_ids(args.llama_tokenize, args.model, case["text"], case["parse_special"])
        hf = hf_ids(tk, case["text"], case["parse_special"])
        cases.append({"text": case["text"], "parse_special": case["parse_special"], "llama_cpp": ids, "hf": hf})
    disagree = sum(c["llama_cpp"] != c["hf"] for c in cases)
    print(f"HF tokenizers and llama-tokenize disagree on {disagree} of {len(cases)} texts")
    out = {"model": pathlib.Path(args.model).name, "model_sha256": sha, "cases": cases}
    dest = ROOT / "tests/fixtures/smollm2/corpus-ids.json"
    dest.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {dest} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
