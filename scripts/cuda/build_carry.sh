#!/usr/bin/env bash
# Builds (here, no GPU needed) the binaries scripts/cuda/device_check.sh runs on the GPU
# machine, stripped, into .carry/cuda/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry/cuda
T=${CARGO_TARGET_DIR:-target}
pick() { grep -o "$T/release/deps/$1-[a-z0-9]*" | head -1; }
k=$(cargo test --release -p nexus-kernels --features cuda --test cuda --no-run 2>&1 | pick cuda)
k8=$(cargo test --release -p nexus-kernels --features cuda --test cuda_q8 --no-run 2>&1 | pick cuda_q8)
m=$(cargo test --release -p nexus-tests --features cuda --test cuda_model --no-run 2>&1 | pick cuda_model)
l=$(cargo test --release -p nexus-tests --features cuda --test cuda_lora --no-run 2>&1 | pick cuda_lora)
# The CLI's adapter tests (run and chat on --device cuda); they run target/release/nexus-cli
# by the absolute path of this checkout, which device_check.sh recreates there.
cl=$(cargo test --release -p nexus-cli --features cuda --test lora --no-run 2>&1 | pick lora)
cc=$(cargo test --release -p nexus-cli --features cuda --test chat_lora --no-run 2>&1 | pick chat_lora)
# The training engine against the CPU engine (train/tests/cuda_engine.rs).
tr=$(cargo test --release -p nexus-train --features cuda --test cuda_engine --no-run 2>&1 | pick cuda_engine)
# `distill train` with train.device = cuda against the CPU's losses (cli/tests/distill.rs).
cd=$(cargo test --release -p nexus-cli --features cuda --test distill --no-run 2>&1 | pick distill)
cargo build --release -p nexus-cli --features cuda
cp "$k" .carry/cuda/cuda_kernels
cp "$k8" .carry/cuda/cuda_kernels_q8
cp "$m" .carry/cuda/cuda_model
cp "$l" .carry/cuda/cuda_lora
cp "$cl" .carry/cuda/cli_lora
cp "$cc" .carry/cuda/cli_chat_lora
cp "$tr" .carry/cuda/cuda_train
cp "$cd" .carry/cuda/cli_distill
cp $T/release/nexus-cli .carry/cuda/nexus-cli
rm -f .carry/cuda/checkout.txt .carry/cuda/cli_path.txt
strip .carry/cuda/*
pwd > .carry/cuda/checkout.txt
# Where the CLI test binaries look for nexus-cli (env!("CARGO_BIN_EXE_nexus-cli")).
realpath $T/release/nexus-cli > .carry/cuda/cli_path.txt
ls -la .carry/cuda
