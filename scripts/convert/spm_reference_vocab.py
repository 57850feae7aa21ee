#!/usr/bin/env python3
"""Run llama.cpp's own vocabulary code on an HF directory without torch, and compare.

`convert_hf_to_gguf.py` imports torch and transformers at the top, but `LlamaModel.set_vocab`
(→ `_set_vocab_sentencepiece` → `_create_vocab_sentencepiece` + gguf-py `SpecialVocab`) uses
neither. This script puts empty stand-ins for both in `sys.modules`, calls the unmodified
`set_vocab` of llama.cpp's `LlamaModel` on a minimal object, and writes the keys it produced
to a GGUF without tensors. With `--ours FILE.gguf` it then checks that FILE has the same
`tokenizer.*` keys, in the same order, with byte-identical values (types included).

A machine without torch can thus check `nexus-cli convert` on SentencePiece directories
against the reference; the device run (spm_on_device.sh) checks whole files.

  python3 scripts/convert/spm_reference_vocab.py --llama-cpp <llama.cpp dir> HF_DIR REF.gguf [--ours OUT.gguf]
Needs numpy, sentencepiece (pip) and llama.cpp's gguf-py (used from the llama.cpp tree).
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path


def stub_modules() -> None:
    torch = types.ModuleType("torch")
    torch.Tensor = type("Tensor", (), {})
    for dt in ("float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
               "float8_e4m3fn", "float8_e5m2", "complex64", "uint16", "uint32", "uint64"):
        setattr(torch, dt, object())
    torch.__getattr__ = lambda name: object()
    sys.modules["torch"] = torch
    tf = types.ModuleType("transformers")
    tf.__getattr__ = lambda name: object()
    sys.modules["transformers"] = tf


def reference_kv(llama_cpp: Path, hf_dir: Path, out: Path) -> None:
    stub_modules()
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import gguf
    from conversion.llama import LlamaModel
    from conversion.base import ModelBase

    hparams = ModelBase.load_hparams(hf_dir, is_mistral_format=False)
    m = LlamaModel.__new__(LlamaModel)
    m.dir_model = hf_dir
    m.hparams = hparams
    m.is_mistral_format = False
    m.origin_hf_arch = hparams.get("architectures", [None])[0]
    m.hf_arch = m.origin_hf_arch
    m.gguf_writer = gguf.GGUFWriter(path=None, arch="llama")
    m.set_vocab()
    w = m.gguf_writer
    w.open_output_file(out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def tokenizer_fields(path: Path) -> list[tuple[str, bytes]]:
    import gguf
    r = gguf.GGUFReader(path)
    return [(f.name, b"".join(bytes(p.tobytes()) for p in f.parts[1:]))
            for f in r.fields.values() if f.name.startswith("tokenizer.")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, type=Path)
    ap.add_argument("hf_dir", type=Path)
    ap.add_argument("ref", type=Path)
    ap.add_argument("--ours", type=Path)
    a = ap.parse_args()
    reference_kv(a.llama_cpp.resolve(), a.hf_dir.resolve(), a.ref)
    if a.ours is None:
        return
    ref, ours = tokenizer_fields(a.ref), tokenizer_fields(a.ours)
    bad = []
    if [k for k, _ in ref] != [k for k, _ in ours]:
        bad.append(f"key order differs:\n  reference {[k for k, _ in ref]}\n  ours      {[k for k, _ in ours]}")
    ours_map = dict(ours)
    for k, v in ref:
        if k in ours_map and ours_map[k] != v:
            bad.append(f"value of {k} differs ({len(v)} vs {len(ours_map[k])} bytes)")
    if bad:
        raise SystemExit(f"{a.hf_dir.name}: " + "\n".join(bad))
    print(f"{a.hf_dir.name}: {len(ref)} tokenizer keys identical (names, order, types, bytes)")


if __name__ == "__main__":
    main()
