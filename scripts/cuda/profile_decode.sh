#!/usr/bin/env bash
# On the GPU machine: per-kernel GPU time of greedy decode under Nsight Compute, summed by
# kernel name, for each GGUF given (written by `nexus-cli synth`). Shows where a token's time
# goes (docs/PERF.md). Usage: scripts/cuda/profile_decode.sh OUT_DIR FILE.gguf...
set -u
out=$1; shift
B=${B:-.carry/cuda}
export PATH=/usr/local/cuda/bin:$PATH
for f in "$@"; do
  name=$(basename "$f" .gguf)
  # -n 4: warm-up + one repetition = 8 decode steps; every kernel node of the graph is profiled.
  ncu --metrics gpu__time_duration.sum --csv --graph-profiling node \
    "$B/nexus-cli" bench -m "$f" --device cuda -p 0 -n 4 -r 1 > "$out/ncu-$name.csv" 2> "$out/ncu-$name.err"
  python3 - "$out/ncu-$name.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; k = head.index("Kernel Name"); v = head.index("Metric Value"); u = head.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    t = float(r[v].replace(",", "")) * {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}[r[u]]
    name = r[k].split("(")[0]
    tot[name] += t; cnt[name] += 1
steps = 8
print(f"{sys.argv[1]}: {sum(cnt.values())} kernels, {sum(tot.values())/steps:.1f} us of kernel time per token")
for name, t in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {name:40s} {cnt[name]/steps:6.1f}/token {t/steps:8.1f} us/token {t/cnt[name]:7.2f} us each")
PY
done
