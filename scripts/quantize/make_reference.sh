#!/usr/bin/env bash
# Regenerates tests/fixtures/quantize/<model>.json: for each reference model (written by
# `cargo run -p nexus-tests --example write_tiny`) and each quantization type, llama-quantize's
# general.file_type and per-tensor name, shape, type and sha256 of the data.
# Usage: scripts/quantize/make_reference.sh [LLAMA_QUANTIZE] [LLAMA_CPP_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
quantize="${1:-/work/ref/build-cpu/bin/llama-quantize}"
llama_cpp="${2:-/work/ref/llama.cpp}"
out="$root/tests/fixtures/quantize"
types="q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k f16 bf16 f32"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$root"
cargo build -q --release -p nexus-tests --example write_tiny
for model in tiny256 tiny576; do
    cargo run -q --release -p nexus-tests --example write_tiny -- "$model" "$work/$model.gguf"
    {
        echo "{"
        sep=""
        for t in $types; do
            # 1 thread: the output does not depend on it, and the log stays in order.
            "$quantize" "$work/$model.gguf" "$work/$model-$t.gguf" "$t" 1 > "$work/log" 2>&1 \
                || { cat "$work/log" >&2; exit 1; }
            printf '%s"%s": ' "$sep" "$t"
            python3 "$here/tensor_hashes.py" "$work/$model-$t.gguf" "$llama_cpp"
            sep=","
            rm "$work/$model-$t.gguf"
        done
        echo "}"
    } > "$work/$model.json"
    python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), indent=1); open(sys.argv[2], "a").write("\n")' \
        "$work/$model.json" "$out/$model.json"
done
ls -l "$out"
