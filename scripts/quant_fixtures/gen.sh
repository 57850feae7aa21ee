#!/usr/bin/env bash
# Regenerates tests/fixtures/quant/*.bin from ggml's reference quantizers.
# Usage: scripts/quant_fixtures/gen.sh [GGML_DIR]   (default /work/ref/llama.cpp/ggml)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ggml="${1:-${GGML_DIR:-/work/ref/llama.cpp/ggml}}"
out="$root/tests/fixtures/quant"
[ "$(printf '\1\0' | od -An -tu2 | tr -d ' ')" = 1 ] || { echo "needs a little-endian host" >&2; exit 1; }
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
# -ffp-contract=off and no -march: FMA contraction would change ggml's rounding and its bytes.
cflags=(-O2 -std=c11 -ffp-contract=off -I"$ggml/include" -I"$ggml/src" -I"$ggml/src/ggml-cpu")
gcc "${cflags[@]}" -c "$ggml/src/ggml-quants.c" -o "$build/ggml-quants.o"
gcc "${cflags[@]}" -c "$here/gen.c" -o "$build/gen.o"
gcc "$build/gen.o" "$build/ggml-quants.o" -lm -o "$build/gen"
mkdir -p "$out"
"$build/gen" "$out"
ls -l "$out"/*.bin
