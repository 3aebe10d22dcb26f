#!/usr/bin/env bash
# Allocator trial: trial.sh NAME PRELOAD [BINARY] prints c50 and c1000 figures for the
# Tollbu full pipeline. Needs, already running: target/release/examples/bench_issuer on
# 127.0.0.1:18070 and bench_upstream on 127.0.0.1:18001, PID0 exported (the person id
# `bench_upstream 127.0.0.1:0 --print-body` prints), and bench/out/diag-mem/ as
# bench/run.sh leaves it (OUT=$PWD/bench/out/diag-mem).
set -u
cd "$(dirname "$0")/../../.."
D=bench/out/diag-mem R=target/release; BIN=${3:-$R/tollbu}
ulimit -n 20000
rm -rf $D/audit
env ${2:+LD_PRELOAD=$2} $BIN serve --config $D/tollbu.toml > "${TMPDIR:-/tmp}/trial.out" 2>&1 &
P=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18095/healthz && break; sleep 0.1; done
TOKEN=$($R/tollbu token --issuer http://127.0.0.1:18070/ --client-id demo-welfare --key certs-example/clients/demo-welfare.key.pem --scope demo:population)
URL=http://127.0.0.1:18005/population/persons/$PID0
cpu() { awk '{print $14+$15}' /proc/$P/stat; }
export BENCH_TOKEN=$TOKEN BENCH_PURPOSE=benefit-assessment
wrk -t2 -c50 -d2s -s bench/wrk.lua $URL >/dev/null
for c in 50 1000; do
  c0=$(cpu); out=$(wrk -t2 -c$c -d8s -s bench/wrk.lua $URL); c1=$(cpu)
  n=$(echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  echo "$1 c$c rps=$rps cpu_us_per_req=$(python3 -c "print(round(($c1-$c0)/100/$n*1e6,1))") hwm=$(awk '/VmHWM/{print $2/1024}' /proc/$P/status) rss=$(awk '/VmRSS/{print $2/1024}' /proc/$P/status)"
done
kill -TERM $P; wait $P 2>/dev/null
