#!/usr/bin/env bash
# The reference distillation run (models/distill/smollm2-student.toml) on the GPU machine, in
# back-to-back calls of at most 10 minutes. That machine has no Rust, no model files and no
# network, and one call carries at most 64 MiB *including the working tree* (the committed
# student GGUF and the test fixtures alone are 52 MB: move what the calls do not need — every
# tracked directory but scripts/ and models/, and models/smollm2-student.q8_0.gguf — aside
# while they run, which leaves ~0.5 MB). So this side builds a
# CUDA nexus-cli, compresses it and the teacher (xz) and packs the corpus of
# scripts/train/make_corpus.py and the profile and teacher answers made here on the CPU; there,
# everything lives in ~/ref, which survives between calls while the machine stays warm (30 s).
#
#   here:   scripts/train/device_reference.sh prepare     # .carry/ref/: nexus-cli.xz teacher.xz.a{a,b}
#                                                         #   corpus.txz seed.tgz cuda_train.xz distill_test.xz
#   call 0, while the engine's code is new on the GPU (carried: nexus-cli.xz cuda_train.xz
#   distill_test.xz, ~10 MB; the tree keeps tests/fixtures, which the teacher's parity test
#   reads — only the student GGUF goes aside):
#           scripts/train/device_reference.sh receive && scripts/train/device_reference.sh check
#                                                         # parity, a CPU-vs-CUDA training run, step speeds
#   call 1: scripts/train/device_reference.sh receive     # carried: nexus-cli.xz teacher.xz.aa corpus.txz
#   call 2: scripts/train/device_reference.sh receive && scripts/train/device_reference.sh train 420 &&
#           scripts/train/device_reference.sh finish      # carried: teacher.xz.ab seed.tgz
#           # joins the teacher, trains (GPU) until 420 s have passed (a checkpoint every
#           # train.checkpoint_every steps and at the end), verifies, exports, packs into $OUT
#   later:  scripts/train/device_reference.sh train SECONDS   # resumes from the last checkpoint
#           scripts/train/device_reference.sh ablation STEPS  # scripts/train/ablation.sh on the GPU
#
# The profile and the teacher's answers are made here (`distill train -c CFG --set
# train.device=cpu --set train.steps=1` after `distill profile` with the config's data.prompts
# removed: the profile's calibration tokens are the first source's, which the answers do not
# change), so the GPU's time goes to training.
set -euo pipefail
cd "$(dirname "$0")/../.."
TEACHER=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=$(grep -o '[0-9a-f]\{64\}' models/fetch.sh | head -1)
REF=~/ref
CFG=models/distill/smollm2-student.toml
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PATH=/usr/local/cuda/bin:$PATH
cli() { "$REF/nexus-cli" "$@" --set "teacher=$REF/$TEACHER" --set "run_dir=$REF/run"; }
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "${OUT:-/tmp}/log.txt" >&2; }
# The config names its corpus relative to the repository; the copy there is new every call.
link_corpus() { mkdir -p runs && ln -sfn "$REF/corpus" runs/corpus; }

case "${1:?prepare|receive|check|train|finish|ablation}" in
prepare)
  T=${CARGO_TARGET_DIR:-target}
  run=runs/smollm2-student
  for f in profile.safetensors generated.jsonl generation.json; do
    [ -f $run/$f ] || { echo "no $run/$f: make the profile and the answers first (see the header)" >&2; exit 1; }
  done
  mkdir -p .carry/ref
  cargo build --release -p nexus-cli --features cuda
  tr=$(cargo test --release -p nexus-train --features cuda --test cuda_engine --no-run 2>&1 | grep -o "$T/release/deps/cuda_engine-[a-z0-9]*" | head -1)
  dt=$(cargo test --release -p nexus-cli --features cuda --test distill --no-run 2>&1 | grep -o "$T/release/deps/distill-[a-z0-9]*" | head -1)
  for t in "$tr:cuda_train" "$dt:distill_test"; do
    strip -o "/tmp/${t#*:}" "${t%%:*}" && xz -9 -c "/tmp/${t#*:}" > ".carry/ref/${t#*:}.xz"
  done
  pwd > .carry/ref/checkout.txt
  # The CLI tests run the binary at the path they were built with.
  realpath "$T/release/nexus-cli" > .carry/ref/cli_path.txt
  strip -o /tmp/nexus-cli.stripped "$T/release/nexus-cli" && xz -9 -c /tmp/nexus-cli.stripped > .carry/ref/nexus-cli.xz
  rm -f .carry/ref/teacher.xz.*
  xz -9 -T0 -c "models/$TEACHER" | split -b 49000000 - .carry/ref/teacher.xz.
  # Only the JSONL files and their manifest: make_corpus.py leaves its .deb downloads and
  # unpacked trees (~1.3 GB) beside them.
  tar cf - -C runs --exclude=corpus/debs --exclude=corpus/unpacked corpus | xz -9 -T0 > .carry/ref/corpus.txz
  tar czf .carry/ref/seed.tgz --transform "s|^smollm2-student|run|" -C runs smollm2-student/profile.safetensors smollm2-student/profile smollm2-student/generated.jsonl smollm2-student/generation.json
  ls -la .carry/ref
  ;;
receive)
  mkdir -p "$REF"
  for f in .carry/ref/*; do [ -f "$f" ] && cp "$f" "$REF/"; done
  for b in nexus-cli cuda_train distill_test; do
    if [ -f "$REF/$b.xz" ]; then xz -d -f "$REF/$b.xz" && chmod +x "$REF/$b"; fi
  done
  if [ -f "$REF/corpus.txz" ]; then tar xJf "$REF/corpus.txz" -C "$REF" && rm "$REF/corpus.txz"; fi
  if [ -f "$REF/seed.tgz" ]; then tar xzf "$REF/seed.tgz" -C "$REF" && rm "$REF/seed.tgz"; fi
  ls -la "$REF" "$REF/run" 2>/dev/null | head -30 || true
  ;;
check)
  # The training engine against the CPU engine, and one step's speed at a few batch shapes.
  # The test binary finds its fixtures under the absolute path of the checkout that built it.
  co=$(cat "$REF/checkout.txt"); [ -e "$co" ] || { mkdir -p "$(dirname "$co")" && ln -s "$PWD" "$co"; }
  NEXUS_REQUIRE_CUDA=1 "$REF/cuda_train" --test-threads 1 2>&1 | tail -14 | tee -a "$OUT/check.txt"
  # Whole runs, anchoring on, CPU against CUDA (and a resumed CUDA run).
  cp=$(cat "$REF/cli_path.txt"); [ -e "$cp" ] || { mkdir -p "$(dirname "$cp")" && ln -s "$REF/nexus-cli" "$cp"; }
  NEXUS_REQUIRE_CUDA=1 "$REF/distill_test" training_on_cuda_follows_the_cpu_losses --nocapture 2>&1 | tail -30 | tee -a "$OUT/check.txt"
  # Attention through batched GEMMs (the default) against the warp-per-row kernels.
  for attn in gemm kernels; do
    for shape in "8 256" "16 256" "32 256" "16 512"; do
      set -- $shape
      echo "attention $attn, $1 x $2:" | tee -a "$OUT/check.txt"
      NEXUS_TRAIN_ATTN=$attn "$REF/nexus-cli" distill bench --device cuda --precision bf16 --n-seq "$1" --seq-len "$2" 2>&1 | tail -1 | tee -a "$OUT/check.txt"
    done
  done
  ;;
train)
  deadline=$(( $(date +%s) + ${2:?seconds} )); shift 2
  if [ ! -f "$REF/$TEACHER" ]; then
    cat "$REF"/teacher.xz.* | xz -d > "$REF/$TEACHER"
    echo "$SHA  $REF/$TEACHER" | sha256sum -c - || { rm -f "$REF/$TEACHER"; exit 1; }
    rm "$REF"/teacher.xz.*
  fi
  link_corpus
  resume=(); [ -d "$REF/run/checkpoint" ] && resume=(--resume)
  log "train until $(date -u -d @$deadline +%H:%M:%S) ${resume[*]}"
  # SIGINT: the trainer finishes its step, writes a checkpoint and exits 130.
  timeout --foreground -s INT $(( deadline - $(date +%s) )) "$REF/nexus-cli" distill train -c "$CFG" --set "teacher=$REF/$TEACHER" --set "run_dir=$REF/run" "${resume[@]}" "$@" 2>&1 | tee -a "$OUT/log.txt" | grep -v "^step" | tail -6 || true
  tail -1 "$REF/run/metrics.jsonl"
  ;;
finish)
  shift
  link_corpus
  log "verify"
  cli distill verify -c "$CFG" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -12
  log "export"
  cli distill export -c "$CFG" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -3
  cd "$REF/run"
  # What comes back: at most 8 files of 16 MiB each.
  split -b 15000000 student.q8_0.gguf "$OUT/student.part."
  sha256sum student.q8_0.gguf | tee "$OUT/student.sha256"
  tar czf "$OUT/run.tgz" --exclude=checkpoint --exclude='*.gguf' --exclude=profile.safetensors --exclude=generated.jsonl .
  ls -la "$OUT"
  ;;
ablation)
  # scripts/train/ablation.sh's five arms, STEPS steps each, on this machine's teacher, answers
  # and profile (after a train call, so all three are here).
  link_corpus
  CLI=$REF/nexus-cli ROOT=$REF/ablation EXTRA="--set teacher=$REF/$TEACHER" bash scripts/train/ablation.sh "${2:-300}" "$REF/run" 2>&1 | tee "$OUT/ablation.md"
  tar czf "$OUT/ablation.tgz" --exclude='*.gguf' --exclude=checkpoint --exclude=profile.safetensors --exclude=generated.jsonl -C "$REF" ablation
  ;;
esac
