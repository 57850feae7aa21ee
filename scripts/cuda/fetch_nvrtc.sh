#!/usr/bin/env bash
# Fetches NVRTC and the CUDA headers (no driver, no GPU needed) from NVIDIA's PyPI packages
# into .nvrtc/ (git-ignored), so the CUDA C kernels can be compiled — not run — on a machine
# without CUDA: `kernels/src/cuda/compile.rs`'s test compiles them for sm_90 when NVRTC is
# found. Use: scripts/cuda/fetch_nvrtc.sh && export LD_LIBRARY_PATH=$PWD/.nvrtc/lib CUDA_PATH=$PWD/.nvrtc
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/.nvrtc"
if [ -f "$dest/lib/libnvrtc.so.13" ] && [ -f "$dest/include/cuda_fp16.h" ]; then
  echo ".nvrtc is present"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cuda-nvrtc==13.0.88" "nvidia-cuda-runtime==13.0.96"
for whl in "$tmp"/*.whl; do
  python3 -m zipfile -e "$whl" "$tmp/x"
done
rm -rf "$dest.part"
mkdir -p "$dest.part"
cp -r "$tmp/x/nvidia/cu13/lib" "$tmp/x/nvidia/cu13/include" "$dest.part/"
rm -rf "$dest" && mv "$dest.part" "$dest"
echo ".nvrtc ready (NVRTC $(ls "$dest/lib" | grep -o 'nvrtc.so.[0-9.]*' | head -1))"
