#!/usr/bin/env bash
# `tollbu audit query --scan` before and after the scan's needle shortcut (records that lack the
# subject's pseudonym, consumer or service as stored are not decoded): the verify_timing example
# built from each tree, alternating, each run on a log of its own of N records.
#   BASE=/tmp/base (git worktree at the commit before), N (default 1000000), ROUNDS (default 3).
set -euo pipefail
BASE=${BASE:-/tmp/base}
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-bench/results/2026-12-07/scan-prefilter}
(cd "$BASE" && cargo build -q --release -p tollbu-audit --example verify_timing)
cargo build -q --release -p tollbu-audit --example verify_timing
for round in $(seq "$ROUNDS"); do
  for build in before after; do
    if [ "$build" = before ]; then bin="$BASE/target/release/examples/verify_timing"; else bin=target/release/examples/verify_timing; fi
    echo "== $N records, round $round, $build, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$N"
  done
done 2>&1 | tee "$OUT/ab-$N.txt"
