import json, glob, statistics, collections
rows = collections.defaultdict(list)
for f in sorted(glob.glob('/tmp/prio/out/*/results.jsonl')):
    variant = f.split('/')[-2]
    recs = [json.loads(l) for l in open(f)]
    by = collections.defaultdict(dict)
    for r in recs:
        by[r['round']][r['target']] = r
    for rnd, t in sorted(by.items()):
        if 'tollbu' in t and 'upstream' in t:
            rows[variant].append((t['tollbu']['p50_ms'] - t['upstream']['p50_ms'], t['tollbu']['p99_ms'] - t['upstream']['p99_ms'], t['tollbu']['p999_ms'] - t['upstream']['p999_ms'], t['tollbu']['cpu_s_per_10k'], t['tollbu']['load1']))
for v, rs in rows.items():
    print(v, 'p50 added %.3f' % statistics.median(r[0] for r in rs), 'p99 added', ' '.join('%.2f' % r[1] for r in rs), 'median %.2f' % statistics.median(r[1] for r in rs), 'p99.9 added median %.2f' % statistics.median(r[2] for r in rs), 'cpu/10k %.3f' % statistics.median(r[3] for r in rs), 'load', ' '.join(str(r[4]) for r in rs))
