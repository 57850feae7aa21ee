#!/usr/bin/env python3
"""Writes tests/fixtures/gguf/all_types.gguf with llama.cpp's `gguf` Python package.

The file holds one metadata key of every GGUF value type (nested arrays included) and three
small tensors. The Rust test `gguf_python_compat` writes the same content with our writer
and requires the two files to be byte-identical: that proves what we write loads in the
`gguf` package, and reading this file proves we load what it writes.

Run: pip install numpy && PYTHONPATH=<llama.cpp>/gguf-py python3 scripts/gguf/make_all_types.py
(gguf 0.19.0, from ../shared/tools/llama-cpp-ref/gguf-py, was used for the committed file.)
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as T

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "gguf", "all_types.gguf")


def main():
    w = gguf.GGUFWriter(OUT, "llama")  # writes general.architecture = "llama" first
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 3.25)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo, wörld ✓")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.0e-300)
    w.add_key_value("test.array.i32", [1, -2, 3], T.ARRAY, sub_type=T.INT32)
    w.add_key_value("test.array.f32", [0.5, -1.5], T.ARRAY, sub_type=T.FLOAT32)
    w.add_array("test.array.string", ["a", "", "ŧöken"])
    w.add_key_value("test.array.nested", [[1, 2], [3]], T.ARRAY, sub_type=T.ARRAY)
    w.add_custom_alignment(64)  # sets general.alignment and pads with it

    f32 = (np.arange(12, dtype=np.float32) - 5.5).reshape(3, 4)
    w.add_tensor("t.f32", f32)
    f16 = (np.arange(32, dtype=np.float32) / 7).astype(np.float16)
    w.add_tensor("t.f16", f16)
    # One Q8_0 block (34 bytes): f16 scale 1.0 then 32 int8 values -16..15.
    q8 = np.frombuffer(np.float16(1.0).tobytes() + bytes((i - 16) & 0xFF for i in range(32)), dtype=np.uint8)
    w.add_tensor("t.q8_0", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    sys.exit(main())
