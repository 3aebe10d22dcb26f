#!/usr/bin/env bash
# A query for one day's records (no index on time: a scan) before and after the scan reads only the
# segments that can hold the window: the verify_timing example (this tree's version, copied into
# the worktree of the commit before so that both time the same queries), alternating.
#   BASE=/tmp/base (git worktree at the commit before), N, ROUNDS.
set -euo pipefail
BASE=${BASE:-/tmp/base}
N=${N:-1000000}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench/results/2026-12-07/time-window}
cp crates/audit/examples/verify_timing.rs "$BASE/crates/audit/examples/verify_timing.rs"
(cd "$BASE" && cargo build -q --release -p tollbu-audit --example verify_timing)
cargo build -q --release -p tollbu-audit --example verify_timing
for round in $(seq "$ROUNDS"); do
  for build in before after; do
    if [ "$build" = before ]; then bin="$BASE/target/release/examples/verify_timing"; else bin=target/release/examples/verify_timing; fi
    echo "== $N records, round $round, $build, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$N"
  done
done 2>&1 | tee "$OUT/ab-$N.txt"
