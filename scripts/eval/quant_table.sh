#!/usr/bin/env bash
# Perplexity, KL divergence and top-1 agreement against F16 for SmolLM2-135M quantizations,
# from llama.cpp's llama-perplexity and from nexus-cli perplexity, on the same files and text
# (the table in docs/QUANT.md). Logs go to $OUT (default /tmp/quant-table).
#
# The model files: /tmp/smollm2-f32.gguf is an F32 dequantization of
# models/SmolLM2-135M-Instruct.Q4_1.gguf; the others are made from it with
#   llama-quantize /tmp/smollm2-f32.gguf /tmp/smollm2-TYPE.gguf TYPE
# so every file holds Q4_1-rounded weights.
#
# usage: scripts/eval/quant_table.sh [CTX] [TYPES...]
set -euo pipefail
ctx=${1:-128}
shift || true
types=${*:-"f32 q8_0 q6_k q5_0 q4_k_m q4_1 q4_0"}
bin=${LLAMA_BIN:-/work/ref/build-cpu/bin}
nexus=${NEXUS:-target/release/nexus-cli}
text=tests/fixtures/eval/nexus-prose.txt
out=${OUT:-/tmp/quant-table}
mkdir -p "$out"
for t in $types; do
    f=/tmp/smollm2-$t.gguf
    [ -f "$f" ] || "$bin/llama-quantize" /tmp/smollm2-f32.gguf "$f" "${t^^}" >"$out/quantize-$t.log" 2>&1
done
"$bin/llama-perplexity" -m /tmp/smollm2-f16.gguf -f $text -c "$ctx" -t 2 --kl-divergence-base "$out/f16.llama.kld" >"$out/llama-f16.log" 2>&1
"$nexus" perplexity -m /tmp/smollm2-f16.gguf -f $text -c "$ctx" -t 2 --kl-divergence-base "$out/f16.nexus.kl" >"$out/nexus-f16.log" 2>&1
for t in $types; do
    "$bin/llama-perplexity" -m /tmp/smollm2-$t.gguf -c "$ctx" -t 2 --kl-divergence-base "$out/f16.llama.kld" --kl-divergence >"$out/llama-$t.log" 2>&1
    "$nexus" perplexity -m /tmp/smollm2-$t.gguf -f $text -c "$ctx" -t 2 --kl-divergence "$out/f16.nexus.kl" >"$out/nexus-$t.log" 2>&1
done
for t in f16 $types; do
    echo "== $t $(stat -c %s /tmp/smollm2-$t.gguf) bytes"
    grep -hE "Final estimate|Mean PPL\(Q\)  |Mean    KLD|Same top p|PPL\(base\)|Mean KL|Same top token|PPL\(Q\)/PPL" "$out/llama-$t.log" "$out/nexus-$t.log" || true
done
