#!/usr/bin/env python3
"""onnxruntime's real-time factor on the Piper voice, the reference for `cargo bench --bench vits`.

Runs models/en_US-joe-medium.onnx on the same 147 phoneme ids as benches/benches/vits.rs (one
sentence, scales 0, 1, 0) and on those ids five times over (a five-sentence text: each sentence
synthesized in turn, as Piper does), with intra_op_num_threads = 1 and 2, inter_op 1. Prints the
median synthesis time of REPS runs after two warm-ups and RTF = time / audio duration.

Usage (needs numpy and onnxruntime from pip):
  python3 scripts/voice/ort_rtf.py [--onnx models/en_US-joe-medium.onnx] [--reps 7]
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def bench_ids() -> list[int]:
    """The IDS array of benches/benches/vits.rs, so both sides synthesize the same input."""
    src = (ROOT / "benches/benches/vits.rs").read_text()
    body = re.search(r"const IDS: \[i64; (\d+)\] = \[(.*?)\];", src, re.S)
    ids = [int(t) for t in body.group(2).replace("\n", " ").split(",") if t.strip()]
    assert len(ids) == int(body.group(1))
    return ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", default=str(ROOT / "models/en_US-joe-medium.onnx"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    ids = np.array([bench_ids()], dtype=np.int64)
    feeds = {
        "input": ids,
        "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }
    print(f"onnxruntime {ort.__version__}, {ids.shape[1]} ids")
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
        audio = sess.run(None, feeds)[0]
        seconds = audio.size / 22050
        for sentences in (1, 5):
            for _ in range(2):
                sess.run(None, feeds)
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                for _ in range(sentences):
                    sess.run(None, feeds)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"threads {threads}  sentences {sentences}  median {med * 1e3:7.1f} ms  "
                  f"audio {seconds * sentences:5.2f} s  RTF {med / (seconds * sentences):.3f}")


if __name__ == "__main__":
    main()
