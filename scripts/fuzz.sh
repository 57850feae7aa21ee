#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for SECONDS each (default 60) and prints, per target,
# the executions done and whether it found anything (issue 9; docs/RELIABILITY.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# FUZZ_SEED=N fixes libFuzzer's random seed (CI sets it, so its short run is the same
# sequence of inputs every time rather than a lottery).
#
# Uses `cargo +nightly fuzz` when a nightly toolchain is installed, else the stable toolchain
# with RUSTC_BOOTSTRAP=1 (its rustlib ships the ASan runtime cargo-fuzz links). Installs
# cargo-fuzz from crates.io when it is missing. New corpus entries go to fuzz/work/ (ignored);
# the committed seeds in fuzz/corpus/ are only read. A crash, panic, timeout (> 1 s on one
# input) or an allocation over 1 GiB leaves its input in fuzz/artifacts/<target>/ and makes
# the script exit non-zero after all targets ran.
set -u
. "$(dirname "$0")/fuzz_options.sh"
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-60}
shift || true
ALL_TARGETS=("${FUZZ_TARGETS[@]}")
TARGETS=("${@:-${ALL_TARGETS[@]}}")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 1
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi

# Debug assertions (-a) turn integer overflow into a panic the fuzzer reports.
"${FUZZ[@]}" build -O -a || exit 1

status=0
summary=()
for t in "${TARGETS[@]}"; do
    mkdir -p "work/corpus/$t" "work/logs" "artifacts/$t"
    log="work/logs/$t.log"
    # shellcheck disable=SC2046
    "${FUZZ[@]}" run -O -a "$t" "work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" "${FUZZ_LIMITS[@]}" \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
        $(fuzz_options "$t" dicts) >"$log" 2>&1
    rc=$?
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    [ -z "$execs" ] && execs=$(grep -a -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    if [ $rc -eq 0 ]; then
        result=ok
    else
        result="FOUND (rc $rc): $(ls "artifacts/$t" | head -3 | tr '\n' ' ')see fuzz/$log"
        status=1
    fi
    summary+=("$(printf '%-20s %12s executions  %s' "$t" "${execs:-?}" "$result")")
    echo "${summary[-1]}"
done
echo
echo "fuzzed ${SECONDS_EACH}s per target:"
printf '%s\n' "${summary[@]}"
exit $status
