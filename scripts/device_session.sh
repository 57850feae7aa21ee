#!/usr/bin/env bash
# Everything the GPU machine is needed for, in one device call (the machine is scarce: make
# each start count). From the repository root on the GPU machine, with .carry/pack.txz carried:
#
#   run(command="bash scripts/device_session.sh", carry=[".carry/pack.txz"])
#
# .carry/pack.txz (xz, ~11 MB) holds the fuzz pack (scripts/fuzz_pack.sh's .carry/fuzz.tgz
# unpacked), cuda/ (scripts/cuda/build_carry.sh's binaries) and llama-convert.tar.gz (the
# converter tree of .carry/spm). Make it:
#   rm -rf /tmp/pstage && mkdir -p /tmp/pstage && tar xzf .carry/fuzz.tgz -C /tmp/pstage &&
#   cp -r .carry/cuda /tmp/pstage/ && cp .carry/spm/llama-convert.tar.gz /tmp/pstage/ &&
#   tar cJf .carry/pack.txz -C /tmp/pstage .
# What runs, with $OUT getting every log: fuzzing on cores 4-15 in the background (FZ:
# "target:seconds ..."), the SentencePiece converter fixtures on core 3
# (scripts/convert/spm_on_device.sh, SPM=0 skips), and on cores 0-2 scripts/cuda/device_check.sh's
# STAGES (default: check bench lora cli spec), each under a time limit
# (TCHECK, TBENCH, TLORA, TCLI, TSPEC, TSW, TTRAIN seconds).
set -u
R=$OUT; mkdir -p $R
P=$HOME/p
if [ ! -x $P/fuzz/all ]; then mkdir -p $P && tar xJf .carry/pack.txz -C $P; fi
echo "unpacked $(date +%T)" > $R/t.txt
FZ=${FZ:-"chat_template:180 bundle_reader:180 tokenizer_vocab:120"}
( for spec in $FZ; do t=${spec%%:*}; s=${spec##*:};
    FUZZ_PACK=$P FUZZ_OUT=$R/fuzz NEXUS_FUZZ_ROOT=$P taskset -c 4-15 scripts/fuzz_device.sh $s 12 $t > $R/fuzz_$t.log 2>&1; done ) &
FPID=$!
if [ "${SPM:-1}" = 1 ]; then
  ( SPM_CONVERT=$P/llama-convert.tar.gz OUT=$R/spm timeout 200 taskset -c 3 bash scripts/convert/spm_on_device.sh > $R/spm.log 2>&1; echo "spm rc=$?" >> $R/spm.log ) &
fi
mkdir -p $R/spm
export B=$P/cuda
# STAGES: which of check, bench, lora, cli, spec, switches and train run, in the order given.
for st in ${STAGES:-check bench lora cli spec}; do
  case $st in
    check) STAGE=check OUT=$R/dc timeout ${TCHECK:-260} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    bench) BENCH=${BENCH:-"smollm2-135m:q4_1 llama-3.2-1b:f16 llama-3.2-1b:q4_0"} REPS=3 STAGE=bench OUT=$R/dc timeout ${TBENCH:-120} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    lora) LORA_BENCH=${LORA_BENCH:-"smollm2-135m:q4_1 llama-3.2-1b:q8_0"} REPS=3 STAGE=lora OUT=$R/dc timeout ${TLORA:-120} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    cli) STAGE=cli OUT=$R/dc timeout ${TCLI:-120} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    spec) STAGE=spec OUT=$R/dc timeout ${TSPEC:-200} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    train) STAGE=train OUT=$R/dc timeout ${TTRAIN:-300} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
    switches) STAGE=switches OUT=$R/dc timeout ${TSW:-150} taskset -c 0-2 bash scripts/cuda/device_check.sh ;;
  esac
  echo "$st rc=$?" >> $R/t.txt
done
wait $FPID
echo "done $(date +%T)" >> $R/t.txt
cat $R/t.txt $R/dc/summary.txt $R/fuzz/summary.txt $R/spm.log 2>/dev/null | tail -60
