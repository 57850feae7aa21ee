#!/usr/bin/env bash
# Real-size check of `nexus-cli convert` against llama.cpp's convert_hf_to_gguf.py on the GPU
# machine (CPU work only), with SmolLM2-135M-Instruct: the Q4_1 GGUF is turned into an HF
# directory by transformers, both converters convert it, and their manifests are compared.
#
# The 98 MB GGUF does not fit one call's 64 MiB working tree, so it travels in two parts over
# two back-to-back calls (files outside the repo copy survive the ~30 s a machine stays warm).
#
# Here (once; .carry/ is git-ignored; nexus-cli built with `cargo build --release -p nexus-cli`):
#   M=models/SmolLM2-135M-Instruct.Q4_1.gguf
#   mkdir -p .carry/rt1/lcpp/models .carry/rt2
#   cp -r <llama.cpp>/{conversion,convert_hf_to_gguf.py,gguf-py} .carry/rt1/lcpp/
#   cp <llama.cpp>/models/ggml-vocab-qwen2.gguf .carry/rt1/lcpp/models/   # for make_hf_fixtures.py
#   cp gguf-0.19.0-py3-none-any.whl .carry/rt1/
#   sha256sum $M | cut -d' ' -f1 > .carry/rt2/model.sha256
#   head -c 47185920 $M > .carry/rt1/part1; tail -c +47185921 $M > .carry/rt2/part2
#   strip -o /tmp/nx target/release/nexus-cli && gzip -9 -c /tmp/nx > .carry/rt2/nexus-cli.gz
# Device, call 1 (carry .carry/rt1):  scripts/convert/smollm2_roundtrip.sh stage
# Device, call 2 (carry .carry/rt2):  scripts/convert/smollm2_roundtrip.sh run
# Call 2 leaves $OUT/smollm2.tgz (llama.cpp's manifests, ours, logs, summary.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STASH="$HOME/nexus-rt"
case "${1:-}" in
stage)
    mkdir -p "$STASH"
    cp -r "$ROOT/.carry/rt1/part1" "$ROOT/.carry/rt1/lcpp" "$ROOT"/.carry/rt1/*.whl "$STASH/"
    echo "staged in $STASH: $(du -sh "$STASH" | cut -f1)"
    ;;
run)
    [ -f "$STASH/part1" ] || { echo "error: $STASH/part1 missing (the machine went back between calls); run 'stage' again" >&2; exit 2; }
    W=/tmp/smol; mkdir -p $W/gguf
    cat "$STASH/part1" "$ROOT/.carry/rt2/part2" > $W/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
    echo "$(cat "$ROOT/.carry/rt2/model.sha256")  $W/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
    gunzip -c "$ROOT/.carry/rt2/nexus-cli.gz" > $W/nexus-cli && chmod +x $W/nexus-cli
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    python3 "$ROOT/scripts/convert/smollm2_roundtrip.py" --gguf $W/gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
        --llama-cpp "$STASH/lcpp" --nexus $W/nexus-cli --work $W --out "${OUT:-$W/out}"
    ;;
*) echo "usage: $0 stage|run" >&2; exit 2 ;;
esac
