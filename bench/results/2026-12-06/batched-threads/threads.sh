#!/usr/bin/env bash
# Where the batched append benchmark's threads spend a 5 s window: CPU (utime+stime from
# /proc/<pid>/task/*/stat) and, for the writer thread, what it sleeps in (/proc/<tid>/wchan and
# state sampled every 2 ms). Usage: RUNS=3 bash threads.sh [BENCH_BINARY]
# The binary is `cargo bench -p tollbu-audit --bench append --no-run`'s target/release/deps/append-*.
set -euo pipefail
BIN=${1:-$(ls -t "$(git rev-parse --show-toplevel)"/target/release/deps/append-* | grep -v '\.d$' | head -1)}
for run in $(seq 1 "${RUNS:-3}"); do
  out=$(mktemp)
  # criterion writes target/criterion/ under the working directory: keep it out of the repository.
  (cd "$(mktemp -d)" && exec "$BIN" --bench batches_of_1000 --warm-up-time 2 --measurement-time 12 --noplot >"$out" 2>&1) &
  sleep 6
  pid=$(pgrep -f "$(basename "$BIN") --bench batches_of_1000" | head -1)
  snap() { for t in /proc/"$pid"/task/*; do echo "$(cat "$t"/comm) $(awk '{print $14+$15}' "$t"/stat)"; done; }
  writer=$(grep -l "^tollbu-audit-wr$" /proc/"$pid"/task/*/comm | head -1 | cut -d/ -f5)
  before=$(snap)
  python3 - "$pid" "$writer" <<'PY'
import sys, time, collections
pid, tid = sys.argv[1], sys.argv[2]
seen = collections.Counter()
end = time.time() + 5
n = 0
while time.time() < end:
    try:
        state = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[0]
        wchan = open(f"/proc/{pid}/task/{tid}/wchan").read().strip() or "-"
    except OSError:
        break
    seen["running" if state == "R" else f"{state} {wchan}"] += 1
    n += 1
    time.sleep(0.002)
print(f"writer thread, {n} samples:", ", ".join(f"{k} {v / n:.0%}" for k, v in seen.most_common(6)))
PY
  after=$(snap)
  echo "run $run, load $(cut -d' ' -f1 /proc/loadavg), cores used over 5 s:"
  paste <(echo "$before") <(echo "$after") | awk '{c[$1]+=($4-$2)/100/5; t+=($4-$2)/100/5} END{for (k in c) printf "  %-18s %.2f\n", k, c[k]; printf "  %-18s %.2f\n", "all", t}'
  wait
  grep -m1 -A1 "time:" "$out" | sed 's/^/  /'
  rm -f "$out"
done
