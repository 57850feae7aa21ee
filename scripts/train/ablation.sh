#!/usr/bin/env bash
# Small-budget ablation of the distillation loss and initialization on the reference task
# (models/distill/smollm2-student.toml): each arm trains STEPS steps from the same profile and
# the same teacher answers, then is verified on the held-out sets. Results: runs/ablation/*/
# (train_summary.json, verify_report.md) and the table this script prints.
#
#   scripts/train/ablation.sh [STEPS] [SOURCE_RUN]
# SOURCE_RUN (default runs/smollm2-student) provides generated.jsonl + generation.json so every
# arm trains on the same teacher answers without generating them again, and its
# profile.safetensors when it has one. Environment: CLI (the nexus-cli, default
# target/release/nexus-cli), ROOT (default runs/ablation), EXTRA (more --set arguments for every
# command, e.g. "--set train.device=cpu --set train.precision=f32" for a CPU-only build, or the
# teacher's path on the GPU machine: scripts/train/device_reference.sh ablation).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-24}
SRC=${2:-runs/smollm2-student}
CFG=models/distill/smollm2-student.toml
CLI=${CLI:-target/release/nexus-cli}
ROOT=${ROOT:-runs/ablation}
read -ra extra <<< "${EXTRA:-}"
common=(--set "train.steps=$STEPS" --set train.accum=1 --set "train.warmup=$(( STEPS / 20 > 4 ? STEPS / 20 : 4 ))" --set train.checkpoint_every=100000 --set verify.max_tokens=1024 "${extra[@]}")
mkdir -p "$ROOT/base"
cp "$SRC/generated.jsonl" "$SRC/generation.json" "$ROOT/base/"
[ -f "$SRC/profile.safetensors" ] && cp "$SRC/profile.safetensors" "$ROOT/base/"
if [ ! -f "$ROOT/base/profile.safetensors" ]; then
  $CLI distill profile -c $CFG --set run_dir=$ROOT/base --set profile.max_tokens=2048 --set profile.ablation_tokens=128 "${extra[@]}"
fi
arm() {
  local name=$1; shift
  local dir=$ROOT/$name
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$ROOT/base/generated.jsonl" "$ROOT/base/generation.json" "$ROOT/base/profile.safetensors" "$dir/"
  echo "== $name: $*" >&2
  $CLI distill train -c $CFG --set "run_dir=$dir" "${common[@]}" "$@" 2>&1 | tail -1 >&2
  $CLI distill verify -c $CFG --set "run_dir=$dir" "${common[@]}" "$@" > /dev/null 2>&1 || true
}
arm full
arm kl_ce --set train.anchor=0
arm kl_only --set train.anchor=0 --set train.ce=0
arm ce_only --set train.anchor=0 --set train.kl=0
arm random_init --set student.init=random
python3 - "$ROOT" <<'PY'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1])
print("| arm | train loss (last 10) | train top-1 | " + " | ".join(f"{c} KL / top-1 / PPL ratio" for c in ["general", "chat", "code", "arithmetic"]) + " |")
print("|---|---:|---:|" + "---|" * 4)
for arm in ["full", "kl_ce", "kl_only", "ce_only", "random_init"]:
    d = root / arm
    s = json.load(open(d / "train_summary.json"))
    v = json.load(open(d / "verify_report.json"))
    caps = {c["name"]: c for c in v["capabilities"]}
    cells = [f'{caps[n]["kl"]["value"]:.2f} / {caps[n]["top1"]["value"]:.3f} / {caps[n]["ppl_ratio"]["value"]:.1f}' for n in ["general", "chat", "code", "arithmetic"]]
    print(f'| {arm} | {s["last10_loss"]:.3f} | {s["last10_top1"]:.3f} | ' + " | ".join(cells) + " |")
PY
