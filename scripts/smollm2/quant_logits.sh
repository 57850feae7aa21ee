#!/usr/bin/env bash
# Writes tests/fixtures/smollm2/quant/TYPE.json for tests/tests/smollm2_quant_types.rs: the real
# SmolLM2 file requantized by `nexus-cli quantize` into TYPE, then llama.cpp's greedy decoding
# of it with a hash of every logits row (scripts/smollm2/llama_logits.py, 2 prompts x 16 steps).
#
#   scripts/smollm2/quant_logits.sh LLAMA_SRC LLAMA_BUILD [TYPE...]
#
# LLAMA_SRC/LLAMA_BUILD as for llama_logits.py (a CPU build with shared libraries, made with
# -march=native on an x86 CPU with AVX2: its repacked Q4_0 rows are part of what is compared).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set/p' "$0" | grep '^#' >&2; exit 2; }
src=$1 build=$2
shift 2
types=("${@:-q8_0 q4_0 q5_0 q6_k q4_k_m q5_k_m}")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p nexus-cli --manifest-path "$root/Cargo.toml"
for t in ${types[@]}; do
    "$root/target/release/nexus-cli" quantize "$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/$t.gguf" "$t"
    python3 "$root/scripts/smollm2/llama_logits.py" --llama-src "$src" --build "$build" --model "$work/$t.gguf" \
        --prompts 2 --steps 16 --out "$root/tests/fixtures/smollm2/quant/$t.json"
done
