#!/usr/bin/env bash
# Durable acknowledgement at 20,000 appends/s, warm and fresh logs alternated (issue 4's p99 <= 2 ms).
# Usage (from the repository root, after `cargo build --release -p tollbu-audit --example ack_latency`):
#   ROUNDS=6 bash bench/results/2026-12-06/ack-evening/runs.sh > OUT.txt
set -euo pipefail
bin=${BIN:-target/release/examples/ack_latency}
rounds=${ROUNDS:-6}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" 20000 10 "$work/warm" > /dev/null   # warm-up: the log rotates once and has a spare
for i in $(seq 1 "$rounds"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$i warm $load $("$bin" 20000 10 "$work/warm" | grep 'from the append call')"
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$i fresh $load $("$bin" 20000 10 "$work/fresh-$i" | grep 'from the append call')"
  rm -rf "$work/fresh-$i"
done
