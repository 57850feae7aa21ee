#!/usr/bin/env python3
"""Generate the golden-test fixtures under tests/fixtures/golden/.

Tiny random-weight models are built with HF `transformers`, saved with a real tokenizer
(taken from llama.cpp's vocab-only GGUFs), converted to GGUF by llama.cpp's own
`convert_hf_to_gguf.py`, then the vocabulary is truncated to the first N_KEEP (512) ids so the
files stay small. Reference logits come from the full transformers model (float32, eager
attention, CPU) restricted to the first N_KEEP columns; they are exact for the truncated model
because every prompt id is < N_KEEP and logit j depends only on output row j.

Subcommands
  all       build + convert + reference + truncate + self-check (needs torch, transformers,
            the `gguf` package installed as a package, and a llama.cpp source tree)
  truncate  truncate one GGUF (needs only numpy + gguf)
  dump      print a gguf_dump-like summary of one GGUF (needs only numpy + gguf)

How it was run (on the GPU machine, torch 2.11 / transformers 5.17, CPU only is used):
  python3 -m pip install --no-index --no-deps --target /tmp/site gguf-0.19.0-py3-none-any.whl
  PYTHONPATH=/tmp/site python3 scripts/golden/make_golden.py all \
      --llama-cpp <llama.cpp source dir> --work /tmp/golden-work --out tests/fixtures/golden
See tests/fixtures/golden/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

N_KEEP = 512
INIT_STD = 0.2          # std of every weight matrix / embedding / bias
NORM_JITTER = 0.1       # RMSNorm weights are 1 + NORM_JITTER * N(0,1)
PROMPT_LENS = [1, 5, 13, 24]
N_GREEDY = 8

MODELS = {
    "llama-spm-gqa": dict(
        seed=1001, cls="LlamaConfig", vocab_file="ggml-vocab-llama-spm.gguf", bos=1, min_id=3,
        cfg=dict(vocab_size=32000, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, intermediate_size=128, rms_norm_eps=1e-5,
                 max_position_embeddings=2048, tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2),
        rope_theta=10000.0, rope_scaling=None,
        outtypes=["f32", "f16", "q8_0"]),
    "llama3-scaled": dict(
        seed=1002, cls="LlamaConfig", vocab_file="ggml-vocab-llama-bpe.gguf", bos=None, min_id=0,
        cfg=dict(vocab_size=128256, hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                 head_dim=8, num_hidden_layers=2, intermediate_size=160, rms_norm_eps=1e-5,
                 max_position_embeddings=2048, tie_word_embeddings=True,
                 bos_token_id=128000, eos_token_id=128001),
        rope_theta=500000.0,
        # original_max_position_embeddings=256 (not 64): with head_dim 8 and theta 5e5 the
        # wavelengths are 6.28, 167, 4443, 118k; with 256 the bands are <64 (unscaled),
        # 64..256 (smooth) and >256 (divided by factor), so all three branches are exercised.
        # With 64 there would be no pair in the smooth band.
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=256),
        outtypes=["f32"]),
    "qwen2-bias": dict(
        seed=1003, cls="Qwen2Config", vocab_file="ggml-vocab-qwen2.gguf", bos=None, min_id=0,
        cfg=dict(vocab_size=151936, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, intermediate_size=128, rms_norm_eps=1e-6,
                 max_position_embeddings=4096, tie_word_embeddings=True, use_sliding_window=False,
                 bos_token_id=151643, eos_token_id=151643),
        rope_theta=1000000.0, rope_scaling=None,
        outtypes=["f32"]),
}

# GGUF tensor name -> HF parameter name (per layer names use {i})
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- gguf helpers

def _field_value_summary(field, gguf) -> tuple[str, str]:
    t0 = field.types[0]
    if t0 == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        n = len(field.data)
        vals = field.contents(slice(0, min(n, 8)))
        more = f" ... (+{n - 8} more)" if n > 8 else ""
        return f"ARRAY[{sub.name}] len={n}", json.dumps(vals, ensure_ascii=True) + more
    val = field.contents()
    if t0 == gguf.GGUFValueType.STRING:
        s = json.dumps(val, ensure_ascii=True)
        if len(s) > 300:
            s = s[:300] + f"... ({len(val)} chars)"
        return t0.name, s
    return t0.name, repr(val)


def dump_gguf(path: Path) -> str:
    import gguf
    r = gguf.GGUFReader(path)
    lines = [f"# {path.name}", f"# sha256 {sha256(path)}  size {path.stat().st_size} bytes",
             f"# alignment {r.alignment}  data_offset {r.data_offset}", "", "## metadata"]
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        ty, val = _field_value_summary(f, gguf)
        lines.append(f"{f.name}  [{ty}]  = {val}")
    lines += ["", "## tensors (name, type, ne (GGUF order, ne0 first), n_bytes, offset from data start)"]
    for t in r.tensors:
        ne = [int(x) for x in t.shape]
        lines.append(f"{t.name}  {t.tensor_type.name}  ne={ne}  n_bytes={int(t.n_bytes)}  "
                     f"offset={int(t.data_offset) - r.data_offset}")
    return "\n".join(lines) + "\n"


def truncate_gguf(src: Path, dst: Path, n_keep: int = N_KEEP) -> dict:
    """Copy src to dst keeping only the first n_keep vocabulary entries. Returns a report."""
    import gguf
    r = gguf.GGUFReader(src)
    arch = r.get_field("general.architecture").contents()
    tokens_f = r.get_field("tokenizer.ggml.tokens")
    n_vocab = len(tokens_f.data)
    tokens = tokens_f.contents()
    kept = set(tokens[:n_keep])
    report = {"source_n_vocab": n_vocab, "n_keep": n_keep, "modified_keys": {}, "dropped_keys": {}}

    w = gguf.GGUFWriter(dst, arch)
    if r.alignment != gguf.GGUF_DEFAULT_ALIGNMENT:
        w.data_alignment = r.alignment
    for f in r.fields.values():
        name = f.name
        if name == "general.architecture" or name.startswith("GGUF."):
            continue
        t0 = f.types[0]
        sub = f.types[-1] if t0 == gguf.GGUFValueType.ARRAY else None
        if name in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            assert len(f.data) == n_vocab, name
            val = f.contents(slice(0, n_keep))
            report["modified_keys"][name] = f"first {n_keep} of {n_vocab} entries"
        elif name == "tokenizer.ggml.merges":
            merges = f.contents()
            val = []
            for m in merges:
                a, b = m.split(" ", 1)
                if a in kept and b in kept and (a + b) in kept:
                    val.append(m)
            report["modified_keys"][name] = f"{len(val)} of {len(merges)} merges kept (both parts and result among kept tokens)"
        elif name.startswith("tokenizer.ggml.") and name.endswith("_token_id"):
            v = f.contents()
            if v >= n_keep:
                report["dropped_keys"][name] = v
                continue
            val = v
        elif name == f"{arch}.vocab_size":
            report["modified_keys"][name] = f"{f.contents()} -> {n_keep}"
            val = n_keep
        else:
            if t0 == gguf.GGUFValueType.ARRAY and len(f.data) == n_vocab:
                raise RuntimeError(f"unhandled vocab-sized array {name}")
            val = f.contents()
        w.add_key_value(name, val, t0, sub_type=sub)

    datas = []
    for t in r.tensors:
        data = t.data
        if t.name in ("token_embd.weight", "output.weight"):
            assert data.shape[0] == n_vocab, (t.name, data.shape)
            data = data[:n_keep]
        datas.append(data)
        w.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for data in datas:
        w.write_tensor_data(np.ascontiguousarray(data), tensor_endianess=r.endianess)
    w.close()
    check_truncated(src, dst, n_keep)
    return report


def check_truncated(src: Path, dst: Path, n_keep: int = N_KEEP) -> None:
    """Every tensor of dst equals src byte for byte (vocab tensors: the first n_keep rows)."""
    import gguf
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    assert a.alignment == b.alignment
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type, ta.name
        da, db = ta.data, tb.data
        if ta.name in ("token_embd.weight", "output.weight"):
            da = da[:n_keep]
            assert int(tb.shape[1]) == n_keep and int(tb.shape[0]) == int(ta.shape[0])
        else:
            assert list(ta.shape) == list(tb.shape), ta.name
        assert da.tobytes() == db.tobytes(), ta.name
    fa = {f.name: f for f in a.fields.values()}
    for f in b.fields.values():
        if f.name.startswith("GGUF.") or f.name.startswith("tokenizer.ggml.") or f.name.endswith(".vocab_size"):
            continue
        g = fa[f.name]
        assert f.types == g.types and f.contents() == g.contents(), f.name
    toks = b.get_field("tokenizer.ggml.tokens").contents()
    assert toks == a.get_field("tokenizer.ggml.tokens").contents(slice(0, n_keep))


# ----------------------------------------------------------------------------- model side

def fmt_f32(x) -> str:
    return "[" + ",".join(str(v) for v in np.asarray(x, dtype=np.float32).ravel()) + "]"


def build_model(name: str, spec: dict, torch, transformers):
    import inspect
    cls = getattr(transformers, spec["cls"])
    kw = dict(spec["cfg"])
    params = inspect.signature(cls.__init__).parameters
    if "rope_parameters" in params:
        rp = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
        if spec["rope_scaling"]:
            rp.update(spec["rope_scaling"])
        kw["rope_parameters"] = rp
    else:
        kw["rope_theta"] = spec["rope_theta"]
        if spec["rope_scaling"]:
            kw["rope_scaling"] = dict(spec["rope_scaling"])
    config = cls(**kw)
    torch.manual_seed(spec["seed"])
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.float()
    g = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if pname.endswith("norm.weight") or "layernorm" in pname:
                p.copy_(1.0 + NORM_JITTER * torch.randn(p.shape, generator=g))
            else:
                p.copy_(INIT_STD * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def expected_inv_freq(spec: dict, head_dim: int) -> np.ndarray:
    base = spec["rope_theta"]
    inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = spec["rope_scaling"]
    if not rs:
        return inv
    f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    out = []
    for x in inv:
        wl = 2 * math.pi / x
        if wl < old / hi:
            out.append(x)
        elif wl > old / lo:
            out.append(x / f)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * x / f + s * x)
    return np.array(out)


def load_gguf_into(path: Path, model, n_head: int, n_kv: int, permuted: bool, torch) -> dict:
    """Load (dequantized) GGUF weights into an HF model of matching shapes; undo Q/K permutation."""
    import gguf
    from gguf.quants import dequantize
    r = gguf.GGUFReader(path)
    sd = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        arr = dequantize(t.data, t.tensor_type).astype(np.float32)
        assert list(arr.shape) == [int(x) for x in reversed(list(t.shape))], (t.name, arr.shape, t.shape)
        parts = t.name.split(".")
        if parts[0] == "blk":
            key = "blk.{i}." + ".".join(parts[2:])
            hf = GGUF_TO_HF[key].format(i=parts[1])
        else:
            hf = GGUF_TO_HF[t.name]
        ten = torch.from_numpy(np.ascontiguousarray(arr))
        if permuted and (".attn_q." in t.name or ".attn_k." in t.name):
            nh = n_head if ".attn_q." in t.name else n_kv
            shp = ten.shape
            ten = ten.reshape(nh, shp[0] // nh // 2, 2, *shp[1:]).swapaxes(1, 2).reshape(shp)
        sd[hf] = ten
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing
    if missing:
        model.tie_weights()
    return {"types": sorted({t.tensor_type.name for t in r.tensors})}


def cmd_all(args) -> None:
    import torch
    import transformers
    torch.set_num_threads(4)
    llama = Path(args.llama_cpp).resolve()
    work = Path(args.work).resolve()
    out = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env_info = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": sys.version.split()[0]}
    summary = {}
    failed = []
    for name, spec in MODELS.items():
        if args.only and name not in args.only:
            continue
        print(f"=== {name}", flush=True)
        try:
            summary[name] = one_model(name, spec, llama, work, out, env_info, torch, transformers)
        except Exception:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            failed.append(name)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if failed:
        raise SystemExit(f"FAILED: {failed}")


def one_model(name, spec, llama, work, out, env_info, torch, transformers) -> dict:
    if True:
        hf_dir = work / name
        model = build_model(name, spec, torch, transformers)
        try:
            model.save_pretrained(hf_dir, safe_serialization=True)
        except TypeError:
            model.save_pretrained(hf_dir)
        tok = transformers.AutoTokenizer.from_pretrained(str(llama / "models"), gguf_file=spec["vocab_file"])
        tok.save_pretrained(hf_dir)
        (out / f"{name}.hf_config.json").write_text((hf_dir / "config.json").read_text())
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        inv = [b for n_, b in model.named_buffers() if n_.endswith("inv_freq")][0].double().cpu().numpy()
        exp = expected_inv_freq(spec, head_dim)
        print("inv_freq", inv.tolist(), "expected", exp.tolist(), flush=True)
        assert np.allclose(inv, exp, rtol=1e-5), (inv, exp)

        # prompts
        rng = np.random.default_rng(spec["seed"])
        prompts = []
        for L in PROMPT_LENS:
            ids = rng.integers(spec["min_id"], N_KEEP, size=L).tolist()
            if spec["bos"] is not None:
                ids = [spec["bos"]] + ids[1:]
            prompts.append(ids)

        # reference
        model64 = build_model(name, spec, torch, transformers).double()
        recs = []
        max64 = 0.0
        with torch.no_grad():
            for ids in prompts:
                x = torch.tensor([ids])
                lg = model(x).logits[0, :, :N_KEEP].float().numpy()
                lg64 = model64(x).logits[0, :, :N_KEEP].numpy()
                max64 = max(max64, float(np.abs(lg.astype(np.float64) - lg64).max()))
                seq = list(ids)
                cont = []
                for _ in range(N_GREEDY):
                    l2 = model(torch.tensor([seq])).logits[0, -1, :N_KEEP]
                    nxt = int(torch.argmax(l2))
                    cont.append(nxt)
                    seq.append(nxt)
                try:
                    text = tok.decode(ids)
                except Exception:  # noqa: BLE001
                    text = None
                recs.append({"ids": ids, "text": text, "logits": lg, "greedy": cont})

        # convert + truncate
        ggufs = {}
        for ot in spec["outtypes"]:
            full = work / f"{name}.{ot}.full.gguf"
            cmd = [sys.executable, str(llama / "convert_hf_to_gguf.py"), str(hf_dir),
                   "--outfile", str(full), "--outtype", ot]
            print(" ".join(cmd), flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True)
            (work / f"{name}.{ot}.convert.log").write_text(res.stdout + res.stderr)
            if res.returncode != 0:
                print(res.stdout[-3000:], res.stderr[-6000:])
                raise SystemExit(f"convert failed for {name} {ot}")
            dst = out / f"{name}.{ot}.gguf"
            meta = dump_gguf(full)
            (out / f"{name}.{ot}.orig_meta.txt").write_text(meta)
            rep = truncate_gguf(full, dst)
            rep["full_sha256"] = sha256(full)
            rep["full_size"] = full.stat().st_size
            rep["truncated_sha256"] = sha256(dst)
            rep["truncated_size"] = dst.stat().st_size
            ggufs[ot] = rep
            print(ot, json.dumps(rep), flush=True)

        # round trip: truncated GGUF -> HF model with vocab 512 -> logits vs reference
        permuted = spec["cls"] == "LlamaConfig"
        small_kw = dict(spec["cfg"], vocab_size=N_KEEP)
        small_spec = dict(spec, cfg=small_kw)
        for ot in spec["outtypes"]:
            small = build_model(name, small_spec, torch, transformers)
            info = load_gguf_into(out / f"{name}.{ot}.gguf", small, cfg.num_attention_heads,
                                  cfg.num_key_value_heads, permuted, torch)
            md, agree, tot = 0.0, 0, 0
            with torch.no_grad():
                for rec in recs:
                    lg = small(torch.tensor([rec["ids"]])).logits[0].float().numpy()
                    md = max(md, float(np.abs(lg - rec["logits"]).max()))
                    agree += int((lg.argmax(-1) == rec["logits"].argmax(-1)).sum())
                    tot += lg.shape[0]
            ggufs[ot]["roundtrip"] = {"tensor_types": info["types"], "max_abs_diff_vs_reference": md,
                                      "argmax_agree": f"{agree}/{tot}"}
            print(ot, "roundtrip", ggufs[ot]["roundtrip"], flush=True)

        allv = np.concatenate([r["logits"].ravel() for r in recs])
        doc = {
            "model": name,
            "generator": "scripts/golden/make_golden.py",
            "env": env_info,
            "seed": spec["seed"],
            "init": {"std": INIT_STD, "norm_weight": f"1 + {NORM_JITTER}*N(0,1)",
                     "note": "every parameter (incl. biases) re-drawn after construction"},
            "hf_class": spec["cls"],
            "config": {k: v for k, v in spec["cfg"].items()},
            "rope_theta": spec["rope_theta"],
            "rope_scaling": spec["rope_scaling"],
            "head_dim": head_dim,
            "rope_inv_freq": [float(v) for v in inv],
            "n_vocab_full": spec["cfg"]["vocab_size"],
            "n_vocab_kept": N_KEEP,
            "logits_dtype": "float32",
            "logits_note": "model(input_ids).logits[0, :, :512], float32, eager attention, CPU, no KV cache; "
                           "logits[p][j] = logit of token j after prefix ids[:p+1]",
            "greedy_note": f"{N_GREEDY} tokens, next = argmax(logits[-1, :512]), recomputed over the full sequence each step",
            "f32_vs_f64_max_abs_diff": max64,
            "logits_stats": {"min": float(allv.min()), "max": float(allv.max()), "std": float(allv.std())},
            "gguf": ggufs,
            "prompts": "__PROMPTS__",
        }
        ptxt = []
        for rec in recs:
            rows = ",\n      ".join(fmt_f32(row) for row in rec["logits"])
            ptxt.append('    {"ids": %s, "text": %s, "greedy": %s,\n     "logits": [\n      %s]}'
                        % (json.dumps(rec["ids"]), json.dumps(rec["text"]), json.dumps(rec["greedy"]), rows))
        s = json.dumps(doc, indent=1).replace('"__PROMPTS__"', "[\n" + ",\n".join(ptxt) + "\n  ]")
        json.loads(s)
        (out / f"{name}.json").write_text(s + "\n")
        summ = {k: doc[k] for k in ("f32_vs_f64_max_abs_diff", "logits_stats", "rope_inv_freq")}
        summ["gguf"] = ggufs
        summ["greedy"] = [r["greedy"] for r in recs]
        summ["prompts"] = [r["ids"] for r in recs]
        return summ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    a = sp.add_parser("all")
    a.add_argument("--llama-cpp", required=True, help="llama.cpp source dir (convert_hf_to_gguf.py, conversion/, gguf-py/, models/)")
    a.add_argument("--work", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--only", nargs="*")
    t = sp.add_parser("truncate")
    t.add_argument("src")
    t.add_argument("dst")
    t.add_argument("--n-keep", type=int, default=N_KEEP)
    d = sp.add_parser("dump")
    d.add_argument("path")
    args = ap.parse_args()
    if args.cmd == "all":
        cmd_all(args)
    elif args.cmd == "truncate":
        print(json.dumps(truncate_gguf(Path(args.src), Path(args.dst), args.n_keep), indent=1))
    else:
        sys.stdout.write(dump_gguf(Path(args.path)))


if __name__ == "__main__":
    main()
