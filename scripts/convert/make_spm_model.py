#!/usr/bin/env python3
"""Train the small SentencePiece model of tests/fixtures/hf_convert/spm/tokenizer.model.

Llama 2 / TinyLlama / Mistral 7B ship a BPE `tokenizer.model` with byte fallback; this is the
same kind at 400 pieces: <unk> <s> </s>, one control symbol, one user-defined symbol, the 256
byte pieces <0x00>..<0xFF>, and BPE pieces with their scores, trained on a corpus generated
here from a fixed word list and seed. Afterwards the last piece is re-typed UNUSED (training
cannot make one) by rewriting the protobuf, so every piece type llama.cpp maps is present.
Also writes `spm_expected.json`: sentencepiece's own encoding of a few strings, which the Rust
end-to-end test compares with the runtime's tokenizer on the converted GGUF. None contains
`<user>`: sentencepiece matches a user-defined piece whole, but llama.cpp's converter writes it
NORMAL and its tokenizer (like ours) only reaches it by merges, so the two differ there.

Needs `pip install sentencepiece` (0.2.x). Usage:
  python3 scripts/convert/make_spm_model.py tests/fixtures/hf_convert/spm
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm

WORDS = ("the model reads tokens from a file and writes them back; a tokenizer splits text into "
         "pieces by score. Llama Mistral TinyLlama vocabulary weights layers heads attention cache "
         "quickly slowly running converted numbers 0 1 2 3 42 1999 hello world naïve café über "
         "日本語 テキスト, (brackets) [square] {curly} <angle> \"quotes\" it's don't we'll").split()

ENCODE = ["Hello world", "the model reads tokens", " two  spaces", "naïve café 日本語 ✓",
          "numbers 1999 and 42", "<ctrl> mixed", "\tTabs\nand newlines"]


def corpus(n_lines: int = 4000, seed: int = 1234) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n_lines)) + "\n"


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, i


def fields(b: bytes):
    """(number, wire type, raw bytes of the whole field, payload) for each top-level field."""
    i = 0
    while i < len(b):
        start = i
        key, i = read_varint(b, i)
        wt = key & 7
        if wt == 0:
            _, i = read_varint(b, i)
            payload = None
        elif wt == 2:
            n, i = read_varint(b, i)
            payload = b[i:i + n]
            i += n
        elif wt == 5:
            payload = b[i:i + 4]
            i += 4
        elif wt == 1:
            payload = b[i:i + 8]
            i += 8
        else:
            raise ValueError(f"wire type {wt}")
        yield key >> 3, wt, b[start:i], payload


def retype_last_piece(model: bytes, new_type: int) -> bytes:
    parts = list(fields(model))
    last = max(k for k, (num, _, _, _) in enumerate(parts) if num == 1)
    piece = parts[last][3]
    body = b"".join(raw for num, _, raw, _ in fields(piece) if num != 3) + varint(3 << 3) + varint(new_type)
    out = b""
    for k, (num, _, raw, _) in enumerate(parts):
        out += (varint(1 << 3 | 2) + varint(len(body)) + body) if k == last else raw
    return out


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        # trainer_spec records the input and prefix paths: relative names keep the file stable.
        os.chdir(tmp)
        Path("corpus.txt").write_text(corpus(), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input="corpus.txt", model_prefix="m", model_type="bpe", vocab_size=400,
            byte_fallback=True, character_coverage=1.0, num_threads=1, control_symbols=["<ctrl>"],
            user_defined_symbols=["<user>"], split_digits=True, hard_vocab_limit=True,
            add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
            minloglevel=2)
        model = Path("m.model").read_bytes()
        os.chdir("/")
    model = retype_last_piece(model, 5)  # UNUSED
    (out / "tokenizer.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.IsUnused(sp.vocab_size() - 1)
    expected = [{"text": t, "ids": sp.encode(t)} for t in ENCODE]
    (out / "spm_expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n", encoding="utf-8")
    print(sp.vocab_size(), "pieces;", len(model), "bytes")


if __name__ == "__main__":
    main()
