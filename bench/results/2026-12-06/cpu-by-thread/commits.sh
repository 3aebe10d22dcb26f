#!/usr/bin/env bash
# One gateway (bench/one-gateway.sh): how many audit records one commit (one segment fdatasync)
# carries, from the gateway's /metrics (tollbu_audit_records, tollbu_audit_fsync_seconds_count),
# under wrk c50 for 10 s and at a fixed 10,000 and 20,000 requests/s for 10 s each (fixed_rate in
# bench/one-gateway.sh).
set -euo pipefail
SCRATCH=${WORK:-/tmp/commits}/run
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../../one-gateway.sh"
counts() {
  curl -s http://127.0.0.1:18095/metrics |
    awk '/^tollbu_audit_fsync_seconds_count/ {f=$2} /^tollbu_audit_records / {r=$2} END {print f, r}'
}
wrk -t2 -c50 -d2s -s "$BENCH/wrk.lua" "$URL" >/dev/null
for load in c50 10000 20000; do
  read -r f0 r0 < <(counts)
  if [[ $load == c50 ]]; then
    wrk -t2 -c50 -d10s -s "$BENCH/wrk.lua" "$URL" >/dev/null
  else
    fixed_rate "$load" 10 >/dev/null
  fi
  read -r f1 r1 < <(counts)
  echo "$load: $((r1 - r0)) records, $((f1 - f0)) commits," \
    "$(python3 -c "print(round(($r1 - $r0) / max(1, $f1 - $f0), 2))") records per commit"
done
