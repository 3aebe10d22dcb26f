#!/usr/bin/env bash
# One gateway (bench/one-gateway.sh): c50 for DUR s, then ROUNDS x (c1000 for DUR s, GAP s idle);
# after each: VmRSS, VmHWM and anonymous RSS (KiB), established registry connections, and for the
# c1000 rounds req/s and CPU per request.
#   HEAPTRACK=1 TAG=x BIN=<a build with the system allocator> rounds.sh: the gateway under heaptrack,
#   SIGKILLed at the last idle point, so heaptrack's "leaked" is the heap live then ($WORK/ht-$TAG.*).
set -euo pipefail
WORK=${WORK:-/tmp/rss-rounds}; mkdir -p "$WORK"
SCRATCH=$WORK/run HEAPTRACK_OUT=$WORK/ht-${TAG:-now}
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../../one-gateway.sh"
st() {
  echo "$1: rss $(awk '/VmRSS/{print $2}' /proc/$G/status) hwm $(awk '/VmHWM/{print $2}' /proc/$G/status)" \
    "anon $(awk '/^Anonymous/{print $2}' /proc/$G/smaps_rollup)" \
    "upconns $(ss -tnH state established "( dport = :18001 )" | wc -l)"
}
st idle
wrk -t2 -c50 -d"${DUR:-10}"s -s "$BENCH/wrk.lua" "$URL" >/dev/null
st after-c50; sleep "${GAP:-30}"; st idle
for r in $(seq 1 "${ROUNDS:-4}"); do
  t0=$(awk '{print $14+$15}' /proc/$G/stat)
  out=$(wrk -t2 -c1000 -d"${DUR:-10}"s -s "$BENCH/wrk.lua" "$URL" | grep BENCH_JSON)
  t1=$(awk '{print $14+$15}' /proc/$G/stat)
  echo "$out" | python3 -c "import json,sys; d=json.loads(sys.stdin.read().split(' ',1)[1]); print('round $r req/s', round(d['requests']/d['duration_us']*1e6), 'cpu us/req', round($((t1-t0))*10000/d['requests'],1))"
  st "after-c1000-$r"; sleep "${GAP:-30}"; st idle
done
if [[ -n $HT ]]; then kill -9 "$G"; wait "$HT" || true; fi
