#!/usr/bin/env bash
# measure.sh N BIN... : for each binary, N tollbu-only c1000 runs of bench/run.sh; prints the peak
# (VmHWM) and the largest RssAnon / RssFile sampled every 0.1 s.
set -uo pipefail
n=$1; shift
for i in $(seq 1 "$n"); do
  for bin in "$@"; do
    out=/tmp/bis/out/$(basename "$bin")-$i-$(date +%H%M%S)
    mkdir -p "$out"
    ( maxa=0; maxf=0
      while sleep 0.1; do
        pid=$(pgrep -f "serve --config $out/tollbu.toml" | head -1)
        [[ -z $pid ]] && { [[ -f $out/started ]] && break; continue; }
        touch "$out/started"
        a=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null); f=$(awk '/RssFile/{print $2}' /proc/$pid/status 2>/dev/null)
        [[ -n $a && $a -gt $maxa ]] && maxa=$a; [[ -n $f && $f -gt $maxf ]] && maxf=$f
        echo "$maxa $maxf" > "$out/rss"
      done ) &
    sampler=$!
    (cd /work/main && SKIP_INSTALL=1 SKIP_BUILD=1 TARGETS=tollbu SCENARIOS="${SCEN:-c1000}" TOLLBU_BIN=$bin OUT=$out bench/run.sh > "$out/run.log" 2>&1)
    sleep 1; kill $sampler 2>/dev/null
    hwm=$(grep -h "c1000 tollbu VmHWM" -r "$out" 2>/dev/null | tail -1)
    echo "$(basename "$bin") run $i: $hwm maxRssAnon/File KiB: $(cat "$out/rss" 2>/dev/null)"
  done
done
