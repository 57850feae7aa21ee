#!/usr/bin/env python3
"""Generate tests/fixtures/lora_peft/: a PEFT LoRA adapter, llama.cpp's GGUF conversions of it,
the base model as llama.cpp converts it, and PEFT's logits with and without the adapter.

Needs torch, transformers, peft (0.21), numpy, pyyaml, the `gguf` package installed as a
package (transformers needs it to read the tokenizer from llama.cpp's vocab GGUF; see
tests/fixtures/golden/README.md) and a llama.cpp source tree passed by path with
`--llama-cpp DIR` holding convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/
and models/ggml-vocab-llama-spm.gguf. No network. CPU only.

What it does:
 1. builds the tiny base (LlamaForCausalLM, hidden 64, 2 layers, 4 heads / 2 KV heads,
    intermediate 128, the llama-spm vocabulary of 32000) with the golden fixtures' recipe
    (scripts/golden/make_golden.py: every parameter re-drawn from a seeded generator) and saves
    it with its tokenizer as WORK/base;
 2. loads WORK/base back (relative path "base", so PEFT records `base_model: base`), wraps it
    with PEFT LoraConfig(r=4, lora_alpha=8, q/k/v/o/gate/up/down), re-draws every lora_A and
    lora_B from a seeded generator (PEFT initialises B to zero) and saves the adapter as
    WORK/peft_adapter (adapter_config.json, adapter_model.safetensors, PEFT's README.md);
 3. records float32 logits (first 512 ids) for fixed prompts: the base (PEFT's adapter disabled)
    and PEFT with the adapter; the float64 run only measures float32's own error;
 4. runs llama.cpp's convert_hf_to_gguf.py --outtype f32 on WORK/base and truncates the result
    to the first 512 vocabulary ids (make_golden.truncate_gguf: every tensor byte-identical to
    the converter's, vocabulary tensors to their first 512 rows), and convert_lora_to_gguf.py
    --outtype {f32,f16,bf16,q8_0} on WORK/peft_adapter with --base WORK/base (cwd WORK);
 5. self-check: merges adapter.f32.gguf (lora_b rows of q/k un-permuted) into the HF base
    weights and compares that model's logits with PEFT's;
 6. writes everything into --out, in the layout of tests/fixtures/lora_peft/, README.md included
    (with this run's versions and numbers): copy --out there as it is.

Run (GPU machine, from the repository root; see tests/fixtures/lora_peft/README.md):
  python3 -m pip install --no-index --no-deps --target /tmp/site gguf-0.19.0-py3-none-any.whl
  PYTHONPATH=/tmp/site python3 scripts/lora/make_peft_fixtures.py \
      --llama-cpp <llama.cpp dir> --work /tmp/lora-peft-work --out <out dir>
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make_golden  # noqa: E402  (build_model, truncate_gguf, dump_gguf, sha256)

N_KEEP = 512
SEED = 3001
LORA_SEED = 3002
LORA_STD = 0.16  # lora_A and lora_B entries: N(0, 0.16²), so (alpha/r)·B·A has std ≈ 0.1 (base weights 0.2)
RANK, ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OUTTYPES = ["f32", "f16", "bf16", "q8_0"]
# Prompts: ids inside the kept vocabulary (BOS = 1 first).
PROMPTS = [
    [1, 298, 37, 5, 211, 90, 90, 4, 17, 120],
    [1, 450, 3, 77],
]

BASE_SPEC = dict(
    seed=SEED, cls="LlamaConfig", vocab_file="ggml-vocab-llama-spm.gguf", bos=1, min_id=3,
    cfg=dict(vocab_size=32000, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, intermediate_size=128, rms_norm_eps=1e-5,
             max_position_embeddings=2048, tie_word_embeddings=False,
             bos_token_id=1, eos_token_id=2),
    rope_theta=10000.0, rope_scaling=None)

# GGUF name (per layer) -> HF module name, for the self-check merge.
GGUF_TO_HF = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cmd: list[str], cwd: Path, log: Path) -> None:
    print("+", " ".join(cmd), f"(cwd {cwd})", flush=True)
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-6000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")


def logits_of(model, torch) -> list[np.ndarray]:
    out = []
    with torch.no_grad():
        for ids in PROMPTS:
            out.append(model(torch.tensor([ids])).logits[0, :, :N_KEEP].double().numpy())
    return out


def rows_json(arr: np.ndarray) -> str:
    """Rows of float32 values, each written as the shortest decimal that reads back as it."""
    return ",\n      ".join("[" + ",".join(str(v) for v in np.asarray(r, dtype=np.float32)) + "]" for r in arr)


def self_check(adapter_gguf: Path, base_dir: Path, peft_logits, torch, transformers) -> float:
    """Merge the converted adapter into the HF base by hand; compare logits with PEFT's."""
    import gguf
    from gguf.quants import dequantize
    r = gguf.GGUFReader(adapter_gguf)
    alpha = float(r.get_field("adapter.lora.alpha").contents())
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), attn_implementation="eager",
                                                               dtype=torch.float64)
    cfg = model.config
    sd = model.state_dict()
    n_pairs = 0
    with torch.no_grad():
        for name, a in tensors.items():
            if not name.endswith(".lora_a"):
                continue
            base = name[: -len(".lora_a")]
            b = tensors[base + ".lora_b"]  # numpy shape (n_out, rank); a: (rank, n_in)
            _, layer, kind, _ = base.split(".")
            if kind in ("attn_q", "attn_k"):
                nh = cfg.num_attention_heads if kind == "attn_q" else cfg.num_key_value_heads
                # undo llama.cpp's permute: rows (h, half, 2) -> (h, 2, half)
                b = b.reshape(nh, b.shape[0] // nh // 2, 2, b.shape[1]).swapaxes(1, 2).reshape(b.shape)
            delta = (alpha / a.shape[0]) * (b @ a)
            key = f"model.layers.{layer}.{GGUF_TO_HF[kind]}.weight"
            sd[key] += torch.from_numpy(delta)
            n_pairs += 1
    model.load_state_dict(sd)
    model.eval()
    assert n_pairs == 2 * len(TARGETS), n_pairs
    mine = logits_of(model, torch)
    return max(float(np.abs(m - p).max()) for m, p in zip(mine, peft_logits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="dir with convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/, models/")
    ap.add_argument("--out", required=True, help="where the fixtures go (the layout of tests/fixtures/lora_peft/)")
    ap.add_argument("--work", default="/tmp/lora-peft-work", help="scratch dir (emptied first)")
    args = ap.parse_args()

    import peft
    import torch
    import transformers
    torch.set_num_threads(4)
    llama = Path(args.llama_cpp).resolve()
    out = Path(args.out).resolve()
    work = Path(args.work).resolve()
    for f in ["convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", f"models/{BASE_SPEC['vocab_file']}"]:
        if not (llama / f).exists():
            raise SystemExit(f"{llama / f} is missing: --llama-cpp must hold it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "numpy": np.__version__}
    print(json.dumps(env), flush=True)

    # 1. the base
    model = make_golden.build_model("base", BASE_SPEC, torch, transformers)
    try:
        model.save_pretrained(work / "base", safe_serialization=True)
    except TypeError:  # transformers versions without the argument always write safetensors
        model.save_pretrained(work / "base")
    tok = transformers.AutoTokenizer.from_pretrained(str(llama / "models"), gguf_file=BASE_SPEC["vocab_file"])
    tok.save_pretrained(work / "base")
    del model

    # 2. the adapter (relative paths from WORK so PEFT writes `base_model: base`)
    os.chdir(work)
    base = transformers.AutoModelForCausalLM.from_pretrained("base", attn_implementation="eager", dtype=torch.float32)
    base.eval()
    lcfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                           task_type="CAUSAL_LM")
    pm = peft.get_peft_model(base, lcfg)
    g = torch.Generator().manual_seed(LORA_SEED)
    n_lora = 0
    with torch.no_grad():
        for pname, p in sorted(pm.named_parameters()):
            if ".lora_A." in pname or ".lora_B." in pname:
                p.copy_(LORA_STD * torch.randn(p.shape, generator=g))
                n_lora += 1
    assert n_lora == 2 * len(TARGETS) * BASE_SPEC["cfg"]["num_hidden_layers"], n_lora
    pm.eval()
    pm.save_pretrained("peft_adapter")

    # 3. logits
    with pm.disable_adapter():
        base_f32 = logits_of(pm, torch)
    peft_f32 = logits_of(pm, torch)
    pm64 = pm.double()
    peft_f64 = logits_of(pm64, torch)
    with pm64.disable_adapter():
        base_f64 = logits_of(pm64, torch)
    f32_noise = max(float(np.abs(a - b).max()) for a, b in zip(peft_f32, peft_f64))
    adapter_effect = max(float(np.abs(a - b).max()) for a, b in zip(peft_f64, base_f64))
    print("f32 vs f64 max |diff|", f32_noise, "adapter effect max |diff|", adapter_effect, flush=True)
    assert adapter_effect > 0.05, "the adapter barely changes the logits"

    # 4. llama.cpp's conversions
    py = sys.executable
    run([py, str(llama / "convert_hf_to_gguf.py"), "base", "--outfile", "base.f32.full.gguf", "--outtype", "f32"],
        work, out / "base.f32.convert.log")
    (out / "base.f32.orig_meta.txt").write_text(make_golden.dump_gguf(work / "base.f32.full.gguf"))
    trunc = make_golden.truncate_gguf(work / "base.f32.full.gguf", out / "base.f32.gguf", N_KEEP)
    manifest = {"generator": "scripts/lora/make_peft_fixtures.py", "env": env, "llama_cpp": str(llama),
                "base": {"truncate": trunc, "full_sha256": sha256(work / "base.f32.full.gguf"),
                         "full_size": (work / "base.f32.full.gguf").stat().st_size,
                         "sha256": sha256(out / "base.f32.gguf")},
                "adapters": {}}
    for ot in OUTTYPES:
        name = f"adapter.{ot}.gguf"
        run([py, str(llama / "convert_lora_to_gguf.py"), "peft_adapter", "--base", "base", "--outfile", name,
             "--outtype", ot], work, out / f"adapter.{ot}.convert.log")
        shutil.copy(work / name, out / name)
        (out / f"adapter.{ot}.meta.txt").write_text(make_golden.dump_gguf(out / name))
        manifest["adapters"][ot] = {"sha256": sha256(out / name), "size": (out / name).stat().st_size}

    # 5. self-check of the permutation convention
    merged_diff = self_check(out / "adapter.f32.gguf", work / "base", peft_f64, torch, transformers)
    print("hand-merged adapter.f32.gguf vs PEFT (f64) max |diff|", merged_diff, flush=True)
    assert merged_diff < 1e-4, merged_diff
    manifest["self_check_max_abs_diff_f64"] = merged_diff

    # 6. inputs and references into --out
    (out / "peft_adapter").mkdir(exist_ok=True)
    # The converter's inputs, as PEFT wrote them (its model card feeds llama.cpp's general.* keys).
    saved = sorted(f.name for f in (work / "peft_adapter").iterdir())
    print("PEFT wrote", saved, flush=True)
    for name in ["adapter_config.json", "adapter_model.safetensors", "README.md"]:
        shutil.copy(work / "peft_adapter" / name, out / "peft_adapter" / name)
    shutil.copy(work / "base" / "config.json", out / "base.hf_config.json")
    manifest["peft_adapter_files"] = {f.name: sha256(f) for f in sorted((out / "peft_adapter").iterdir())}
    doc = {
        "generator": "scripts/lora/make_peft_fixtures.py",
        "env": env,
        "n_vocab_kept": N_KEEP,
        "lora": {"r": RANK, "lora_alpha": ALPHA, "target_modules": TARGETS, "seed": LORA_SEED, "std": LORA_STD},
        "logits_note": "model(ids).logits[0, :, :512]; logits[p][j] = logit of token j after ids[:p+1]; "
                       "eager attention, CPU, no KV cache; base = PEFT model with disable_adapter()",
        "f32_vs_f64_max_abs_diff": f32_noise,
        "adapter_effect_max_abs_diff": adapter_effect,
        "prompts": "__PROMPTS__",
    }
    ptxt = []
    for i, ids in enumerate(PROMPTS):
        ptxt.append('    {"ids": %s,\n     "base_f32": [\n      %s],\n     "peft_f32": [\n      %s]}'
                    % (json.dumps(ids), rows_json(base_f32[i]), rows_json(peft_f32[i])))
    s = json.dumps(doc, indent=1).replace('"__PROMPTS__"', "[\n" + ",\n".join(ptxt) + "\n  ]")
    json.loads(s)
    (out / "logits.json").write_text(s + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    (out / "README.md").write_text(readme(manifest, doc, total))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(json.dumps(manifest, indent=1))
    print(f"wrote {out} ({total} bytes)")


def readme(manifest: dict, doc: dict, total: int) -> str:
    env = manifest["env"]
    adapters = "\n".join(f"{m['sha256']}  adapter.{ot}.gguf ({m['size']} B)" for ot, m in manifest["adapters"].items())
    return f"""# PEFT LoRA → GGUF fixtures (`nexus-cli convert-lora`)

Every file here was made by one run of
[`scripts/lora/make_peft_fixtures.py`](../../../scripts/lora/make_peft_fixtures.py) (its docstring
says how to run it) with Python {env['python']}, torch {env['torch']}, transformers
{env['transformers']}, peft {env['peft']}, numpy {env['numpy']}, and llama.cpp's own unmodified
`convert_hf_to_gguf.py` / `convert_lora_to_gguf.py` (with `conversion/` and `gguf-py/`, from
`llama_cpp_python-0.3.36/vendor/llama.cpp`). About {total // 1000} kB in all.
Used by `tests/tests/lora_peft_fixtures.rs`.

The base is a LlamaForCausalLM (hidden 64, 2 layers, 4 heads / 2 KV heads, intermediate 128,
llama-spm vocabulary, every weight re-drawn as in `scripts/golden/make_golden.py`, seed 3001);
the adapter is PEFT's LoraConfig(r=4, lora_alpha=8, q/k/v/o/gate/up/down_proj) with every lora_A
and lora_B re-drawn from N(0, 0.16²) (seed 3002), saved by `save_pretrained`.

## Files

| file | what |
| --- | --- |
| `peft_adapter/adapter_config.json`, `peft_adapter/adapter_model.safetensors`, `peft_adapter/README.md` | the adapter exactly as PEFT saved it (the converter's input; PEFT's model card is read by llama.cpp for `general.*` metadata) |
| `base.hf_config.json` | the base's `config.json` |
| `base.f32.gguf` | llama.cpp's `convert_hf_to_gguf.py --outtype f32` of the base, vocabulary truncated to the first 512 ids (`make_golden.truncate_gguf`; tensors byte-identical, vocabulary tensors to their first 512 rows) |
| `base.f32.orig_meta.txt`, `base.f32.convert.log` | dump of the untruncated converter output; the converter's log |
| `adapter.f32.gguf`, `adapter.f16.gguf`, `adapter.bf16.gguf`, `adapter.q8_0.gguf` | llama.cpp's `convert_lora_to_gguf.py peft_adapter --base base --outtype T` (run from the work folder; q8_0 stores each lora_b as F16: rank-4 rows are not whole Q8_0 blocks) |
| `adapter.f32.meta.txt`, `adapter.f16.meta.txt`, `adapter.bf16.meta.txt`, `adapter.q8_0.meta.txt` | dump of each adapter (keys, tensors, offsets) |
| `adapter.f32.convert.log`, `adapter.f16.convert.log`, `adapter.bf16.convert.log`, `adapter.q8_0.convert.log` | the converter's logs |
| `logits.json` | prompts and float32 logits over the first 512 ids: `base_f32` (PEFT with `disable_adapter()`) and `peft_f32` (with the adapter) |
| `manifest.json` | versions, sha256 of every output, the truncation report, the self-check |
| `README.md` | this file |

## What the tests check

`tests/tests/lora_peft_fixtures.rs`: `nexus-cli convert-lora peft_adapter --base base.f32.gguf
--outtype T` is byte-identical to `adapter.T.gguf` for all four types; the runtime on
`base.f32.gguf` reproduces `base_f32` and, with our converted adapter attached, `peft_f32`
within 1e-4 of the largest |logit| for f32 (the golden tests' bound for our f32 forward against
transformers; 1e-2, 4e-2 and 8e-2 for the f16, bf16 and q8_0 adapters: `OUTTYPE_TOLERANCES` in
`tests/src/peft.rs`).

## Numbers from this run

- PEFT float32 vs float64 logits: max |diff| = {doc['f32_vs_f64_max_abs_diff']:.3g}
- the adapter's effect on the logits (float64): max |diff| = {doc['adapter_effect_max_abs_diff']:.3g}
- self-check, `adapter.f32.gguf` merged by hand into the HF base (lora_b of q/k un-permuted) vs
  PEFT, float64: max |diff| = {manifest['self_check_max_abs_diff_f64']:.3g}

sha256:
```
{manifest['base']['sha256']}  base.f32.gguf
{adapters}
```
"""


if __name__ == "__main__":
    main()
