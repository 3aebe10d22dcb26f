#!/usr/bin/env bash
# measure.sh N BIN... : for each binary in turn, N times: one gateway-only bench/run.sh
# (SCEN, default "c50 c1000"); a sampler reads every 0.1 s the gateway's RssAnon/RssFile, its
# TCP connections to the registry (port 18001) and the exchange limits on /metrics.
# Prints the run's summary lines, the sampler's maxima and the limits seen last.
set -uo pipefail
n=$1; shift
root=${ROOT:-/work/main}
base=${OUTBASE:-/tmp/ab/out}
for i in $(seq 1 "$n"); do
  for bin in "$@"; do
    out=$base/$(basename "$bin")-$i-$(date +%H%M%S)
    mkdir -p "$out"
    ( maxa=0; maxf=0; maxup=0
      while sleep 0.1; do
        pid=$(pgrep -f "serve --config $out/tollbu.toml" | head -1)
        [[ -z $pid ]] && { [[ -f $out/started ]] && break; continue; }
        touch "$out/started"
        a=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null); f=$(awk '/RssFile/{print $2}' /proc/$pid/status 2>/dev/null)
        up=$(ss -tnH state established "( dport = :18001 )" 2>/dev/null | wc -l)
        [[ -n $a && $a -gt $maxa ]] && maxa=$a; [[ -n $f && $f -gt $maxf ]] && maxf=$f
        [[ $up -gt $maxup ]] && maxup=$up
        echo "$maxa $maxf $maxup" > "$out/rss"
        curl -s --max-time 0.5 http://127.0.0.1:18095/metrics 2>/dev/null | grep '^tollbu_upstream_exchange_limit' | tr '\n' ' ' > "$out/limits.tmp" && [[ -s $out/limits.tmp ]] && mv "$out/limits.tmp" "$out/limits"
      done ) &
    sampler=$!
    (cd "$root" && SKIP_INSTALL=1 SKIP_BUILD=1 TARGETS=tollbu SCENARIOS="${SCEN:-c50 c1000}" TOLLBU_BIN=$bin OUT=$out bench/run.sh > "$out/run.log" 2>&1)
    sleep 1; kill $sampler 2>/dev/null
    echo "== $(basename "$bin") run $i ($(date +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
    grep -E "round 1:" "$out/run.log" | sed 's/^.*\] //'
    echo "   max RssAnon/RssFile KiB, registry connections: $(cat "$out/rss" 2>/dev/null); limits: $(cat "$out/limits" 2>/dev/null)"
  done
done
