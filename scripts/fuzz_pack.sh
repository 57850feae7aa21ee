#!/usr/bin/env bash
# Packs the fuzz targets for a machine without a Rust toolchain (issue 9; docs/RELIABILITY.md):
# builds fuzz/'s `all` binary (every target, chosen by NEXUS_FUZZ_TARGET) without a sanitizer
# but with debug assertions (integer overflow still panics), strips it, checks that it needs
# no library beyond glibc, libstdc++ and libgcc and that every target runs its seeds, and
# tars it with the seeds, the dictionaries and the files the targets read (the real
# vocabularies, the golden base) into .carry/fuzz.tgz. scripts/fuzz_device.sh runs it.
#
#   scripts/fuzz_pack.sh [OUTPUT]        (default .carry/fuzz.tgz; must stay under 12 MiB)
#
# No sanitizer because ASan makes the targets several times slower and the binary several
# times larger; the long runs are about executions, and scripts/fuzz.sh keeps ASan here.
set -eu
cd "$(dirname "$0")/.."
. scripts/fuzz_options.sh
out=${1:-.carry/fuzz.tgz}
limit=$((12 * 1024 * 1024))

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi
# A target folder of its own, so scripts/fuzz.sh's ASan build is not rebuilt after this one.
# No debug info: it is stripped anyway, and it would only slow the build.
(cd fuzz && CARGO_PROFILE_RELEASE_DEBUG=0 "${FUZZ[@]}" build -O -a -s none --target-dir target/nosan all)
bin=fuzz/target/nosan/x86_64-unknown-linux-gnu/release/all

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/fuzz" "$stage/models/vocab" "$stage/tests/fixtures/tokenizer" "$stage/tests/fixtures/golden"
strip -o "$stage/fuzz/all" "$bin"
cp -r fuzz/corpus fuzz/dicts "$stage/fuzz/"
cp tests/fixtures/tokenizer/ggml-vocab-llama-spm.gguf "$stage/tests/fixtures/tokenizer/"
cp tests/fixtures/golden/llama-spm-gqa.f32.gguf "$stage/tests/fixtures/golden/"
for v in gpt-2 llama-bpe qwen2 starcoder; do
    f=models/vocab/ggml-vocab-$v.gguf
    [ -f "$f" ] || { echo "fuzz_pack: $f is missing (scripts/fetch_vocab.sh fetches it)" >&2; exit 1; }
    cp "$f" "$stage/models/vocab/"
done

# Anything beyond the C and C++ runtimes might be missing on the other machine.
extra=$(ldd "$stage/fuzz/all" | grep -v -E 'linux-vdso|ld-linux|/libc\.so|/libm\.so|/libstdc\+\+\.so|/libgcc_s\.so|/libpthread\.so|/libdl\.so|/librt\.so' || true)
if [ -n "$extra" ]; then
    echo "fuzz_pack: the binary needs more than glibc, libstdc++ and libgcc:" >&2
    echo "$extra" >&2
    exit 1
fi
# What the other machine's C and C++ runtimes must provide at least.
needs=$(objdump -T "$stage/fuzz/all" | grep -o -E 'GLIBC(XX)?_[0-9.]+' | sort -V -u | awk -F_ '{v[$1]=$0} END {print v["GLIBC"], v["GLIBCXX"]}')
echo "fuzz_pack: the binary needs $needs"
# Every target must run its seeds from the staged files alone (-runs=0: the corpus only).
for t in "${FUZZ_TARGETS[@]}"; do
    if ! NEXUS_FUZZ_ROOT="$stage" NEXUS_FUZZ_TARGET="$t" "$stage/fuzz/all" -runs=0 $(fuzz_options "$t" "$stage/fuzz/dicts") \
        "$stage/fuzz/corpus/$t" >"$stage/check.log" 2>&1; then
        echo "fuzz_pack: $t fails on its seeds:" >&2
        tail -30 "$stage/check.log" >&2
        exit 1
    fi
    # The text targets quietly fuzz fewer vocabularies when one is missing.
    if grep -q 'absent' "$stage/check.log"; then
        grep 'absent' "$stage/check.log" >&2
        exit 1
    fi
done
rm -f "$stage/check.log"

mkdir -p "$(dirname "$out")"
tar czf "$out" -C "$stage" .
size=$(stat -c %s "$out")
echo "$out: $size bytes ($(du -h "$out" | cut -f1)); binary $(stat -c %s "$stage/fuzz/all") bytes stripped"
if [ "$size" -gt "$limit" ]; then
    echo "fuzz_pack: $out is over 12 MiB" >&2
    exit 1
fi
