#!/usr/bin/env python3
"""Greedy continuations of SmolLM2-135M-Instruct.Q4_1.gguf by llama.cpp, as the reference for
tests/tests/smollm2.rs.

Usage: scripts/smollm2/llama_cpp_greedy.py LLAMA_CPP_BIN_DIR
  LLAMA_CPP_BIN_DIR holds llama-completion built from ../shared/tools/llama-cpp-ref (CPU build
  recipe in its README). Reads models/SmolLM2-135M-Instruct.Q4_1.gguf (models/fetch.sh) and
  writes tests/fixtures/smollm2/greedy.json: for each prompt, llama.cpp's 64-token greedy text.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "fixtures", "smollm2", "greedy.json")
N = 64
# An F32 KV cache without flash attention is the same arithmetic as Nexus's CPU path;
# llama.cpp's default (flash attention, F16 cache with an F16 accumulator) rounds more.
EXTRA = ["-fa", "off", "-ctk", "f32", "-ctv", "f32"]
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a village by the sea, there lived",
    "Les 3 meilleures façons d'apprendre une langue étrangère sont :",
]


def main():
    bindir = sys.argv[1]
    results = []
    for p in PROMPTS:
        out = subprocess.run(
            [os.path.join(bindir, "llama-completion"), "-m", MODEL, "-p", p, "-n", str(N), "--temp", "0",
             "-no-cnv", "--no-display-prompt", "-t", "2", "-c", "512", "--no-warmup", "-s", "1"] + EXTRA,
            capture_output=True, check=True)
        text = out.stdout.decode("utf-8")
        # llama-completion marks an end-of-generation token with " [end of text]" after the text.
        marker = " [end of text]"
        eog = marker in text
        if eog:
            text = text[: text.rindex(marker)]
        elif text.endswith("\n\n"):
            # Without an end-of-generation token llama-completion prints "\n\n" on exit.
            text = text[:-2]
        results.append({"prompt": p, "n_predict": N, "llama_cpp_text": text, "ended_with_eog": eog})
        print(repr(text[:80]))
    with open(OUT, "w") as f:
        json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                   "model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                   "generator": "scripts/smollm2/llama_cpp_greedy.py",
                   "llama_cpp": "llama-cpp-python 0.3.36 vendored llama.cpp (ggml 0.25.3), CPU build",
                   "llama_cpp_flags": EXTRA,
                   "prompts": results}, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
