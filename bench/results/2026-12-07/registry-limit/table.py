#!/usr/bin/env python3
"""table.py FILE...: the measure.sh runs as pairs (each run of one build beside the other's run of the same number)."""
import re, sys, statistics
rows = []
for path in sys.argv[1:]:
    cur = None
    for line in open(path):
        m = re.match(r"== (\S+) run (\d+) \((\S+), load ([\d.]+)", line)
        if m:
            cur = {"build": m[1], "run": int(m[2]), "file": path, "at": m[3]}
            rows.append(cur)
            continue
        m = re.match(r"(c50|c1000) tollbu round 1: (\d+) req/s p50 ([\d.]+) ms p99 ([\d.]+) ms p99.9 [\d.]+ ms cpu ([\d.]+) s/10k hwm ([\d.]+) MiB", line)
        if m and cur is not None:
            cur[m[1]] = dict(rps=int(m[2]), p50=float(m[3]), p99=float(m[4]), cpu=float(m[5]), hwm=float(m[6]))
        m = re.search(r"registry connections: (\d+) (\d+) (\d+)", line)
        if m and cur is not None:
            cur["conns"] = int(m[3])
print("file | run | build | c50 req/s | c50 CPU s/10k | c1000 req/s | c1000 CPU s/10k | c1000 p50/p99 ms | peak RSS MiB | registry connections")
for r in rows:
    a, b = r.get("c50", {}), r.get("c1000", {})
    print(f"{r['file']} | {r['run']} | {r['build']} | {a.get('rps')} | {a.get('cpu')} | {b.get('rps')} | {b.get('cpu')} | {b.get('p50')}/{b.get('p99')} | {b.get('hwm')} | {r.get('conns')}")
for path in sys.argv[1:]:
    runs = [r for r in rows if r["file"] == path]
    builds = sorted({r["build"] for r in runs})
    if len(builds) != 2: continue
    new = [b for b in builds if b != "tollbu-base"][0]
    for n in sorted({r["run"] for r in runs}):
        pair = {r["build"]: r for r in runs if r["run"] == n}
        if len(pair) != 2: continue
        x, y = pair[new], pair["tollbu-base"]
        print(f"{path} pair {n} {new}/base: c50 req/s {x['c50']['rps']/y['c50']['rps']:.2f} cpu {x['c50']['cpu']/y['c50']['cpu']:.2f}; c1000 req/s {x['c1000']['rps']/y['c1000']['rps']:.2f} cpu {x['c1000']['cpu']/y['c1000']['cpu']:.2f} p99 {x['c1000']['p99']/y['c1000']['p99']:.2f} rss {x['c1000']['hwm']:.1f}/{y['c1000']['hwm']:.1f}")
