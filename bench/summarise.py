#!/usr/bin/env python3
"""Summarises bench/run.sh output (standard library only).

  summarise.py parse wrk|h2load RAW --scenario S --target T --round N ...  -> one JSON line
  summarise.py reqlog H2LOAD_LOG        -> BENCH_JSON line with latency percentiles
  summarise.py brief < one JSON line     -> short human line
  summarise.py table results.jsonl       -> Markdown tables (medians, spread, ratios)
"""

import argparse
import json
import re
import statistics
import sys


def pct(sorted_values, p):
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def parse_wrk(text):
    m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if not m:
        raise SystemExit("no BENCH_JSON line in wrk output")
    j = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    secs = j["duration_us"] / 1e6
    return {
        "requests": j["requests"],
        "seconds": secs,
        "rps": j["requests"] / secs if secs else 0,
        "p50_ms": j["p50_us"] / 1000,
        "p99_ms": j["p99_us"] / 1000,
        "p999_ms": j["p999_us"] / 1000,
        "errors": j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def parse_h2load(text):
    fin = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    lat = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if not (fin and req and codes):
        raise SystemExit("unrecognised h2load output")
    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    done = int(req.group(3))
    l = json.loads(lat.group(1)) if lat else {"p50_us": 0, "p99_us": 0, "p999_us": 0}
    return {
        "requests": done,
        "seconds": secs,
        "rps": float(fin.group(3)),
        "p50_ms": l["p50_us"] / 1000,
        "p99_ms": l["p99_us"] / 1000,
        "p999_ms": l["p999_us"] / 1000,
        "errors": int(req.group(5)) + int(req.group(6)) + int(req.group(7)),
        "non2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)),
    }


def cmd_parse(a):
    text = open(a.raw).read()
    r = parse_wrk(text) if a.tool == "wrk" else parse_h2load(text)
    cpu_s = a.cpu_ticks / a.clk_tck
    r.update(
        scenario=a.scenario,
        target=a.target,
        round=a.round,
        tool=a.tool,
        cpu_s=cpu_s,
        cpu_s_per_10k=cpu_s / r["requests"] * 10000 if r["requests"] else 0,
        hwm_mib=a.hwm_kib / 1024,
        rss_mib=a.rss_kib / 1024,
        load1=a.load,
        raw=a.raw.split("/")[-1],
    )
    print(json.dumps(r))


def cmd_reqlog(a):
    durations = []
    with open(a.log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]))
    durations.sort()
    print("BENCH_JSON " + json.dumps({
        "n": len(durations),
        "p50_us": pct(durations, 50),
        "p99_us": pct(durations, 99),
        "p999_us": pct(durations, 99.9),
        "max_us": durations[-1] if durations else 0,
    }))


def cmd_brief(_a):
    r = json.loads(sys.stdin.readline())
    print(f"{r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms p99.9 {r['p999_ms']:.2f} ms "
          f"cpu {r['cpu_s_per_10k']:.3f} s/10k hwm {r['hwm_mib']:.1f} MiB errors {r['errors']} non2xx {r['non2xx']} load {r['load1']}")


NAMES = {
    "upstream": "1. upstream directly",
    "nginx": "2. nginx plain proxy",
    "haproxy": "3. HAProxy + RS256 JWT",
    "plain": "4. Tollbu plain proxy (no auth)",
    "tollbu": "5. Tollbu full pipeline",
    "relaxed": "(diagnostic) Tollbu full, audit durability relaxed",
}
SCENARIOS = {
    "c50": "HTTP/1.1, wrk -t2 -c50",
    "c1000": "HTTP/1.1, wrk -t2 -c1000",
    "h2": "HTTP/2 (h2c), h2load -t2 -c50 -m10",
    "rate": "HTTP/1.1 at a fixed request rate, h2load --h1 -t2 -c50 --rps (req/s: the rate reached)",
}


def cmd_table(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    out = []
    for scenario in [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]:
        agg = {}
        for target in NAMES:
            rs = [r for r in rows if r["scenario"] == scenario and r["target"] == target]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            agg[target] = {
                "n": len(rs),
                "rps": med("rps"),
                "rps_min": min(r["rps"] for r in rs),
                "rps_max": max(r["rps"] for r in rs),
                "p50": med("p50_ms"),
                "p99": med("p99_ms"),
                "p99_min": min(r["p99_ms"] for r in rs),
                "p99_max": max(r["p99_ms"] for r in rs),
                "p999": med("p999_ms"),
                "cpu": med("cpu_s_per_10k"),
                "hwm": max(r["hwm_mib"] for r in rs),
                "errors": sum(r["errors"] + r["non2xx"] for r in rs),
                "load": med("load1"),
            }
        up = agg.get("upstream")
        ng = agg.get("nginx")
        out.append(f"### {SCENARIOS[scenario]} — medians of {max(v['n'] for v in agg.values())} rounds\n")
        out.append("| server | req/s (min–max) | p50 ms | p99 ms (min–max) | p99.9 ms | CPU s/10k req | peak RSS MiB | errors |")
        out.append("|---|---|---|---|---|---|---|---|")
        for t, v in agg.items():
            out.append(
                f"| {NAMES[t]} | {v['rps']:,.0f} ({v['rps_min']:,.0f}–{v['rps_max']:,.0f}) | {v['p50']:.2f} | "
                f"{v['p99']:.2f} ({v['p99_min']:.2f}–{v['p99_max']:.2f}) | {v['p999']:.2f} | {v['cpu']:.3f} | "
                f"{v['hwm']:.1f} | {v['errors']} |")
        out.append("")
        out.append("| server | req/s ÷ upstream | req/s ÷ nginx | p99 added over upstream, ms | ÷ nginx's added p99 | CPU ÷ upstream | CPU ÷ nginx | RSS ÷ nginx |")
        out.append("|---|---|---|---|---|---|---|---|")
        for t, v in agg.items():
            def ratio(x, base, key):
                return f"{x / base[key]:.2f}×" if base and base[key] else "—"
            added = v["p99"] - up["p99"] if up else None
            ng_added = ng["p99"] - up["p99"] if (up and ng) else None
            added_s = f"{added:+.2f}" if added is not None else "—"
            added_r = f"{added / ng_added:.2f}×" if (added is not None and ng_added and ng_added > 0 and t != "upstream") else "—"
            out.append(
                f"| {NAMES[t]} | {ratio(v['rps'], up, 'rps')} | {ratio(v['rps'], ng, 'rps')} | {added_s} | {added_r} | "
                f"{ratio(v['cpu'], up, 'cpu')} | {ratio(v['cpu'], ng, 'cpu')} | {ratio(v['hwm'], ng, 'hwm')} |")
        if "tollbu" in agg and "haproxy" in agg:
            out.append("")
            out.append(f"Tollbu full ÷ HAProxy+JWT throughput: {agg['tollbu']['rps'] / agg['haproxy']['rps']:.2f}×.")
        out.append(f"Median 1-minute load average during these runs: {statistics.median(v['load'] for v in agg.values()):.2f}.\n")
    print("\n".join(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("parse")
    pp.add_argument("tool", choices=["wrk", "h2load"])
    pp.add_argument("raw")
    pp.add_argument("--scenario", required=True)
    pp.add_argument("--target", required=True)
    pp.add_argument("--round", required=True)
    pp.add_argument("--cpu-ticks", type=int, required=True)
    pp.add_argument("--clk-tck", type=int, required=True)
    pp.add_argument("--hwm-kib", type=int, required=True)
    pp.add_argument("--rss-kib", type=int, required=True)
    pp.add_argument("--load", type=float, required=True)
    pr = sub.add_parser("reqlog")
    pr.add_argument("log")
    sub.add_parser("brief")
    pt = sub.add_parser("table")
    pt.add_argument("results")
    a = p.parse_args()
    {"parse": cmd_parse, "reqlog": cmd_reqlog, "brief": cmd_brief, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
