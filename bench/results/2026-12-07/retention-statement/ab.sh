#!/usr/bin/env bash
# Retention sweep beside 10,000 durable appends/s, before (a4d1ca2: unsigned `pruned` marker) and
# after the signed retention statement (the writer signs and writes `retention` before the marker),
# alternating runs of the same example built from each tree.
#   BASE=/tmp/base (git worktree at a4d1ca2), run from the repository root.
set -euo pipefail
BASE=${BASE:-/tmp/base}
OUT=${OUT:-bench/results/2026-12-07/retention-statement}
(cd "$BASE" && cargo build -q --release -p tollbu-audit --example retention_timing)
cargo build -q --release -p tollbu-audit --example retention_timing
before="$BASE/target/release/examples/retention_timing"
after="target/release/examples/retention_timing"
for round in 1 2 3; do
  for build in before after; do
    bin=before; [ "$build" = after ] && bin="$after" || bin="$before"
    echo "== round $round, $build, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" 16 10000
  done
done 2>&1 | tee "$OUT/ab.txt"
