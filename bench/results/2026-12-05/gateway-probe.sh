#!/usr/bin/env bash
# One gateway (bench/tollbu.toml.in) under wrk, two probes (2026-12-05):
#   MODE=rounds: c50 2 s, then ROUNDS x (c1000 DUR s, c50 DUR s); VmHWM and RSS anon/file after each c1000
#   MODE=syscalls: wrk -c${C:-50} for 4 s with strace -c -f attached; system calls per request
set -euo pipefail
SCRATCH=/tmp/mem/rounds
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../one-gateway.sh"
if [[ ${MODE:-rounds} == rounds ]]; then
  wrk -t2 -c50 -d2s -s $BENCH/wrk.lua $URL >/dev/null
  for r in $(seq 1 ${ROUNDS:-5}); do
    wrk -t2 -c1000 -d${DUR:-8}s -s $BENCH/wrk.lua $URL > /dev/null
    echo "after c1000 round $r: $(grep -E 'VmHWM|VmRSS|RssAnon|RssFile' /proc/$G/status | tr -s ' \t' ' ' | tr '\n' ' ')"
    wrk -t2 -c50 -d${DUR:-8}s -s $BENCH/wrk.lua $URL > /dev/null
  done
else
  wrk -t2 -c${C:-50} -d2s -s $BENCH/wrk.lua $URL >/dev/null
  strace -c -f -p $G -o $OUT/strace.txt & S=$!
  sleep 0.5
  n=$(wrk -t2 -c${C:-50} -d4s -s $BENCH/wrk.lua $URL | grep BENCH_JSON | python3 -c "import json,sys; print(json.loads(sys.stdin.read().split(' ',1)[1])['requests'])")
  sleep 0.3; kill -INT $S; wait $S || true
  echo "requests: $n"
  python3 - $OUT/strace.txt $n <<'PY'
  import sys
  n=int(sys.argv[2])
  for line in open(sys.argv[1]):
      p=line.split()
      if len(p)>=5 and p[0][0].isdigit():
          calls=int(p[3]); errs=int(p[4]) if len(p)==6 else 0
          name=p[-1]
          print(f'{name:20s} calls/req {calls/n:6.3f}  errors/req {errs/n:6.3f}')
PY
fi
