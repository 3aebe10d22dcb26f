#!/usr/bin/env bash
# One gateway (bench/one-gateway.sh, the bench config): wrk c50 for 2 s to warm up, then wrk with
# C connections (default 50) for DUR s (default 10). Prints, per thread name, the context switches
# (voluntary, involuntary) and the user and system CPU per request, from /proc/<pid>/task/*/
# before and after the measured run.
#   RATE=10000 threads.sh: the measured run is HTTP/1.1 at that many requests a second instead, as
#   bench/run.sh's `rate` scenario sends them (fixed_rate in bench/one-gateway.sh).
#   STRACE=1 threads.sh: also counts the system calls of the audit writer, the audit notary and
#   request worker 0 for 4 s each during a second run (strace slows them, so only the counts and
#   their ratios mean anything), into $WORK/strace-{writer,notary,worker0}.txt.
set -euo pipefail
WORK=${WORK:-/tmp/cpu-by-thread}; mkdir -p "$WORK"
SCRATCH=$WORK/run
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../../one-gateway.sh"
snap() {
  for t in /proc/"$G"/task/*; do
    echo "$(cat "$t/comm") $(awk '/^voluntary/{v=$2} /^nonvoluntary/{n=$2} END{print v, n}' "$t/status")" \
      "$(awk '{print $14, $15}' "$t/stat")"
  done | awk '{v[$1]+=$2; n[$1]+=$3; u[$1]+=$4; s[$1]+=$5} END{for (k in v) print k, v[k], n[k], u[k], s[k]}' | sort
}
thread_id() {
  for t in /proc/"$G"/task/*; do [[ $(cat "$t/comm") == "$1" ]] && basename "$t"; done || true
}
C=${C:-50}
wrk -t2 -c50 -d2s -s "$BENCH/wrk.lua" "$URL" >/dev/null
snap >"$WORK/before"
if [[ -n ${RATE:-} ]]; then
  out=$(fixed_rate "$RATE" "${DUR:-10}")
  snap >"$WORK/after"
  reqs=$(echo "$out" | awk '/^requests:/ {print $8}')
  label="$RATE req/s"
else
  out=$(wrk -t2 -c"$C" -d"${DUR:-10}"s -s "$BENCH/wrk.lua" "$URL" | grep BENCH_JSON)
  snap >"$WORK/after"
  reqs=$(echo "$out" | python3 -c "import json,sys; print(json.loads(sys.stdin.read().split(' ',1)[1])['requests'])")
  label="c$C"
fi
echo "$label: $reqs requests in ${DUR:-10} s, load $(cut -d' ' -f1 /proc/loadavg)"
# CPU times in /proc are clock ticks: us_per_tick turns them into microseconds.
join "$WORK/before" "$WORK/after" | awk -v r="$reqs" -v us_per_tick="$((1000000 / $(getconf CLK_TCK)))" '{
  printf "  %-16s switches/req vol %.3f invol %.3f   CPU us/req user %5.2f sys %5.2f\n",
    $1, ($6-$2)/r, ($7-$3)/r, ($8-$4)*us_per_tick/r, ($9-$5)*us_per_tick/r
  tu += $8-$4; ts += $9-$5 }
  END { printf "  %-16s CPU us/req user %5.2f sys %5.2f total %5.2f\n", "all", tu*us_per_tick/r, ts*us_per_tick/r, (tu+ts)*us_per_tick/r }'
if [[ -n ${STRACE:-} ]]; then
  wrk -t2 -c"$C" -d14s -s "$BENCH/wrk.lua" "$URL" >/dev/null &
  W=$!
  sleep 1
  timeout 4 strace -c -p "$(thread_id tollbu-audit-wr)" -o "$WORK/strace-writer.txt" || true
  timeout 4 strace -c -p "$(thread_id tollbu-audit-no)" -o "$WORK/strace-notary.txt" || true
  timeout 4 strace -c -p "$(thread_id tollbu-worker-0)" -o "$WORK/strace-worker0.txt" || true
  wait "$W"
fi
