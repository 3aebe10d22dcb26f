#!/usr/bin/env bash
# Disk bytes per audit record as the gateway writes them: one gateway (bench/one-gateway.sh, the
# bench's full pipeline and person record) under wrk -c50 for DUR seconds, stopped cleanly, then
# the audit directory measured part by part (apparent bytes and allocated blocks) and divided by
# the records in it. The spare segment and the active segment's set-aside blocks are a fixed
# 64 MiB each, not a per-record cost; they are shown apart.
set -euo pipefail
# shellcheck source=bench/one-gateway.sh
source "$(dirname "$0")/../../../one-gateway.sh"
wrk -t2 -c50 -d"${DUR:-20}"s -s "$BENCH/wrk.lua" "$URL" | grep -E "Requests/sec|requests in"
kill -TERM "$G"
while kill -0 "$G" 2>/dev/null; do sleep 0.2; done
A=$OUT/audit
"$REL/tollbu" audit verify "$A" | tail -2
records=$(python3 - "$A/checkpoint" <<'PY'
import sys
print(open(sys.argv[1]).read().splitlines()[1])
PY
)
echo "records: $records"
python3 - "$A" "$records" <<'PY'
import os, sys
root, records = sys.argv[1], int(sys.argv[2])
parts = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        p = os.path.join(dirpath, f)
        rel = os.path.relpath(p, root)
        st = os.stat(p)
        if rel.startswith("segments/") and rel.endswith(".seg"):
            # Written over a spare of zeros, a segment's file is longer than its records: count
            # the frames (u32 length, u32 checksum, payload) up to the first zero header.
            used = 0
            with open(p, "rb") as seg:
                while True:
                    head = seg.read(8)
                    n = int.from_bytes(head[:4], "little") if len(head) == 8 else 0
                    if n == 0:
                        break
                    seg.seek(n, 1)
                    used += 8 + n
            key = "segments (records)"
            a, b = parts.get(key, (0, 0))
            parts[key] = (a + used, b + st.st_blocks * 512)
            a, b = parts.get("segments (file sizes)", (0, 0))
            parts["segments (file sizes)"] = (a + st.st_size, b)
            continue
        elif rel.startswith("segments/spare"):
            key = "spare segment (fixed)"
        else:
            key = rel.split("/")[0] if "/" in rel else rel
        a, b = parts.get(key, (0, 0))
        parts[key] = (a + st.st_size, b + st.st_blocks * 512)
print(f"{'part':24} {'bytes':>12} {'allocated':>12} {'bytes/record':>13}")
total = 0
for k, (a, b) in sorted(parts.items()):
    per = a / records
    if "fixed" not in k and "file sizes" not in k:
        total += a
    print(f"{k:24} {a:12,} {b:12,} {per:13.1f}")
print(f"{'per record (records, index, tiles, checkpoints)':24} {'':12} {'':12} {total / records:13.1f}")
PY
