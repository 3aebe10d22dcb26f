#!/usr/bin/env bash
set -euo pipefail
REL=/work/main/target/release
ulimit -n "$(ulimit -Hn)"
$REL/examples/bench_upstream 127.0.0.1:18001 >/dev/null 2>&1 & U=$!
/tmp/mem/base/bench_plain_proxy 127.0.0.1:18004 http://127.0.0.1:18001 >/dev/null 2>&1 & A=$!
/tmp/mem/new/bench_plain_proxy 127.0.0.1:18014 http://127.0.0.1:18001 >/dev/null 2>&1 & B=$!
trap 'kill $U $A $B 2>/dev/null' EXIT
sleep 1
PERSON=$($REL/examples/bench_upstream 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for c in ${CONNS:-50 1000}; do
for i in $(seq 1 ${ROUNDS:-3}); do
  for pair in "base $A 18004" "workers $B 18014"; do
    set -- $pair
    t0=$(ticks $2)
    out=$(wrk -t2 -c$c -d${DUR:-8}s -s /work/main/bench/wrk.lua http://127.0.0.1:$3/population/persons/$PID0 | grep BENCH_JSON | sed 's/BENCH_JSON //')
    t1=$(ticks $2)
    python3 -c "
import json,sys; d=json.loads(sys.argv[1]); n=d['requests']; s=d['duration_us']/1e6
print(f'c{sys.argv[4]} {sys.argv[2]:6s} {n/s:9.0f} req/s  cpu {(int(sys.argv[3]))*10000/n:6.1f} us/req  p50 {d[\"p50_us\"]/1000:.2f} p99 {d[\"p99_us\"]/1000:.2f} ms  rss', open('/proc/$2/status').read().split('VmHWM:')[1].split()[0])
" "$out" $1 $((t1-t0)) $c
  done
done
done
