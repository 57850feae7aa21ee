#!/usr/bin/env python3
"""Golden fixtures for the native VITS voice: onnxruntime's intermediates and audio.

Runs the Piper voice (models/en_US-joe-medium.onnx) in onnxruntime at scales
(noise_scale, length_scale, noise_w) = (0, 1, 0), which is bit-deterministic (both
RandomNormalLike outputs are multiplied by 0), for a few short phoneme-id inputs, and writes
tests/fixtures/voice/golden.gguf with, per case c:

  c.ids        i32 [N]       phoneme ids (from piper-tts's own phonemizer, written here so the
                             Rust tests need no phonemizer)
  c.enc_x      f32 [192, N]  text-encoder hidden output (`/enc_p/encoder/Mul_2_output_0`,
                             the input of enc_p.proj and of dp.pre)
  c.m_p        f32 [192, N]  `/enc_p/Split_output_0`
  c.logs_p     f32 [192, N]  `/enc_p/Split_output_1`
  c.logw       f32 [N]       duration-predictor output (`/dp/Split_output_0`)
  c.durations  i32 [N]       ceil(exp(logw) * length_scale) (`/Ceil_output_0`)
  c.z_p        f32 [192, T]  `/Add_output_0`, before the flow
  c.z          f32 [192, T]  `/Mul_7_output_0`, flow output * y_mask = decoder input
  c.audio      f32 [S]       `output`, raw (before Piper's peak normalisation), S = 256 T

Shapes above are numpy (row-major, channels first); the gguf package writes GGUF dims reversed
(ne[0] innermost), the llama.cpp convention. The intermediate names were picked from the graph
and are checked here by shape and by recomputing steps in numpy (see `check_case`).

Usage (needs numpy, onnx, onnxruntime, piper-tts (phonemizer only), gguf (pip install gguf)):
  python3 scripts/voice/golden.py [--onnx models/en_US-joe-medium.onnx] [--out tests/fixtures/voice]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

# Short inputs keep the folder near 600 kB: every frame costs 2.5 kB (audio + z_p + z) and every
# id 2.3 kB (enc_x, m_p, logs_p), and a comma adds a ~30-frame pause. So: a plain sentence, one
# with a comma (and a question mark), one bare question.
TEXTS = [
    "Hello world.",
    "Hi, you?",
    "Who?",
]
SCALES = np.array([0.0, 1.0, 0.0], dtype=np.float32)
HOP = 256

# name in the fixture -> ONNX value name
INTERMEDIATES = {
    "enc_x": "/enc_p/encoder/Mul_2_output_0",
    "m_p": "/enc_p/Split_output_0",
    "logs_p": "/enc_p/Split_output_1",
    "logw": "/dp/Split_output_0",
    "ceil": "/Ceil_output_0",
    "z_p": "/Add_output_0",
    "z": "/Mul_7_output_0",
}
# Exposed only to check logw by recomputing the dp's last step (not stored).
DP_AFFINE_INPUT = "/dp/flows.2/Slice_output_0"


def phoneme_ids(texts: list[str], id_map: dict) -> list[tuple[str, np.ndarray]]:
    from piper.phoneme_ids import phonemes_to_ids
    from piper.phonemize_espeak import EspeakPhonemizer

    phonemizer = EspeakPhonemizer()
    out = []
    for text in texts:
        sentences = phonemizer.phonemize("en-us", text)
        assert len(sentences) == 1, f"{text!r} is not one sentence: {sentences}"
        phonemes = "".join(sentences[0])
        ids = np.array(phonemes_to_ids(sentences[0], id_map), dtype=np.int64)
        out.append((phonemes, ids))
    return out


def session_with_intermediates(onnx_path: Path) -> ort.InferenceSession:
    model = onnx.load(str(onnx_path))
    produced = {o for n in model.graph.node for o in n.output}
    for value in [*INTERMEDIATES.values(), DP_AFFINE_INPUT]:
        assert value in produced, f"{value} is not a node output of {onnx_path}"
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_case(sess: ort.InferenceSession, ids: np.ndarray) -> dict[str, np.ndarray]:
    names = ["output"] + list(INTERMEDIATES.values()) + [DP_AFFINE_INPUT]
    feeds = {
        "input": ids[None, :],
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": SCALES,
    }
    values = sess.run(names, feeds)
    got = dict(zip(["audio"] + list(INTERMEDIATES.keys()) + ["dp_affine_input"], values))
    return got


def init_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    raise KeyError(name)


def check_case(model: onnx.ModelProto, ids: np.ndarray, v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check the picked intermediates by shape and by recomputing steps; return fixture arrays."""
    n = len(ids)
    for key in ("enc_x", "m_p", "logs_p"):
        assert v[key].shape == (1, 192, n), (key, v[key].shape)
    assert v["logw"].shape == (1, 1, n), v["logw"].shape
    assert v["ceil"].shape == (1, 1, n), v["ceil"].shape
    dur = v["ceil"][0, 0].astype(np.int64)
    t = int(dur.sum())
    assert v["z_p"].shape == (1, 192, t), (v["z_p"].shape, t)
    assert v["z"].shape == (1, 192, t), (v["z"].shape, t)
    assert v["audio"].size == HOP * t, (v["audio"].shape, t)

    # m_p / logs_p = enc_p.proj(enc_x): a 1x1 conv.
    w = init_array(model, "enc_p.proj.weight")[:, :, 0].astype(np.float64)
    b = init_array(model, "enc_p.proj.bias").astype(np.float64)
    stats = w @ v["enc_x"][0].astype(np.float64) + b[:, None]
    err_proj = max(np.abs(stats[:192] - v["m_p"][0]).max(), np.abs(stats[192:] - v["logs_p"][0]).max())
    assert err_proj < 1e-4, err_proj
    # durations = ceil(exp(logw) * length_scale)
    assert np.array_equal(np.ceil(np.exp(v["logw"][0, 0]) * SCALES[1]), v["ceil"][0, 0])
    # with noise_scale 0, z_p is m_p with column i repeated durations[i] times (exactly).
    assert np.array_equal(np.repeat(v["m_p"][0], dur, axis=1), v["z_p"][0])
    # the dp's last step, ElementwiseAffine reversed: logw = (z0 - m) * exp(-logs), with
    # exp(-logs) constant-folded by the exporter (stored as dp.flows.0.exp_neg_logs).
    m = init_array(model, "dp.flows.0.m")
    exp_neg_logs = init_array(model, "/dp/flows.0/Exp_output_0")
    z0 = v["dp_affine_input"]
    assert z0.shape == (1, 2, n), z0.shape
    logw = (z0[0, 0] - m[0, 0]) * exp_neg_logs[0, 0]
    err_logw = np.abs(logw - v["logw"][0, 0]).max()
    assert err_logw < 1e-6, err_logw
    print(f"    N={n} T={t} S={HOP * t} proj recompute max err {err_proj:.2e}, logw {err_logw:.2e}; "
          f"z_p == repeat(m_p, durations) exactly")

    return {
        "enc_x": v["enc_x"][0],
        "m_p": v["m_p"][0],
        "logs_p": v["logs_p"][0],
        "logw": v["logw"][0, 0],
        "durations": dur.astype(np.int32),
        "z_p": v["z_p"][0],
        "z": v["z"][0],
        "audio": v["audio"].reshape(-1),
    }


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, default=root / "models/en_US-joe-medium.onnx")
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/voice")
    args = ap.parse_args()

    import gguf

    config = json.loads(Path(str(args.onnx) + ".json").read_text())
    voice_sha = hashlib.sha256(args.onnx.read_bytes()).hexdigest()
    model = onnx.load(str(args.onnx))
    sess = session_with_intermediates(args.onnx)
    plain_opts = ort.SessionOptions()
    plain_opts.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(args.onnx), plain_opts, providers=["CPUExecutionProvider"])

    args.out.mkdir(parents=True, exist_ok=True)
    final = args.out / "golden.gguf"
    tmp = args.out / ".golden.gguf.tmp"
    writer = gguf.GGUFWriter(str(tmp), arch="vits_golden")
    writer.add_name("en_US-joe-medium golden intermediates")
    writer.add_string("golden.voice_sha256", voice_sha)
    writer.add_string("golden.onnxruntime_version", ort.__version__)
    writer.add_string("golden.onnx_version", onnx.__version__)
    writer.add_array("golden.scales", [float(s) for s in SCALES])
    writer.add_uint32("golden.n_cases", len(TEXTS))

    for c, (text, (phonemes, ids)) in enumerate(zip(TEXTS, phoneme_ids(TEXTS, config["phoneme_id_map"]))):
        print(f"case {c}: {text!r} -> {phonemes!r} ({len(ids)} ids)")
        values = run_case(sess, ids)
        # The extra graph outputs keep ORT from fusing some nodes, which moves the audio by
        # summation-order noise only; the stored audio comes from the same run as the intermediates.
        ref = plain.run(["output"], {"input": ids[None, :], "input_lengths": np.array([len(ids)]), "scales": SCALES})[0]
        audio_diff = float(np.abs(ref.reshape(-1) - values["audio"].reshape(-1)).max())
        print(f"    audio vs the unmodified graph: max abs diff {audio_diff:.2e}")
        assert audio_diff < 1e-4, audio_diff
        arrays = check_case(model, ids, values)
        writer.add_string(f"golden.{c}.text", text)
        writer.add_string(f"golden.{c}.phonemes", phonemes)
        writer.add_tensor(f"{c}.ids", ids.astype(np.int32))
        for key, arr in arrays.items():
            writer.add_tensor(f"{c}.{key}", np.ascontiguousarray(arr))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, final)
    print(f"wrote {final} ({final.stat().st_size} bytes); voice sha256 {voice_sha}; onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
