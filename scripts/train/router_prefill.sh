#!/usr/bin/env bash
# The prefill-time cost of routing (docs/DISTILL.md, "The router"): `nexus-cli run` on the
# student with and without --router, REPS times each, printing every run's prompt time and
# routing time and their medians. The prompts: one the router sends to the base (no adapter,
# so the prefill itself is unchanged) and one it sends to the arithmetic adapter.
#   scripts/train/router_prefill.sh NEXUS_CLI STUDENT ROUTER ARITH_LORA CODE_LORA [REPS] [THREADS]
set -euo pipefail
cli=$1 student=$2 router=$3 arith=$4 code=$5 reps=${6:-7} threads=${7:-$(nproc)}
general="Explain in a few paragraphs how the water in a river reaches the sea, what happens to it on the way, how people have used rivers for travel, trade and power over the centuries, and why some rivers flood in spring while others run dry in late summer. Mention the role of forests, wetlands and dams, and say what a town can do to live safely beside a river that floods."
arith_p="A shop sells pencils at 35 cents each and notebooks at 2 dollars 40 cents each. Maria buys 12 pencils and 5 notebooks, pays with a 50 dollar note, and then returns 2 notebooks the next day. How much money does she get back in total, and what did she spend overall? Show every step of the calculation, then check the answer by adding the costs in a different order."
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
measure() { # name prompt extra-args...
  local name=$1 prompt=$2; shift 2
  local pre=() route=()
  for _ in $(seq "$reps"); do
    err=$("$cli" run -m "$student" -p "$prompt" -n 1 --temp 0 -t "$threads" --device cpu "$@" 2>&1 >/dev/null)
    # tokens / (tokens/s): finer than the seconds printed with two decimals.
    p=$(grep -oE 'prompt: [0-9]+ tokens in [0-9.]+ s \([0-9.]+ tokens/s' <<<"$err" | tr -d '(' | awk '{printf "%.2f", $2 / $7 * 1000}')
    r=$(grep -oE '\[[0-9.]+ ms\]' <<<"$err" | tr -d '[]ms ' || true)
    pre+=("$p"); route+=("${r:-0}")
  done
  tokens=$(grep -oE 'prompt: [0-9]+ tokens' <<<"$err" | awk '{print $2}')
  choice=$(grep -E '^router: (capability|the base)' <<<"$err" | head -1 || true)
  printf '%-28s %3s tokens  prefill median %7.1f ms  routing median %6.1f ms   (prefill: %s; routing: %s)\n' \
    "$name" "$tokens" "$(printf '%s\n' "${pre[@]}" | median)" "$(printf '%s\n' "${route[@]}" | median)" "${pre[*]}" "${route[*]}"
  [ -n "$choice" ] && echo "    $choice"
  return 0
}
routed=(--router "$router" --lora-cap "arithmetic=$arith" --lora-cap "code=$code")
measure "general, no router" "$general"
measure "general, routed" "$general" "${routed[@]}"
measure "arithmetic, no router" "$arith_p"
measure "arithmetic, --lora arith" "$arith_p" --lora "$arith"
measure "arithmetic, routed" "$arith_p" "${routed[@]}"
