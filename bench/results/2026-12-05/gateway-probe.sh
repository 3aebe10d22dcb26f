#!/usr/bin/env bash
# One gateway (bench/tollbu.toml.in) under wrk, two probes (2026-12-05):
#   MODE=rounds: c50 2 s, then ROUNDS x (c1000 DUR s, c50 DUR s); VmHWM and RSS anon/file after each c1000
#   MODE=syscalls: wrk -c${C:-50} for 4 s with strace -c -f attached; system calls per request
set -euo pipefail
REL=/work/main/target/release; BIN=${BIN:-$REL/tollbu}
ROOT=/work/main; BENCH=$ROOT/bench
OUT=/tmp/mem/rounds-$$; rm -rf $OUT; mkdir -p $OUT/policies
ulimit -n "$(ulimit -Hn)"
ISSUER="http://127.0.0.1:18070/"
sed -e "s|@OUT@|$OUT|g" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM_PORT@|18001|g" \
  -e "s|@TOLLBU_PORT@|18005|g" -e "s|@TOLLBU_ADMIN_PORT@|18095|g" $BENCH/tollbu.toml.in > $OUT/tollbu.toml
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  $ROOT/policies/population.toml > $OUT/policies/population.toml
$REL/examples/bench_issuer 127.0.0.1:18070 > $OUT/issuer.log 2>&1 & I=$!
$REL/examples/bench_upstream 127.0.0.1:18001 > $OUT/up.log 2>&1 & U=$!
sleep 0.5
env ${GW_ENV:-X=1} $BIN serve --config $OUT/tollbu.toml > $OUT/gw.log 2>&1 & G=$!
trap 'kill $I $U $G 2>/dev/null || true; sleep 0.5; rm -rf $OUT' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18005) 2>/dev/null && break; sleep 0.2; done
TOKEN=$($REL/tollbu token --issuer "$ISSUER" --client-id demo-welfare --key $ROOT/certs-example/clients/demo-welfare.key.pem --scope demo:population)
PERSON=$($REL/examples/bench_upstream 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
export BENCH_TOKEN=$TOKEN BENCH_PURPOSE=benefit-assessment
URL=http://127.0.0.1:18005/population/persons/$PID0
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
