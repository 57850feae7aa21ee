#!/usr/bin/env bash
# On the GPU machine (run from the repository root with the binaries built here and carried
# in .carry/cuda/): kernel parity tests, whole-model parity with the CPU backend, the kernel
# tests again under compute-sanitizer memcheck, LoRA parity (tests/tests/cuda_lora.rs), then
# `nexus-cli bench` on synthetic models of real shapes, with and without a rank-16 adapter
# (stage lora). Logs go to $OUT. Build the carried binaries with scripts/cuda/build_carry.sh.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} NEXUS_REQUIRE_CUDA=1 PATH=/usr/local/cuda/bin:$PATH
B=${B:-.carry/cuda}
STAGE=${STAGE:-check,bench,lora}
M=$HOME/nexus-models; mkdir -p "$M"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
if [[ $STAGE == *check* ]]; then
  log "kernel parity"; $B/cuda_kernels --test-threads=1 --nocapture > "$OUT/kernels.log" 2>&1; log "rc=$?"
  log "model parity"; $B/cuda_model --test-threads=1 --nocapture > "$OUT/model.log" 2>&1; log "rc=$?"
  grep -E "steps|FAILED|panicked" "$OUT/model.log" | head -20 | tee -a "$OUT/summary.txt"
  log "LoRA parity"; $B/cuda_lora --test-threads=1 --nocapture > "$OUT/lora.log" 2>&1; log "rc=$?"
  grep -E "adapters move|FAILED|panicked" "$OUT/lora.log" | head -20 | tee -a "$OUT/summary.txt"
  log "memcheck (LoRA kernels)"; compute-sanitizer --tool memcheck --error-exitcode 9 $B/cuda_lora --test-threads=1 lora_matvec > "$OUT/memcheck_lora.log" 2>&1; log "rc=$?"
  tail -3 "$OUT/memcheck_lora.log" | tee -a "$OUT/summary.txt"
  log "memcheck (kernels)"; compute-sanitizer --tool memcheck --error-exitcode 9 $B/cuda_kernels --test-threads=1 > "$OUT/memcheck.log" 2>&1; log "rc=$?"
  tail -3 "$OUT/memcheck.log" | tee -a "$OUT/summary.txt"
fi
if [[ $STAGE == *bench* ]]; then
  for spec in ${BENCH:-smollm2-135m:q4_1 smollm2-135m:q8_0 smollm2-135m:q4_k_m llama-3.2-1b:f16 llama-3.2-1b:q8_0 llama-3.2-1b:q4_0 llama-3.2-1b:q4_k_m llama-3.1-8b:q4_k_m}; do
    cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
    [ -f "$f" ] || $B/nexus-cli synth --config "$cfg" --type "$ty" -o "$f" 2>> "$OUT/synth.log"
    $B/nexus-cli bench -m "$f" --device cuda -p ${PP:-512} -n 128 -r ${REPS:-5} 2>> "$OUT/bench.err" | tee -a "$OUT/bench.md" | grep -E "pp|tg" | tee -a "$OUT/summary.txt"
  done
fi
# The cost of an adapter on the GPU (the bound: tg with one rank-16 adapter on all seven
# projections at most 10% slower than the base): the base and the adapted model back to back.
# The adapter (random, F16, every projection of every layer) is written by an ignored test of
# the cuda_lora binary, so no Python is needed on this machine.
if [[ $STAGE == *lora* ]]; then
  for spec in ${LORA_BENCH:-smollm2-135m:q4_1 smollm2-135m:q8_0 llama-3.2-1b:q8_0 llama-3.2-1b:q4_k_m}; do
    cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf; a=$M/$cfg-$ty-r16.lora.gguf
    [ -f "$f" ] || $B/nexus-cli synth --config "$cfg" --type "$ty" -o "$f" 2>> "$OUT/synth.log"
    [ -f "$a" ] || NEXUS_LORA_BASE=$f NEXUS_LORA_OUT=$a NEXUS_LORA_RANK=16 $B/cuda_lora --ignored --exact write_bench_adapter >> "$OUT/lora_make.log" 2>&1
    [ -f "$a" ] || { log "no adapter for $f (see $OUT/lora_make.log)"; continue; }
    for extra in "" "--lora $a"; do
      log "bench $cfg $ty ${extra:-(base)}"
      $B/nexus-cli bench -m "$f" --device cuda -p ${PP:-512} -n 128 -r ${REPS:-5} $extra 2>> "$OUT/bench_lora.err" | tee -a "$OUT/bench_lora.md" | grep -E "pp|tg" | tee -a "$OUT/summary.txt"
    done
  done
fi
