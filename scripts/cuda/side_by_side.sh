#!/usr/bin/env bash
# On the GPU machine: llama.cpp and nexus-cli on the same synthetic files, in the same session
# (the issue's "side by side on the same machine"). From the repository root, with the
# binaries of scripts/cuda/build_carry.sh in $B and llama.cpp's pruned source
# (../shared/tools/llama-cpp-ref/llamacpp-src.tar.gz) carried as .carry/llamacpp-src.tar.gz:
#
#   side_by_side.sh build   starts the CUDA build of llama-bench in ~/lcw in a session of its own,
#                           so it outlives the device call that started it (~5 min on 12 cores)
#   side_by_side.sh synth   writes the synthetic files (`nexus-cli synth`) into ~/nexus-models
#   side_by_side.sh bench   waits for the build, then per file: `nexus-cli bench` (-r 5) and
#                           `llama-bench -ngl 99 -fa 1 -r 20`; then our int8 GEMM against
#                           cuBLAS on the Q8_0 prompts, and the Q8_0 KV cache rows
#
# ~/lcw and ~/nexus-models stay while the machine is warm (30 s after a call), so the stages go
# in back-to-back calls. Logs and tables go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:-.carry/cuda}
W=$HOME/lcw; M=$HOME/nexus-models; mkdir -p "$W" "$M"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} PATH=/usr/local/cuda/bin:$PATH
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/side_by_side.txt"; }
FILES=${FILES:-"smollm2-135m:q4_1 smollm2-135m:q8_0 smollm2-135m:q4_k_m llama-3.2-1b:f16 llama-3.2-1b:q8_0 llama-3.2-1b:q4_0 llama-3.2-1b:q4_k_m llama-3.1-8b:q4_k_m"}

case ${1:-} in
build)
    if [ -x "$W/build/bin/llama-bench" ]; then log "llama-bench already built"; exit 0; fi
    [ -d "$W/llama.cpp" ] || tar xzf .carry/llamacpp-src.tar.gz -C "$W"
    setsid bash -c "
        cmake -S $W/llama.cpp -B $W/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DLLAMA_OPENSSL=OFF \
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
          > $W/configure.log 2>&1 &&
        taskset -c ${CORES:-4-15} ninja -C $W/build -j12 llama-bench > $W/build.log 2>&1
        echo \$? > $W/build.rc" < /dev/null > /dev/null 2>&1 &
    log "llama.cpp build started"
    ;;
synth)
    for spec in $FILES; do
        cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
        [ -f "$f" ] && continue
        $B/nexus-cli synth --config "$cfg" --type "$ty" -o "$f" >> "$OUT/synth.log" 2>&1; log "synth $cfg $ty rc=$?"
    done
    ;;
bench)
    for _ in $(seq 1 ${WAIT_BUILD:-240}); do [ -f "$W/build.rc" ] && break; sleep 1; done
    log "llama.cpp build rc=$(cat "$W/build.rc" 2>/dev/null || echo 'not finished')"
    tail -5 "$W/build.log" > "$OUT/llama_build_tail.log" 2>/dev/null
    L=$W/build/bin/llama-bench
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
    for spec in $FILES; do
        cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
        [ -f "$f" ] || { log "no $f"; continue; }
        log "nexus $cfg $ty"
        $B/nexus-cli bench -m "$f" --device cuda -p 512 -n 128 -r ${REPS:-5} -o json > "$OUT/nexus-$cfg-$ty.json" 2>> "$OUT/bench.err"
        log "nexus-cli bench rc=$?"
        if [ -x "$L" ]; then
            log "llama.cpp $cfg $ty"
            $L -m "$f" -ngl 99 -fa 1 -p 512 -n 128 -r ${LREPS:-20} -o json > "$OUT/llama-$cfg-$ty.json" 2> "$OUT/llama-$cfg-$ty.err"
            log "llama-bench rc=$?"
        fi
    done
    # Prompts over Q8_0 weights: our int8 GEMM (NEXUS_CUDA_MMQ=1) against dequantize + cuBLAS,
    # alternated over two rounds.
    for spec in ${MMQ_FILES:-llama-3.2-1b:q8_0 smollm2-135m:q8_0}; do
        cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
        for round in 1 2; do for mmq in 0 1; do
            r=$(NEXUS_CUDA_MMQ=$mmq $B/nexus-cli bench -m "$f" --device cuda -p 512 -n 0 -r 5 2>> "$OUT/bench.err" | grep -E "pp512" | grep -oE '[0-9.]+ ± [0-9.]+')
            log "$cfg $ty NEXUS_CUDA_MMQ=$mmq round $round: pp512 $r"
        done; done
    done
    # The KV cache in Q8_0 against f16 on the GPU, at no depth and at 4096 positions.
    for spec in ${KV_FILES:-smollm2-135m:q4_1 llama-3.2-1b:q4_0}; do
        cfg=${spec%%:*}; ty=${spec##*:}; f=$M/$cfg-$ty.gguf
        for d in 0 4096; do
            for kv in "f16 f16" "q8_0 q8_0"; do
                set -- $kv
                # The check stage (device_check.sh) must have passed the Q8_0 cache's parity tests first.
                NEXUS_CUDA_UNVERIFIED=1 $B/nexus-cli bench -m "$f" --device cuda -p 512 -n 128 -r 3 -d $d -ctk $1 -ctv $2 2>> "$OUT/bench.err" | grep -E "pp|tg" | tee -a "$OUT/side_by_side.txt"
                if [ -x "$L" ]; then
                    $L -m "$f" -ngl 99 -fa 1 -p 512 -n 128 -r 5 -d $d -ctk $1 -ctv $2 -o md 2>> "$OUT/llama_kv.err" | grep -E "pp|tg" | tee -a "$OUT/side_by_side.txt"
                fi
            done
        done
    done
    ;;
*)
    echo "usage: $0 build|synth|bench" >&2; exit 2 ;;
esac
