#!/usr/bin/env bash
# On the GPU machine: decode speed (tg128; TEST=pp: prompt speed, pp512) of each file under
# several launch settings, runs alternated so drift hits every variant alike. Variants are environment settings the CUDA
# backend reads at start (NEXUS_CUDA_PDL, NEXUS_CUDA_MV_WARPS; docs/CUDA.md).
#   scripts/cuda/ab_decode.sh OUT_DIR FILE.gguf...   (VARIANTS, ROUNDS, N override)
set -u
out=$1; shift
B=${B:-.carry/cuda}
VARIANTS=${VARIANTS:-"plain:NEXUS_CUDA_PDL=0,NEXUS_CUDA_MV_WARPS=8,NEXUS_CUDA_FUSED_ROPE=0 pdl:NEXUS_CUDA_MV_WARPS=8,NEXUS_CUDA_FUSED_ROPE=0 pdl+grid:NEXUS_CUDA_FUSED_ROPE=0 all:NEXUS_CUDA_PDL=1"}
TEST=${TEST:-tg}
if [ "$TEST" = pp ]; then ARGS="-p ${P:-512} -n 0"; else ARGS="-p 0 -n ${N:-128}"; fi
for f in "$@"; do
  for round in $(seq "${ROUNDS:-2}"); do
    for v in $VARIANTS; do
      name=${v%%:*}; envs=${v#*:}; bin=$B/nexus-cli
      [[ ,$envs, =~ ,BIN=([^,]*), ]] && bin=${BASH_REMATCH[1]}
      tps=$(env ${envs//,/ } "$bin" bench -m "$f" --device cuda $ARGS -r 5 -o json 2>>"$out/ab.err" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); r=[x for x in (d if isinstance(d,list) else d.get("results",[d])) if sys.argv[1] in str(x.get("test",""))]; print("%.1f" % r[0]["avg_ts"])' "$TEST" 2>>"$out/ab.err")
      echo "$(basename "$f" .gguf) $TEST round$round $name ${tps:-failed}" | tee -a "$out/ab.txt"
    done
  done
done
