#!/bin/bash
cd /work/main
for rep in 1 2; do
  for variant in none writer workers; do
    case $variant in
      none) export NICE_WRITER= NICE_WORKERS= ;;
      writer) export NICE_WRITER=-10 NICE_WORKERS= ;;
      workers) export NICE_WRITER= NICE_WORKERS=5 ;;
    esac
    out=/tmp/prio/out/$variant-$rep
    SKIP_INSTALL=1 SKIP_BUILD=1 TARGETS="upstream tollbu" SCENARIOS=rate TOLLBU_BIN=/tmp/prio/wrap.sh OUT=$out bench/run.sh > /tmp/prio/$variant-$rep.log 2>&1
    cp /tmp/prio/last-threads.txt $out/threads.txt
    echo "$variant $rep done $(date -u +%T)"
  done
done
