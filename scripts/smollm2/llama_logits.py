#!/usr/bin/env python3
"""Writes tests/fixtures/smollm2/logits.json: llama.cpp's greedy decoding of the prompts of
greedy.json on the real SmolLM2 file, with a hash of every step's whole logits row, so
tests/tests/smollm2.rs can require our CPU logits to be bitwise llama.cpp's (issue 4).

    scripts/smollm2/llama_logits.py --llama-src /tmp/lc/llama.cpp --build /tmp/lc/build-cpu

With an adapter (tests/fixtures/smollm2/lora_logits.json, tests/tests/smollm2_lora.rs):

    NEXUS_LORA_OUT=/tmp/r16.gguf cargo test --release -p nexus-tests --test smollm2_lora \
        -- --ignored write_reference_adapter
    scripts/smollm2/llama_logits.py ... --lora /tmp/r16.gguf --prompts 2 --steps 32 \
        --out tests/fixtures/smollm2/lora_logits.json

--build is a llama.cpp CPU build made with ../shared/tools/llama-cpp-ref/README.md's recipe
plus -DBUILD_SHARED_LIBS=ON (target `llama`). It compiles llama_logits.cpp beside this file
against it and runs it once per prompt (F32 K/V cache, no flash attention, 2 threads).
"""
import argparse
import hashlib
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def cpu_description():
    flags, model = set(), "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {isa} (llama.cpp built with -march=native)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-src", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/smollm2/logits.json"))
    ap.add_argument("--lora", help="attach this LoRA GGUF at scale 1 (llama.cpp's --lora)")
    ap.add_argument("--prompts", type=int, default=0, help="only the first N prompts (0: all)")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.lora:
        env["LORA"] = args.lora

    work = tempfile.mkdtemp()
    tool = os.path.join(work, "llama_logits")
    libdir = os.path.join(args.build, "bin")
    subprocess.run(
        ["g++", "-O2", "-std=c++17", "-I", os.path.join(args.llama_src, "include"),
         "-I", os.path.join(args.llama_src, "ggml/include"), os.path.join(HERE, "llama_logits.cpp"),
         "-L", libdir, "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{libdir}", "-o", tool],
        check=True,
    )
    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    greedy = json.load(open(os.path.join(ROOT, "tests/fixtures/smollm2/greedy.json")))
    cases = []
    for case in greedy["prompts"][: args.prompts or None]:
        prompt_file = os.path.join(work, "prompt.txt")
        with open(prompt_file, "w", encoding="utf-8") as f:
            f.write(case["prompt"])
        out = subprocess.run([tool, args.model, str(args.steps), prompt_file],
                             check=True, capture_output=True, text=True, env=env).stdout.splitlines()
        ids = [int(t) for t in out[0].split()[1:]]
        steps = []
        for line in out[1:]:
            step, top, digest, top_logit, second, second_logit = line.split()
            steps.append({"token": int(top), "logits_fnv1a64": digest, "top_logit": float.fromhex(top_logit),
                          "second": int(second), "second_logit": float.fromhex(second_logit)})
        cases.append({"prompt": case["prompt"], "ids": ids, "steps": steps})
    fixture = {
        "model": os.path.basename(args.model),
        "model_sha256": sha,
        "generator": "scripts/smollm2/llama_logits.py (llama_logits.cpp)",
        "llama_cpp": greedy["llama_cpp"],
        "machine": cpu_description(),
        "context": "n_ctx 512, one batch for the prompt, F32 K/V cache, flash attention off, 2 threads",
        "hash": "FNV-1a 64 of the little-endian f32 bytes of the whole logits row",
        "lora": os.path.basename(args.lora) if args.lora else None,
        "prompts": cases,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(cases)} prompts x {args.steps} steps")


if __name__ == "__main__":
    main()
