#!/usr/bin/env python3
"""Writes models/distill/router_labelled.jsonl: the distillation prompt set
(models/distill/prompts.jsonl) labelled for `nexus-cli distill train-router`, one
{"text": ..., "capability": ...} a line. `code` and `arithmetic` prompts keep their category
as the capability (one LoRA adapter each); `general` and `chat` prompts are labelled "none"
(the base answers them)."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parents[2]
src = root / "models/distill/prompts.jsonl"
out = root / "models/distill/router_labelled.jsonl"
cap = {"code": "code", "arithmetic": "arithmetic", "general": "none", "chat": "none"}
rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
with out.open("w") as f:
    for r in rows:
        f.write(json.dumps({"text": r["prompt"], "capability": cap[r["category"]]}) + "\n")
print(f"wrote {out} ({len(rows)} prompts)")
