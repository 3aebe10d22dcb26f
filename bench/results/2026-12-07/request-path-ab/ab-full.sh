#!/usr/bin/env bash
# A/B the full pipeline: gateway A (env A_ENV) vs B (env B_ENV), same binary or two binaries.
set -euo pipefail
REL=/work/main/target/release
BIN_A=${BIN_A:-$REL/tollbu}; BIN_B=${BIN_B:-$REL/tollbu}
ROOT=/work/main; BENCH=$ROOT/bench
OUT=/tmp/mem/abfull; rm -rf $OUT; mkdir -p $OUT/policies
ulimit -n "$(ulimit -Hn)"
ISSUER="http://127.0.0.1:18070/"
for side in a:18005:18095 b:18006:18096; do IFS=: read s p ap <<<"$side"
sed -e "s|@OUT@|$OUT|g" -e "s|$OUT/audit|$OUT/audit-$s|" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM_PORT@|18001|g" \
  -e "s|@TOLLBU_PORT@|$p|g" -e "s|@TOLLBU_ADMIN_PORT@|$ap|g" $BENCH/tollbu.toml.in > $OUT/tollbu-$s.toml
sed -i "s|$OUT/audit\"|$OUT/audit-$s\"|" $OUT/tollbu-$s.toml
done
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  $ROOT/policies/population.toml > $OUT/policies/population.toml
$REL/examples/bench_issuer 127.0.0.1:18070 > $OUT/issuer.log 2>&1 & I=$!
$REL/examples/bench_upstream 127.0.0.1:18001 > $OUT/up.log 2>&1 & U=$!
sleep 0.5
env ${A_ENV:-X=1} $BIN_A serve --config $OUT/tollbu-a.toml > $OUT/gw-a.log 2>&1 & A=$!
env ${B_ENV:-X=1} $BIN_B serve --config $OUT/tollbu-b.toml > $OUT/gw-b.log 2>&1 & B=$!
trap 'kill $I $U $A $B 2>/dev/null || true' EXIT
for port in 18005 18006; do for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done; done
TOKEN=$($REL/tollbu token --issuer "$ISSUER" --client-id demo-welfare --key $ROOT/certs-example/clients/demo-welfare.key.pem --kid demo-welfare-1 --scope demo:population)
PERSON=$($REL/examples/bench_upstream 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for c in ${CONNS:-50 1000}; do
for i in $(seq 1 ${ROUNDS:-3}); do
  for pair in "${NAME_A:-A} $A 18005" "${NAME_B:-B} $B 18006"; do
    set -- $pair
    t0=$(ticks $2)
    out=$(BENCH_TOKEN=$TOKEN BENCH_PURPOSE=benefit-assessment wrk -t2 -c$c -d${DUR:-8}s -s $BENCH/wrk.lua http://127.0.0.1:$3/population/persons/$PID0 | grep BENCH_JSON | sed 's/BENCH_JSON //')
    t1=$(ticks $2)
    python3 -c "
import json,sys; d=json.loads(sys.argv[1]); n=d['requests']; s=d['duration_us']/1e6
e=d['err_connect']+d['err_read']+d['err_write']+d['err_status']+d['err_timeout']
print(f'c{sys.argv[4]} {sys.argv[2]:8s} {n/s:9.0f} req/s  cpu {(int(sys.argv[3]))*10000/n:6.1f} us/req  p50 {d[\"p50_us\"]/1000:.2f} p99 {d[\"p99_us\"]/1000:.2f} ms  err {e}  hwm', open('/proc/$2/status').read().split('VmHWM:')[1].split()[0], flush=True)
" "$out" $1 $((t1-t0)) $c
  done
done
done
if [[ -n ${H2:-} ]]; then
for i in $(seq 1 ${ROUNDS:-3}); do
  for pair in "${NAME_A:-A} $A 18005" "${NAME_B:-B} $B 18006"; do
    set -- $pair
    t0=$(ticks $2)
    out=$(h2load -t${H2_THREADS:-2} -c${H2_CONNS:-50} -m${H2_STREAMS:-10} -D ${DUR:-8} -H "authorization: Bearer $TOKEN" -H "tollbu-purpose: benefit-assessment" http://127.0.0.1:$3/population/persons/$PID0 2>&1)
    t1=$(ticks $2)
    n=$(echo "$out" | awk '/^requests:/ {print $8}')
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    echo "h2c${H2_CONNS:-50}m${H2_STREAMS:-10} $1 $rps req/s succeeded $n cpu $(python3 -c "print(round($((t1-t0))*10000/max($n,1),1))") us/req  $(echo "$out" | awk '/time for request:/ {print "mean", $6, "min", $4}')"
  done
done
fi
for s in a b; do $REL/tollbu audit verify $OUT/audit-$s 2>&1 | tail -1; done
