#!/usr/bin/env bash
# One gateway, c50 10 s, then ROUNDS x (c1000 DUR s, GAP s idle): VmRSS idle / VmHWM after each.
set -euo pipefail
WORK=${WORK:-/tmp/rss-rounds}; mkdir -p "$WORK"
REL=/work/main/target/release
BIN=${BIN:-$REL/tollbu}
ROOT=/work/main; BENCH=$ROOT/bench
OUT=$WORK/run-$$; rm -rf $OUT; mkdir -p $OUT/policies
ulimit -n "$(ulimit -Hn)"
ISSUER="http://127.0.0.1:18070/"
sed -e "s|@OUT@|$OUT|g" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM_PORT@|18001|g" \
  -e "s|@TOLLBU_PORT@|18005|g" -e "s|@TOLLBU_ADMIN_PORT@|18095|g" $BENCH/tollbu.toml.in > $OUT/tollbu.toml
if [[ -n ${EXTRA_TOML:-} ]]; then printf '%b\n' "$EXTRA_TOML" >> $OUT/tollbu.toml; fi
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  $ROOT/policies/population.toml > $OUT/policies/population.toml
$REL/examples/bench_issuer 127.0.0.1:18070 > $OUT/issuer.log 2>&1 & I=$!
$REL/examples/bench_upstream 127.0.0.1:18001 > $OUT/up.log 2>&1 & U=$!
sleep 0.5
if [[ -n ${HEAPTRACK:-} ]]; then
  heaptrack -o $WORK/ht-$TAG $BIN serve --config $OUT/tollbu.toml > $OUT/gw.log 2>&1 & H=$!
  sleep 2; G=$(pgrep -f "^$BIN serve" | head -1)
else
  env ${GW_ENV:-X=1} $BIN serve --config $OUT/tollbu.toml > $OUT/gw.log 2>&1 & G=$!
fi
trap 'kill $I $U $G 2>/dev/null || true; rm -rf $OUT' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18005) 2>/dev/null && break; sleep 0.2; done
TOKEN=$($REL/tollbu token --issuer "$ISSUER" --client-id demo-welfare --key $ROOT/certs-example/clients/demo-welfare.key.pem --scope demo:population)
PERSON=$($REL/examples/bench_upstream 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
st() { echo "$1: rss $(awk '/VmRSS/{print $2}' /proc/$G/status) hwm $(awk '/VmHWM/{print $2}' /proc/$G/status) anon $(awk '/^Anonymous/{print $2}' /proc/$G/smaps_rollup) upconns $(ss -tnH state established "( dport = :18001 )" | wc -l)"; }
st idle
export BENCH_TOKEN=$TOKEN BENCH_PURPOSE=benefit-assessment
wrk -t2 -c50 -d${DUR:-10}s -s $BENCH/wrk.lua http://127.0.0.1:18005/population/persons/$PID0 >/dev/null
st after-c50; sleep ${GAP:-30}; st idle
for r in $(seq 1 ${ROUNDS:-4}); do
  t0=$(awk '{print $14+$15}' /proc/$G/stat)
  out=$(wrk -t2 -c1000 -d${DUR:-10}s -s $BENCH/wrk.lua http://127.0.0.1:18005/population/persons/$PID0 | grep BENCH_JSON)
  t1=$(awk '{print $14+$15}' /proc/$G/stat)
  echo "$out" | python3 -c "import json,sys; d=json.loads(sys.stdin.read().split(' ',1)[1]); print('round $r req/s', round(d['requests']/d['duration_us']*1e6), 'cpu us/req', round($((t1-t0))*10000/d['requests'],1))"
  st after-c1000-$r; sleep ${GAP:-30}; st idle
done
if [[ -n ${HEAPTRACK:-} ]]; then kill -9 $G; wait $H || true; fi
