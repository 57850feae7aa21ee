#!/usr/bin/env bash
# Fills .carry/lora_peft/ (ignored) with what scripts/lora/make_peft_fixtures.py needs from
# llama.cpp, for carrying to the GPU machine: llama.cpp/{convert_hf_to_gguf.py,
# convert_lora_to_gguf.py, conversion/, gguf-py/, models/ggml-vocab-llama-spm.gguf} out of the
# llama-cpp-python 0.3.36 sdist, and the gguf 0.19.0 wheel (transformers needs gguf installed as
# a package to read the vocabulary GGUF).
#
#   scripts/lora/prepare_carry.sh llama_cpp_python-0.3.36.tar.gz
#
# The sdist: `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36` (it may stop
# while building metadata; the tarball is then under /tmp/pip-unpack-*/).
set -euo pipefail
SDIST=${1:?usage: prepare_carry.sh llama_cpp_python-0.3.36.tar.gz}
cd "$(dirname "$0")/../.."
DEST=.carry/lora_peft
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
V=llama_cpp_python-0.3.36/vendor/llama.cpp
tar xzf "$SDIST" -C "$TMP" "$V/convert_hf_to_gguf.py" "$V/convert_lora_to_gguf.py" "$V/conversion" "$V/gguf-py" \
    "$V/models/ggml-vocab-llama-spm.gguf"
rm -rf "$DEST"
mkdir -p "$DEST"
mv "$TMP/$V" "$DEST/llama.cpp"
python3 -m pip download --no-deps gguf==0.19.0 -d "$DEST"
du -sh "$DEST"
