#!/bin/bash
# A/B: keep = f5429ae (blocks set aside), zero = spare segments of zeros. Default 64 MiB segments.
unset ZERO_FILL SEG_MAX SPARE_LOOP
DUR=${DUR:-30}
for i in $(seq 1 ${PAIRS:-6}); do
  for v in $( [ $((i%2)) = 1 ] && echo "keep zero" || echo "zero keep"); do
    out=$(/tmp/ack_$v 20000 $DUR 2>&1 | grep -E "from the append call|durable appends" | tr '\n' ' ')
    echo "$i $v load=$(cut -d' ' -f1 /proc/loadavg) $out"
  done
done
