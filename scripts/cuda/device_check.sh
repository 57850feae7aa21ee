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
  if [ "${MEMCHECK_ALL:-1}" = 1 ]; then
    log "memcheck (kernels)"; compute-sanitizer --tool memcheck --error-exitcode 9 $B/cuda_kernels --test-threads=1 > "$OUT/memcheck.log" 2>&1; log "rc=$?"
    tail -3 "$OUT/memcheck.log" | tee -a "$OUT/summary.txt"
  fi
fi
if [[ $STAGE == *bench* ]]; then
  for spec in ${BENCH:-smollm2-135m:q4_1 smollm2-135m:q8_0 smollm2-135m:q4_k_m llama-3.2-1b:f16 llama-3.2-1b:q8_0 llama-3.2-1b:q4_0 llama-3.2-1b:q4_k_m llama-3.1-8b:q4_k_m}; do
    cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
    [ -f "$f" ] || $B/nexus-cli synth --config "$cfg" --type "$ty" -o "$f" 2>> "$OUT/synth.log"
    $B/nexus-cli bench -m "$f" --device cuda -p ${PP:-512} -n 128 -r ${REPS:-5} 2>> "$OUT/bench.err" | tee -a "$OUT/bench.md" | grep -E "pp|tg" | tee -a "$OUT/summary.txt"
  done
fi
# The cost of an adapter on the GPU (the issue's bound: tg with one rank-16 adapter on all seven
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
# The CLI on the GPU with adapters: `run --lora` and chat's `/lora` switches against the merged
# models there (cli/tests/lora.rs, chat_lora.rs). Those test binaries start nexus-cli by the
# absolute path of the checkout that built them (.carry/cuda/checkout.txt): recreate it here.
if [[ $STAGE == *cli* ]]; then
  co=$(cat $B/checkout.txt)
  if [ ! -e "$co" ]; then mkdir -p "$(dirname "$co")" && ln -s "$PWD" "$co"; fi
  mkdir -p target/release && cp $B/nexus-cli target/release/nexus-cli
  log "CLI adapters on CUDA"
  $B/cli_lora --test-threads=1 adapters_run_on_cuda > "$OUT/cli_lora.log" 2>&1; log "rc=$?"
  $B/cli_chat_lora --test-threads=1 answers_after_a_switch > "$OUT/cli_chat_lora.log" 2>&1; log "rc=$?"
  grep -E "^test |panicked|left:|right:" "$OUT/cli_lora.log" "$OUT/cli_chat_lora.log" | head -20 | tee -a "$OUT/summary.txt"
fi
# Speculative decoding on the GPU with a real model (the committed student; SmolLM2 itself is
# too big to carry): the target is the student, the draft the student requantized to Q4_0,
# close but not equal, so drafts are both accepted and rejected. At --temp 0 the text must
# equal the target's alone; bench reports acceptance and speedup.
if [[ $STAGE == *spec* ]]; then
  S=models/smollm2-student.q8_0.gguf; D=$M/student-q4_0.gguf
  [ -f "$D" ] || $B/nexus-cli quantize "$S" "$D" q4_0 > "$OUT/spec_quantize.log" 2>&1
  P="The three most important things to know about the ocean are"
  log "speculative on CUDA"
  $B/nexus-cli run -m "$S" -p "$P" -n 96 --temp 0 --device cuda > "$OUT/spec_alone.txt" 2> "$OUT/spec.err"
  for dm in 4 8 16; do
    $B/nexus-cli run -m "$S" --model-draft "$D" --draft-max $dm -p "$P" -n 96 --temp 0 --device cuda > "$OUT/spec_$dm.txt" 2>> "$OUT/spec.err"
    if cmp -s "$OUT/spec_alone.txt" "$OUT/spec_$dm.txt"; then log "draft-max $dm: same text"; else log "draft-max $dm: TEXT DIFFERS"; fi
  done
  grep -E "accept|draft" "$OUT/spec.err" | tail -4 | tee -a "$OUT/summary.txt"
  $B/nexus-cli bench -m "$S" --model-draft "$D" --device cuda -n 128 -r 3 2>> "$OUT/spec.err" | tee "$OUT/spec_bench.md" | tee -a "$OUT/summary.txt"
fi
