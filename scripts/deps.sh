#!/usr/bin/env bash
# Installs the system libraries that the optional features link, on Debian/Ubuntu:
#   speech (`--features speech`): libespeak-ng-dev (the phonemizer, GPL-3.0-or-later) and
#   libclang-dev (its bindings are generated at build time), libasound2-dev (cpal's ALSA
#   backend); pkg-config finds them; python3-pip lets models/fetch.sh fetch the models.
# The default build (`cargo build`) needs none of them. Does nothing when all are present.
set -euo pipefail
pkgs=(pkg-config python3-pip libespeak-ng-dev libclang-dev libasound2-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: install these packages (or your system's equivalents): ${missing[*]}" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "installing ${missing[*]}…"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
