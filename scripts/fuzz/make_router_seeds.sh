#!/usr/bin/env bash
# Seeds of the router_reader fuzz target (fuzz/corpus/router_reader/): two routers trained by
# `nexus-cli distill train-router` (target/release, built first) on the golden llama-spm-gqa
# q8_0 backbone from 24 synthetic prompts of three character ranges (none / code / math).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/seed.jsonl" <<'PY'
import json, random, sys
random.seed(2)
classes = [("none", "pqrstuvwxyz"), ("code", "abcdefgh"), ("math", "0123456789")]
rows = [{"text": "".join(random.choice(ch) for _ in range(random.randint(4, 12))), "capability": n}
        for _ in range(8) for n, ch in classes]
open(sys.argv[1], "w").write("\n".join(json.dumps(r) for r in rows) + "\n")
PY
base=tests/fixtures/golden/llama-spm-gqa.q8_0.gguf
out=fuzz/corpus/router_reader
mkdir -p "$out"
target/release/nexus-cli distill train-router --base "$base" --data "$tmp/seed.jsonl" --layer 0 --hidden 4 --steps 20 -t 2 \
    --confusion "$tmp/cm.png" -o "$out/router-mlp.gguf" >/dev/null
target/release/nexus-cli distill train-router --base "$base" --data "$tmp/seed.jsonl" --layer 1 --steps 20 -t 2 \
    --confusion "$tmp/cm.png" -o "$out/router-linear.gguf" >/dev/null
ls -l "$out"
