#!/usr/bin/env bash
# Makes the tests/fixtures/lora_peft/ files on the GPU machine (only its CPU is used), from the
# repository root, in one `run` call with .carry/lora_peft carried (scripts/lora/prepare_carry.sh):
#
#   scripts/lora/run_on_device.sh "$OUT/lora_peft"
#
# then copy the returned lora_peft/ folder to tests/fixtures/lora_peft/ as it is.
set -euo pipefail
OUT=${1:?usage: run_on_device.sh OUT_DIR}
CARRY=${CARRY:-.carry/lora_peft}
python3 -m pip install --no-index --no-deps --target /tmp/lora-peft-site "$CARRY"/gguf-0.19.0-py3-none-any.whl
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
PYTHONPATH=/tmp/lora-peft-site python3 scripts/lora/make_peft_fixtures.py \
    --llama-cpp "$CARRY/llama.cpp" --work /tmp/lora-peft-work --out "$OUT"
du -ab "$OUT" | sort -n | tail -25
