#!/usr/bin/env bash
# The reference distillation run (models/distill/smollm2-student.toml) on the GPU machine's 16
# CPU cores (the trainer has no CUDA path yet), in calls of at most 10 minutes. The machine has
# no Rust and no model files, and one call carries at most 64 MiB, so the stripped nexus-cli and
# the teacher come in parts (.carry/, made here by `prepare`); the run directory lives in
# ~/ref/run and survives between back-to-back calls while the machine stays warm.
#
#   scripts/train/device_reference.sh prepare            # here: .carry/nexus-cli, .carry/teacher.part.a{a,b,c}
#   device: scripts/train/device_reference.sh receive    # copies whatever parts this call carried to ~/ref
#   device: scripts/train/device_reference.sh train SECONDS [--set …]   # assemble, then profile/train until SECONDS pass
#   device: scripts/train/device_reference.sh finish     # verify, export, pack into $OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
TEACHER=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=$(grep -o '[0-9a-f]\{64\}' models/fetch.sh | head -1)
REF=~/ref
CFG=models/distill/smollm2-student.toml
cli() { "$REF/nexus-cli" "$@" --set "teacher=$REF/$TEACHER" --set "run_dir=$REF/run"; }
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "${OUT:-/tmp}/log.txt" >&2; }

case "${1:?prepare|receive|train|finish}" in
prepare)
  mkdir -p .carry
  cargo build --release -p nexus-cli
  strip -o .carry/nexus-cli target/release/nexus-cli
  rm -f .carry/teacher.part.*
  split -b 33000000 "models/$TEACHER" .carry/teacher.part.
  ls -la .carry
  ;;
receive)
  mkdir -p "$REF"
  for f in .carry/nexus-cli .carry/teacher.part.*; do [ -f "$f" ] && cp "$f" "$REF/"; done
  ls -la "$REF"
  ;;
train)
  deadline=$(( $(date +%s) + ${2:?seconds} )); shift 2
  if [ ! -f "$REF/$TEACHER" ]; then
    cat "$REF"/teacher.part.* > "$REF/$TEACHER"
    echo "$SHA  $REF/$TEACHER" | sha256sum -c - || { rm -f "$REF/$TEACHER"; exit 1; }
  fi
  nproc; lscpu | grep -E "Model name|^CPU\(s\)" || true
  if [ ! -f "$REF/run/profile.safetensors" ]; then
    log "profile (and the teacher's answers)"
    cli distill profile -c "$CFG" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -5
  fi
  left=$(( deadline - $(date +%s) ))
  resume=(); [ -d "$REF/run/checkpoint" ] && resume=(--resume)
  log "train for ${left}s ${resume[*]}"
  # SIGINT: the trainer finishes its step, writes a checkpoint and exits 130.
  timeout -s INT "$left" "$REF/nexus-cli" distill train -c "$CFG" --set "teacher=$REF/$TEACHER" --set "run_dir=$REF/run" "${resume[@]}" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -4 || true
  tail -1 "$REF/run/metrics.jsonl"
  ;;
finish)
  shift
  log "verify"
  cli distill verify -c "$CFG" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -12
  cd "$REF/run"
  split -b 15000000 student.q8_0.gguf "$OUT/student.part."
  sha256sum student.q8_0.gguf | tee "$OUT/student.sha256"
  tar czf "$OUT/run.tgz" --exclude=checkpoint --exclude='*.gguf' --exclude=profile.safetensors .
  ls -la "$OUT"
  ;;
esac
