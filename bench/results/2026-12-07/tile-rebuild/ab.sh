#!/usr/bin/env bash
# Opening a 10M-record log whose `tile` directory was removed (`open_timing DIR`, DIR kept by
# `verify_timing 10000000 DIR`), two builds alternating. Usage: ROUNDS=3 bash ab.sh DIR A_BIN B_BIN
set -euo pipefail
DIR=$1; A=$2; B=$3
for round in $(seq 1 "${ROUNDS:-3}"); do
  for bin in "$A" "$B"; do
    rm -rf "$DIR/log/tile"
    echo "== round $round, $(basename "$bin"), $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "  %e s wall, %U s user, %S s system, max RSS %M KiB" "$bin" "$DIR" 2>&1
  done
done
