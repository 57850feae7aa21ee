#!/usr/bin/env bash
# Builds (here, no GPU needed) the binaries scripts/cuda/device_check.sh runs on the GPU
# machine, stripped, into .carry/cuda/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry/cuda
pick() { grep -o "target/release/deps/$1-[a-z0-9]*" | head -1; }
k=$(cargo test --release -p nexus-kernels --features cuda --test cuda --no-run 2>&1 | pick cuda)
m=$(cargo test --release -p nexus-tests --features cuda --test cuda_model --no-run 2>&1 | pick cuda_model)
l=$(cargo test --release -p nexus-tests --features cuda --test cuda_lora --no-run 2>&1 | pick cuda_lora)
# The CLI's adapter tests (run and chat on --device cuda); they run target/release/nexus-cli
# by the absolute path of this checkout, which device_check.sh recreates there.
cl=$(cargo test --release -p nexus-cli --features cuda --test lora --no-run 2>&1 | pick lora)
cc=$(cargo test --release -p nexus-cli --features cuda --test chat_lora --no-run 2>&1 | pick chat_lora)
cargo build --release -p nexus-cli --features cuda
cp "$k" .carry/cuda/cuda_kernels
cp "$m" .carry/cuda/cuda_model
cp "$l" .carry/cuda/cuda_lora
cp "$cl" .carry/cuda/cli_lora
cp "$cc" .carry/cuda/cli_chat_lora
cp target/release/nexus-cli .carry/cuda/nexus-cli
rm -f .carry/cuda/checkout.txt
strip .carry/cuda/*
pwd > .carry/cuda/checkout.txt
ls -la .carry/cuda
