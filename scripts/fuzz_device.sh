#!/usr/bin/env bash
# Long fuzz runs on a many-core machine without a Rust toolchain (issue 9; docs/RELIABILITY.md),
# from the pack scripts/fuzz_pack.sh makes. From the repository root:
#
#   mkdir -p /tmp/nexus-fuzz && tar xzf .carry/fuzz.tgz -C /tmp/nexus-fuzz
#   FUZZ_PACK=/tmp/nexus-fuzz FUZZ_OUT=DIR scripts/fuzz_device.sh SECONDS JOBS [TARGET...]
#
# Runs each TARGET (default: all twelve) one after another for SECONDS, as JOBS libFuzzer
# processes (-jobs=JOBS -workers=JOBS) sharing one corpus folder, with scripts/fuzz.sh's
# options and limits. Each process runs the whole time and prints its own final count, so the
# total is exact (libFuzzer's -fork mode kills its last jobs uncounted). New corpus entries go
# to FUZZ_WORK/TARGET/corpus (default FUZZ_PACK/work; a second run starts from them).
#
# FUZZ_OUT (default $OUT when set, else fuzz-device-out) gets summary.txt (appended), one line per
# target (executions, per second, findings), artifacts/TARGET/ (crashing, timing-out or
# over-limit inputs) and logs/TARGET/ (each process's last 64 kB). Exits non-zero when
# anything was found. FUZZ_EXTRA adds libFuzzer options (they override the ones above).
# RAYON_NUM_THREADS defaults to 1: the targets that run a model would otherwise start a thread
# per core in each of the JOBS processes.
set -u
[ $# -ge 2 ] || { sed -n '2,/^set -u/p' "$0" | grep '^#' >&2; exit 2; }
. "$(dirname "$0")/fuzz_options.sh"
secs=$1
jobs=$2
shift 2
# -max_total_time=0 would mean no limit.
[[ $secs =~ ^[1-9][0-9]*$ && $jobs =~ ^[1-9][0-9]*$ ]] || { echo "fuzz_device: SECONDS and JOBS must be positive whole numbers" >&2; exit 2; }
targets=("${@:-${FUZZ_TARGETS[@]}}")
[ ${#targets[@]} -eq 0 ] && targets=("${FUZZ_TARGETS[@]}")
pack=$(cd "${FUZZ_PACK:-/tmp/nexus-fuzz}" && pwd) || exit 2
out=${FUZZ_OUT:-${OUT:-fuzz-device-out}}
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=${FUZZ_WORK:-$pack/work}
bin=$pack/fuzz/all
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
[ -x "$bin" ] || { echo "fuzz_device: no $bin (unpack .carry/fuzz.tgz there)" >&2; exit 2; }

status=0
for t in "${targets[@]}"; do
    opts=$(fuzz_options "$t" "$pack/fuzz/dicts") || { echo "fuzz_device: no target $t" >&2; exit 2; }
    dir=$work/$t
    mkdir -p "$dir/corpus" "$out/artifacts/$t" "$out/logs/$t"
    rm -f "$dir"/fuzz-*.log
    start=$(date +%s)
    # -jobs writes each process's output to fuzz-N.log in the current folder.
    # shellcheck disable=SC2086
    (cd "$dir" && NEXUS_FUZZ_ROOT=$pack NEXUS_FUZZ_TARGET=$t "$bin" corpus "$pack/fuzz/corpus/$t" \
        -jobs="$jobs" -workers="$jobs" -max_total_time="$secs" "${FUZZ_LIMITS[@]}" -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$t/" $opts ${FUZZ_EXTRA:-} >"$out/logs/$t/main.log" 2>&1)
    rc=$?
    wall=$(( $(date +%s) - start ))
    execs=0
    for log in "$dir"/fuzz-*.log; do
        [ -f "$log" ] || continue
        n=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        # A process killed from outside prints no final stats; its last status line is close.
        [ -z "$n" ] && n=$(grep -a -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
        execs=$((execs + ${n:-0}))
        tail -c 65536 "$log" >"$out/logs/$t/$(basename "$log")"
    done
    found=$(find "$out/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        result="FOUND (rc $rc, $found inputs in artifacts/$t/)"
        status=1
    else
        result=ok
    fi
    # Per second of fuzzing: the wall time also holds the processes' start (loading vocabularies).
    line=$(printf '%-20s %13d executions, %9d/s over %ds (%ds wall), %2d jobs, %6d corpus entries  %s' \
        "$t" "$execs" $((execs / secs)) "$secs" "$wall" "$jobs" "$(ls "$dir/corpus" | wc -l)" "$result")
    echo "$line"
    echo "$line" >>"$out/summary.txt"
done
exit $status
