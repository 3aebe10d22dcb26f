#!/usr/bin/env bash
# trace.sh BIN SCEN: one gateway-only run, the exchange limits and registry connections every 0.1 s.
bin=$1; out=/tmp/ab/out/trace-$(date +%H%M%S); mkdir -p $out
( while sleep 0.1; do
    l=$(curl -s --max-time 0.5 http://127.0.0.1:18095/metrics 2>/dev/null | grep '^tollbu_upstream_exchange_limit' | awk '{print $2}' | tr '\n' ' ')
    [[ -n $l ]] && echo "$(date +%S.%N | cut -c1-5) $l $(ss -tnH state established '( dport = :18001 )' | wc -l)" >> $out/trace
  done ) & s=$!
cd /work/main && SKIP_INSTALL=1 SKIP_BUILD=1 TARGETS=tollbu SCENARIOS="$2" ROUNDS=1 TOLLBU_BIN=$bin OUT=$out bench/run.sh > $out/run.log 2>&1
kill $s; grep "round 1:" $out/run.log | sed 's/^.*\] //'; echo $out
