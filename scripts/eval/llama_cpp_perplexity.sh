#!/usr/bin/env bash
# Runs llama.cpp's llama-perplexity on one model and text and keeps the lines that matter
# (the running [chunk]value list and the final estimate) as a reference fixture.
#
# usage: scripts/eval/llama_cpp_perplexity.sh MODEL TEXT CTX OUT
#   e.g. scripts/eval/llama_cpp_perplexity.sh models/SmolLM2-135M-Instruct.Q4_1.gguf \
#          tests/fixtures/eval/nexus-prose.txt 128 \
#          tests/fixtures/eval/nexus-prose.smollm2-q4_1.c128.llama_cpp.txt
# LLAMA_PERPLEXITY overrides the binary (default: /work/ref/build-cpu/bin/llama-perplexity);
# LLAMA_FLAGS adds options, e.g. "-fa off -ctk f32 -ctv f32 -b 128" for our arithmetic (an F32
# K/V cache, no flash attention, one chunk per batch), which tests/tests/smollm2_perplexity.rs
# requires us to equal exactly.
set -euo pipefail
model=$1 text=$2 ctx=$3 out=$4
bin=${LLAMA_PERPLEXITY:-/work/ref/build-cpu/bin/llama-perplexity}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
"$bin" -m "$model" -f "$text" -c "$ctx" -t 2 ${LLAMA_FLAGS:-} >"$log" 2>&1
{
    echo "# llama-perplexity -m $(basename "$model") -f $(basename "$text") -c $ctx -t 2${LLAMA_FLAGS:+ $LLAMA_FLAGS}"
    echo "# model sha256 $(sha256sum "$model" | cut -d' ' -f1)"
    grep -E '^\[1\]|Final estimate|calculating perplexity|tokenizes to' "$log"
} >"$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
