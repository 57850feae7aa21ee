#!/usr/bin/env bash
# llama.cpp's converter on the SentencePiece fixtures (llama-spm, llama-spm-tj), on the GPU
# machine (it has torch + transformers + numpy; CPU work only). One command, from the repo root:
#
#   run(command="bash scripts/convert/spm_on_device.sh", carry=[".carry/spm"])
#
# .carry/spm/ (about 7 MB, made on the dev machine, see tests/fixtures/hf_convert/README.md):
#   llama-convert.tar.gz   llama.cpp/{convert_hf_to_gguf.py,conversion/,gguf-py/} unmodified from
#                          the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp; gguf-py 0.19.0)
#   sentencepiece-0.2.3-cp3{10,11,12,13}-*.whl   the converter imports sentencepiece
# Writes to $OUT: llama-spm/ and llama-spm-tj/ (the HF directories without model.safetensors,
# which the Rust test regenerates), *.manifest.json, *.convert.log, versions.txt. Copy them
# into tests/fixtures/hf_convert/ (the directories must come out identical to the committed ones).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
W=/tmp/spm-fixtures
rm -rf "$W"
mkdir -p "$W/site"
# Use the machine's sentencepiece when it has one; otherwise install the carried wheel.
if ! python3 -c 'import sentencepiece' 2>/dev/null; then
    PYV=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    WHL=$(ls .carry/spm/sentencepiece-*-"$PYV"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$WHL" ]; then
        echo "no sentencepiece on this machine and no wheel for $PYV in .carry/spm/" >&2
        exit 1
    fi
    python3 -m pip install --quiet --no-index --no-deps --target "$W/site" "$WHL"
fi
SPM_CONVERT=${SPM_CONVERT:-.carry/spm/llama-convert.tar.gz}
tar xzf "$SPM_CONVERT" -C "$W"
export PYTHONPATH="$W/site:$W/llama.cpp/gguf-py"
python3 - > "$OUT/versions.txt" <<'PY'
import sys, numpy, torch, transformers, sentencepiece, gguf
print("python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__,
      "transformers", transformers.__version__, "sentencepiece", sentencepiece.__version__,
      "gguf-py", getattr(gguf, "__version__", "0.19.0 (llama.cpp tree)"))
PY
cat "$OUT/versions.txt"
python3 scripts/convert/make_hf_fixtures.py --llama-cpp "$W/llama.cpp" --work "$W/work" --out "$OUT" \
    --only llama-spm --only llama-spm-tj
rm -f "$OUT"/llama-spm*/model.safetensors
# The committed directories must be what the reference converted.
for d in llama-spm llama-spm-tj; do
    if diff -r "$OUT/$d" "tests/fixtures/hf_convert/$d" > "$OUT/$d.dir.diff"; then
        echo "$d: directory identical to the committed fixture"
        rm "$OUT/$d.dir.diff"
    else
        echo "$d: directory DIFFERS from the committed fixture, see $d.dir.diff"
    fi
done
ls -la "$OUT"
