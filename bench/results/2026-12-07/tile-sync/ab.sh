#!/usr/bin/env bash
# The batched append benchmark (4 producers, batches of 1,000, durable) from two builds,
# alternating, with each thread's CPU over 5 s of every run (utime+stime from /proc/<pid>/task).
# Usage: ROUNDS=5 bash ab.sh BEFORE_BIN AFTER_BIN, the binaries being
# `cargo bench -p tollbu-audit --bench append --no-run`'s target/release/deps/append-* of each tree.
set -euo pipefail
for round in $(seq 1 "${ROUNDS:-5}"); do
  for build in before after; do
    if [ "$build" = before ]; then BIN=$1; else BIN=$2; fi
    out=$(mktemp)
    # criterion writes target/criterion/ under the working directory: keep it out of the repository.
    (cd "$(mktemp -d)" && exec "$BIN" --bench batches_of_1000 --warm-up-time 2 --measurement-time 12 --noplot >"$out" 2>&1) &
    sleep 6
    pid=$(pgrep -f "$(basename "$BIN") --bench batches_of_1000" | head -1)
    snap() { for t in /proc/"$pid"/task/*; do echo "$(cat "$t"/comm) $(awk '{print $14+$15}' "$t"/stat)"; done; }
    before=$(snap); sleep 5; after=$(snap)
    echo "== round $round, $build, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg); cores used over 5 s:"
    paste <(echo "$before") <(echo "$after") | awk '{c[$1]+=($4-$2)/100/5; t+=($4-$2)/100/5} END{for (k in c) if (c[k] > 0.005) printf "  %-18s %.2f\n", k, c[k]; printf "  %-18s %.2f\n", "all", t}' | sort
    wait
    grep -m1 "thrpt:" "$out" | sed 's/^ */  /'
    rm -f "$out"
  done
done
