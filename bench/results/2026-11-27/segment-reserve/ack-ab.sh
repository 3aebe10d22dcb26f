#!/usr/bin/env bash
# Alternates two builds of crates/audit/examples/ack_latency (20,000 appends/s, 10 s each,
# log in a fresh temp dir under /tmp), swapping which runs first in every other pair.
set -euo pipefail
A=${A:-/tmp/diag/ack-base}; B=${B:-/tmp/diag/ack-prealloc}
for i in $(seq 1 ${PAIRS:-8}); do
  if (( i % 2 )); then order="$A $B"; else order="$B $A"; fi
  for bin in $order; do
    echo "pair $i $(basename $bin) $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    $bin 20000 10 2>&1 | grep -E "^ack latency|appends in"
  done
done
