#!/usr/bin/env python3
"""The table of BENCHMARKS.md section 10's "Taking the log heads last" from
tests/bench/cluster-before-after.sh's JSON reports: medians of the runs,
every run in brackets."""
import glob
import json
import os
import statistics
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench-results"


def cell(values, fmt):
    if not values:
        return "–"
    return f"**{fmt(statistics.median(values))}** ({', '.join(fmt(v) for v in values)})"


ms = lambda us: f"{us / 1000:,.1f}"
n0 = lambda v: f"{v:,.0f}"
print("| run | build | delivered msg/s | visitor→agent p50 / p99 ms | agent→visitor p50 / p99 ms "
      "| batches redone | PostgreSQL rows / msg | WAL bytes / msg |")
print("|---|---|---|---|---|---|---|---|")
for name, label in [("thr-pg1", "1 node, 20k offered"), ("thr-pg3", "3 nodes, 20k offered"),
                    ("lat500-cross", "3 nodes cross, 400 + 100"), ("lat-cross", "3 nodes cross, 1,000 + 250")]:
    for which in ["before", "after"]:
        r = []
        for p in sorted(glob.glob(os.path.join(d, f"{name}-[0-9]*-{which}.json"))):
            with open(p) as f:
                r.append(json.load(f))
        if not r:
            continue
        pg = [x["pg_writes"] for x in r if x.get("pg_writes")]
        lat = lambda k, q: [x[k]["latency_us"][q] for x in r if x[k]["latency_us"]["count"]]
        a2v = "–" if not lat("a2v", "p50") else f"{cell(lat('a2v', 'p50'), ms)} / {cell(lat('a2v', 'p99'), ms)}"
        print(f"| {label} | {which} | {cell([x['v2a']['per_s'] + x['a2v']['per_s'] for x in r], n0)} | "
              f"{cell(lat('v2a', 'p50'), ms)} / {cell(lat('v2a', 'p99'), ms)} | {a2v} | "
              f"{cell([x['commit']['failed_or_redone'] for x in r], n0)} | "
              f"{cell([p['rows_per_msg'] for p in pg], lambda v: f'{v:.1f}')} | "
              f"{cell([p['wal_bytes_per_msg'] for p in pg], n0)} |")
