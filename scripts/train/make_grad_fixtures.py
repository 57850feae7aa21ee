#!/usr/bin/env python3
"""Write PyTorch-autograd references for the student's training engine (train/src/engine).

For each op of the llama architecture (linear, RMSNorm, RoPE, causal GQA attention, SwiGLU,
embedding, the CE+KL head loss) and for a tiny whole student (tied and untied head, with an
anchoring gradient on one layer's residual stream), this computes outputs and gradients in
float32 on the CPU from fixed seeds and writes them as safetensors files, which
train/tests/grads.rs compares with the Rust engine.

The semantics are the runtime's (runtime/src/model/llama.rs): RMSNorm x/sqrt(mean(x²)+eps)·w;
RoPE in GGML's "normal" layout (pairs (2i, 2i+1) of each head, angle pos·base^(−2i/head_dim),
angles in float64 rounded to float32 once); query head h reads kv head h // (n_head/n_head_kv);
scores scaled by 1/sqrt(head_dim); SwiGLU silu(gate)·up; every sequence of a batch starts at
position 0 and attends only to itself.

Each file also carries the upstream gradient it back-propagated (`dy`, or the loss weights for
the head loss) and, in its `__metadata__`, the shapes and constants. Integer tensors are I32;
a target of -1 means "ignored" (u32::MAX in Rust).

The safetensors format is written here directly (8-byte header length, JSON header, raw
little-endian data), so the script needs only torch.

Usage: python3 scripts/train/make_grad_fixtures.py --out tests/fixtures/train_grads
"""

import argparse
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
DTYPES = {torch.float32: ("F32", "f"), torch.int32: ("I32", "i")}


def save(path, tensors, metadata):
    """Write `tensors` (name -> tensor) and string `metadata` as safetensors, atomically."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        code, fmt = DTYPES[t.dtype]
        values = t.flatten().tolist()
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).float()


def leaf(t):
    return t.clone().requires_grad_(True)


# ---- the ops, written from the definitions ----


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq_len, head_dim, base):
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    inv_freq = float(base) ** (-2.0 * i / head_dim)
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return ang.cos().float(), ang.sin().float()


def rope(x, n_seq, seq_len, head_dim, base):
    """x: [n_seq·seq_len, heads·head_dim], pairs (2i, 2i+1) rotated."""
    cos, sin = rope_tables(seq_len, head_dim, base)
    xs = x.view(n_seq, seq_len, -1, head_dim // 2, 2)
    x0, x1 = xs[..., 0], xs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    y = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return y.reshape(x.shape)


def attention(q, k, v, n_seq, seq_len, n_head, n_head_kv, head_dim):
    group = n_head // n_head_kv
    qh = q.view(n_seq, seq_len, n_head, head_dim).transpose(1, 2)
    kh = k.view(n_seq, seq_len, n_head_kv, head_dim).transpose(1, 2).repeat_interleave(group, dim=1)
    vh = v.view(n_seq, seq_len, n_head_kv, head_dim).transpose(1, 2).repeat_interleave(group, dim=1)
    scale = torch.tensor(1.0 / math.sqrt(head_dim), dtype=torch.float32)
    scores = (qh @ kh.transpose(-1, -2)) * scale
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    p = scores.masked_fill(mask, float("-inf")).softmax(-1)
    return (p @ vh).transpose(1, 2).reshape(n_seq * seq_len, n_head * head_dim)


def swiglu(gate, up):
    return gate / (1.0 + torch.exp(-gate)) * up


def head_loss(hidden, head, targets, t_hidden, t_head, w_ce, w_kl, temp):
    """(loss, ce, kl, agree) over rows whose target is not -1."""
    valid = targets >= 0
    logits = hidden @ head.T
    ce = F.cross_entropy(logits[valid], targets[valid].long())
    if t_hidden is None:
        return w_ce * ce, ce, torch.zeros(()), torch.zeros((), dtype=torch.int32)
    t_logits = t_hidden @ t_head.T
    lq = F.log_softmax(logits / temp, -1)
    lp = F.log_softmax(t_logits / temp, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)[valid].mean()
    agree = (logits.argmax(-1) == t_logits.argmax(-1))[valid].sum().to(torch.int32)
    return w_ce * ce + w_kl * temp * temp * kl, ce, kl, agree


# ---- fixtures ----


def op_fixtures(out):
    g = gen(1)
    x, w, dy = randn(g, 13, 19), randn(g, 11, 19, scale=0.5), randn(g, 13, 11)
    xl, wl = leaf(x), leaf(w)
    y = xl @ wl.T
    (y * dy).sum().backward()
    save(f"{out}/linear.safetensors", {"x": x, "w": w, "dy": dy, "y": y, "dx": xl.grad, "dw": wl.grad}, {})

    g = gen(2)
    eps = 1e-5
    x, w, dy = randn(g, 13, 23, scale=2.0), 1.0 + randn(g, 23, scale=0.2), randn(g, 13, 23)
    xl, wl = leaf(x), leaf(w)
    y = rmsnorm(xl, wl, eps)
    (y * dy).sum().backward()
    save(f"{out}/rmsnorm.safetensors", {"x": x, "w": w, "dy": dy, "y": y, "dx": xl.grad, "dw": wl.grad}, {"eps": eps})

    g = gen(3)
    n_seq, seq_len, heads, hd, base = 2, 9, 3, 10, 10000.0
    x, dy = randn(g, n_seq * seq_len, heads * hd), randn(g, n_seq * seq_len, heads * hd)
    xl = leaf(x)
    y = rope(xl, n_seq, seq_len, hd, base)
    (y * dy).sum().backward()
    meta = {"n_seq": n_seq, "seq_len": seq_len, "head_dim": hd, "base": base}
    save(f"{out}/rope.safetensors", {"x": x, "dy": dy, "y": y, "dx": xl.grad}, meta)

    # A short batch, and one longer than the engine's 64-row attention blocks.
    for name, (n_seq, seq_len, n_head, n_kv, hd), seed in [
        ("attention", (3, 5, 6, 2, 6), 4),
        ("attention_long", (2, 71, 3, 1, 6), 5),
    ]:
        g = gen(seed)
        n = n_seq * seq_len
        q, k = randn(g, n, n_head * hd, scale=1.5), randn(g, n, n_kv * hd, scale=1.5)
        v, dy = randn(g, n, n_kv * hd), randn(g, n, n_head * hd)
        ql, kl, vl = leaf(q), leaf(k), leaf(v)
        y = attention(ql, kl, vl, n_seq, seq_len, n_head, n_kv, hd)
        (y * dy).sum().backward()
        meta = {"n_seq": n_seq, "seq_len": seq_len, "n_head": n_head, "n_head_kv": n_kv, "head_dim": hd}
        tensors = {"q": q, "k": k, "v": v, "dy": dy, "y": y, "dq": ql.grad, "dk": kl.grad, "dv": vl.grad}
        save(f"{out}/{name}.safetensors", tensors, meta)

    g = gen(6)
    gate, up, dy = randn(g, 13, 29, scale=2.0), randn(g, 13, 29), randn(g, 13, 29)
    gl, ul = leaf(gate), leaf(up)
    y = swiglu(gl, ul)
    (y * dy).sum().backward()
    tensors = {"gate": gate, "up": up, "dy": dy, "y": y, "d_gate": gl.grad, "d_up": ul.grad}
    save(f"{out}/swiglu.safetensors", tensors, {})

    g = gen(7)
    embed = randn(g, 37, 11)
    tokens = torch.randint(0, 37, (15,), generator=g, dtype=torch.int32)
    tokens[4] = tokens[9] = tokens[1]  # repeated tokens sum their gradients
    dy = randn(g, 15, 11)
    el = leaf(embed)
    y = el[tokens.long()]
    (y * dy).sum().backward()
    save(f"{out}/embedding.safetensors", {"embed": embed, "tokens": tokens, "dy": dy, "y": y, "d_embed": el.grad}, {})

    for name, with_teacher, (w_ce, w_kl, temp), grad_scale, seed in [
        ("head_loss", True, (0.7, 1.3, 2.0), 0.5, 8),
        ("head_loss_ce", False, (1.0, 0.0, 1.0), 1.0, 9),
    ]:
        g = gen(seed)
        n, d, vocab, td = 15, 13, 53, 17
        hidden, head = randn(g, n, d), randn(g, vocab, d, scale=0.7)
        t_hidden, t_head = randn(g, n, td), randn(g, vocab, td, scale=0.9)
        targets = torch.randint(0, vocab, (n,), generator=g, dtype=torch.int32)
        targets[3] = targets[11] = -1
        hl, wl = leaf(hidden), leaf(head)
        loss, ce, kl, agree = head_loss(
            hl, wl, targets, t_hidden if with_teacher else None, t_head, w_ce, w_kl, temp
        )
        (grad_scale * loss).backward()
        tensors = {"hidden": hidden, "head": head, "targets": targets}
        if with_teacher:
            tensors.update({"t_hidden": t_hidden, "t_head": t_head})
        tensors.update(
            {
                "loss": loss.reshape(1),
                "ce": ce.reshape(1),
                "kl": kl.reshape(1).float(),
                "agree": agree.reshape(1),
                "d_hidden": hl.grad,
                "d_head": wl.grad,
            }
        )
        meta = {"ce": w_ce, "kl": w_kl, "temperature": temp, "grad_scale": grad_scale}
        save(f"{out}/{name}.safetensors", tensors, meta)


LAYER_TENSORS = [
    ("attn_norm.weight", "d"),
    ("attn_q.weight", ("q", "d")),
    ("attn_k.weight", ("kv", "d")),
    ("attn_v.weight", ("kv", "d")),
    ("attn_output.weight", ("d", "q")),
    ("ffn_norm.weight", "d"),
    ("ffn_gate.weight", ("ff", "d")),
    ("ffn_up.weight", ("ff", "d")),
    ("ffn_down.weight", ("d", "ff")),
]


def model_fixture(out, tied, seed):
    c = dict(n_vocab=67, n_embd=30, n_layer=2, n_head=4, n_head_kv=2, head_dim=6, n_ff=45)
    eps, base, n_seq, seq_len, td, anchor_layer = 1e-5, 10000.0, 2, 7, 21, 0
    w_ce, w_kl, temp = 0.8, 1.1, 1.5
    dims = {"d": c["n_embd"], "q": c["n_head"] * c["head_dim"], "kv": c["n_head_kv"] * c["head_dim"], "ff": c["n_ff"]}
    g = gen(seed)
    params = {"token_embd.weight": randn(g, c["n_vocab"], c["n_embd"])}
    for l in range(c["n_layer"]):
        for name, shape in LAYER_TENSORS:
            if isinstance(shape, str):
                params[f"blk.{l}.{name}"] = 1.0 + randn(g, dims[shape], scale=0.2)
            else:
                rows, cols = dims[shape[0]], dims[shape[1]]
                params[f"blk.{l}.{name}"] = randn(g, rows, cols, scale=1.0 / math.sqrt(cols))
    params["output_norm.weight"] = 1.0 + randn(g, c["n_embd"], scale=0.2)
    if not tied:
        params["output.weight"] = randn(g, c["n_vocab"], c["n_embd"], scale=0.5)
    n = n_seq * seq_len
    tokens = torch.randint(0, c["n_vocab"], (n,), generator=g, dtype=torch.int32)
    targets = torch.randint(0, c["n_vocab"], (n,), generator=g, dtype=torch.int32)
    targets[seq_len - 1] = targets[n - 1] = -1
    t_hidden, t_head = randn(g, n, td), randn(g, c["n_vocab"], td, scale=0.8)
    anchor = randn(g, n, c["n_embd"], scale=0.1)

    p = {k: leaf(v) for k, v in params.items()}
    x = p["token_embd.weight"][tokens.long()]
    residuals = []
    for l in range(c["n_layer"]):
        w = lambda name: p[f"blk.{l}.{name}"]
        xn = rmsnorm(x, w("attn_norm.weight"), eps)
        q = rope(xn @ w("attn_q.weight").T, n_seq, seq_len, c["head_dim"], base)
        k = rope(xn @ w("attn_k.weight").T, n_seq, seq_len, c["head_dim"], base)
        v = xn @ w("attn_v.weight").T
        att = attention(q, k, v, n_seq, seq_len, c["n_head"], c["n_head_kv"], c["head_dim"])
        x = x + att @ w("attn_output.weight").T
        xn = rmsnorm(x, w("ffn_norm.weight"), eps)
        h = swiglu(xn @ w("ffn_gate.weight").T, xn @ w("ffn_up.weight").T)
        x = x + h @ w("ffn_down.weight").T
        residuals.append(x)
    hidden = rmsnorm(x, p["output_norm.weight"], eps)
    head = p["token_embd.weight"] if tied else p["output.weight"]
    loss, ce, kl, agree = head_loss(hidden, head, targets, t_hidden, t_head, w_ce, w_kl, temp)
    total = loss + (anchor * residuals[anchor_layer]).sum()
    total.backward()

    tensors = {"tokens": tokens, "targets": targets, "t_hidden": t_hidden, "t_head": t_head, "anchor": anchor}
    tensors.update({f"param.{k}": v for k, v in params.items()})
    tensors.update({f"grad.{k}": v.grad for k, v in p.items()})
    tensors.update({f"residual.{l}": r for l, r in enumerate(residuals)})
    tensors.update({"hidden": hidden, "loss": loss.reshape(1), "agree": agree.reshape(1)})
    meta = dict(c, rms_eps=eps, rope_base=base, tied=str(tied).lower(), n_seq=n_seq, anchor_layer=anchor_layer)
    meta.update({"ce": w_ce, "kl": w_kl, "temperature": temp, "torch": torch.__version__})
    save(f"{out}/model_{'tied' if tied else 'untied'}.safetensors", tensors, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the .safetensors files")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    op_fixtures(args.out)
    model_fixture(args.out, tied=False, seed=21)
    model_fixture(args.out, tied=True, seed=22)
    print(f"torch {torch.__version__}: fixtures written to {args.out}")


if __name__ == "__main__":
    main()
