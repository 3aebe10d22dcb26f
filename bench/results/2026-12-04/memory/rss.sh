#!/usr/bin/env bash
# One gateway (bench/tollbu.toml.in) under wrk -c50 for 2 s, then -c1000 for 8 s.
#   BIN=... rss.sh              peak RSS (VmHWM), an smaps breakdown at the largest sample, CPU per request
#   BIN=... HEAPTRACK=1 rss.sh  the same load under heaptrack (build BIN with the system allocator);
#                               peak heap by allocation site into $WORK/bysite-$TAG.txt
#   BIN=... PAGEMAP=1 rss.sh    then the binary's resident pages by section and its resident .text
#                               runs (bench/results/2026-12-05/link-order/pagemap.py; HOT_KIB=N lists
#                               the functions of runs beyond N KiB)
set -euo pipefail
WORK=${WORK:-/tmp/mem}; mkdir -p "$WORK"
SCRATCH=$WORK/run HEAPTRACK_OUT=${HEAPTRACK:+$WORK/run-ht-$$}
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../../one-gateway.sh"
echo "idle: $(grep -E 'VmRSS' /proc/$G/status | tr -s ' ')"
wrk -t2 -c50 -d2s -s $BENCH/wrk.lua $URL >/dev/null
if [[ -n ${HEAPTRACK:-} ]]; then
  wrk -t2 -c${CONNS:-1000} -d${DUR:-8}s -s $BENCH/wrk.lua $URL | grep -E "Requests/sec"
  kill -INT "$G" || true; wait "$HT" || true
  heaptrack_print -f "$(ls "$HEAPTRACK_OUT"*.zst | head -1)" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --flamegraph-cost-type peak -F $OUT/peak.folded > /dev/null
  python3 $ROOT/bench/results/2026-11-27/detach-answers/bysite.py $OUT/peak.folded > $WORK/bysite-${TAG:-now}.txt
  head -1 $WORK/bysite-${TAG:-now}.txt
  exit 0
fi
( best=0; for _ in $(seq 1 ${SAMPLES:-40}); do r=$(awk '/^Rss:/{print $2}' /proc/$G/smaps_rollup); if (( r > best )); then best=$r; cp /proc/$G/smaps $OUT/smaps.peak; cp /proc/$G/smaps_rollup $OUT/rollup.peak; fi; sleep 0.2; done ) &
S=$!
( sleep 4; echo "upstream conns: $(ss -tnH state established "( dport = :18001 )" | wc -l)  client conns: $(ss -tnH state established "( sport = :18005 )" | wc -l)" ) &
t0=$(awk '{print $14+$15}' /proc/$G/stat)
out=$(wrk -t2 -c${CONNS:-1000} -d${DUR:-8}s -s $BENCH/wrk.lua $URL | grep BENCH_JSON)
wait $S || true
t1=$(awk '{print $14+$15}' /proc/$G/stat)
echo "$out" | python3 -c "import json,sys; d=json.loads(sys.stdin.read().split(' ',1)[1]); print('req/s', round(d['requests']/d['duration_us']*1e6), 'p99 ms', d['p99_us']/1000, 'errs', d['err_status']+d['err_read']+d['err_timeout'], 'cpu us/req', round($((t1-t0))*10000/d['requests'],1))"
echo "final: $(grep -E 'VmHWM|VmRSS' /proc/$G/status | tr -s ' ' | tr '\n' ' ')"
grep -E '^(Rss|Anonymous|Pss_File|Pss_Anon)' $OUT/rollup.peak | tr -s ' ' | tr '\n' ' '; echo
python3 - $OUT/smaps.peak <<'PY'
import sys,re,collections
agg=collections.Counter(); name=None
for line in open(sys.argv[1]):
    if re.match(r'^[0-9a-f]+-[0-9a-f]+ ',line):
        parts=line.split(); name=parts[5] if len(parts)>5 else '[anon]'
        name=name.split('/')[-1]
    elif line.startswith('Rss:'):
        agg[name]+=int(line.split()[1])
for k,v in agg.most_common(12): print(f'  {v/1024:7.1f} MiB {k}')
PY
cp $OUT/smaps.peak $WORK/last-smaps.peak
if [[ -n ${PAGEMAP:-} ]]; then
  python3 $ROOT/bench/results/2026-12-05/link-order/pagemap.py $G $BIN ${HOT_KIB:-99999}
fi
