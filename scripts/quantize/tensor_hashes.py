#!/usr/bin/env python3
"""Prints a GGUF file's general.file_type and, per tensor in file order, its name, shape
(ggml order), ggml type name and the sha256 of its data bytes, as JSON.
Usage: tensor_hashes.py FILE.gguf [LLAMA_CPP_DIR]   (gguf-py from LLAMA_CPP_DIR, default
/work/ref/llama.cpp)."""
import hashlib
import json
import sys

sys.path.insert(0, (sys.argv[2] if len(sys.argv) > 2 else "/work/ref/llama.cpp") + "/gguf-py")
import gguf  # noqa: E402

r = gguf.GGUFReader(sys.argv[1])
ft = r.fields["general.file_type"]
out = {
    "file_type": int(ft.parts[ft.data[0]][0]),
    "tensors": [
        {
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": t.tensor_type.name.lower().replace("_k", "_K"),
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
        }
        for t in r.tensors
    ],
}
json.dump(out, sys.stdout, indent=1)
print()
