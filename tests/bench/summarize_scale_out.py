#!/usr/bin/env python3
"""Tables for BENCHMARKS.md section 10 from tests/bench/scale-out.sh's JSON
reports: the median of the runs, with every run in brackets."""
import glob
import json
import os
import statistics
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench-results"


def runs(name):
    out = []
    for p in sorted(glob.glob(os.path.join(d, f"{name}-[0-9]*.json"))):
        with open(p) as f:
            out.append(json.load(f))
    return out


def cell(values, fmt):
    if not values:
        return "–"
    med = statistics.median(values)
    return f"**{fmt(med)}** ({', '.join(fmt(v) for v in values)})"


ms = lambda us: f"{us / 1000:.1f}"
print("| setup | delivered msg/s | PostgreSQL rows / msg | WAL bytes / msg |")
print("|---|---|---|---|")
for name, label in [("thr-sqlite", "1 node, SQLite"), ("thr-pg1", "1 node, PostgreSQL"), ("thr-pg3", "3 nodes, PostgreSQL + Redis")]:
    r = runs(name)
    pg = [x["pg_writes"] for x in r if x.get("pg_writes")]
    print(f"| {label} | {cell([x['v2a']['per_s'] for x in r], lambda v: f'{v:,.0f}')} | "
          f"{cell([p['rows_per_msg'] for p in pg], lambda v: f'{v:.1f}')} | "
          f"{cell([p['wal_bytes_per_msg'] for p in pg], lambda v: f'{v:,.0f}')} |")
print()
print("| setup | visitor→agent p50 ms | p99 ms | agent→visitor p50 ms | p99 ms | delivered |")
print("|---|---|---|---|---|---|")
for name, label in [(f"{p}-{k}", f"{l}, {rate}") for p, rate in [("lat", "1,000 + 250 msg/s"), ("lat500", "400 + 100 msg/s")]
                    for k, l in [("sqlite", "1 node, SQLite"), ("pg1", "1 node, PostgreSQL"),
                                 ("pg3-same", "3 nodes, same node"), ("pg3-cross", "3 nodes, cross-node")]]:
    r = runs(name)
    if not r:
        continue
    print(f"| {label} | {cell([x['v2a']['latency_us']['p50'] for x in r], ms)} | "
          f"{cell([x['v2a']['latency_us']['p99'] for x in r], ms)} | "
          f"{cell([x['a2v']['latency_us']['p50'] for x in r], ms)} | "
          f"{cell([x['a2v']['latency_us']['p99'] for x in r], ms)} | "
          f"{cell([x['v2a']['latency_us']['count'] + x['a2v']['latency_us']['count'] for x in r], lambda v: f'{v:,.0f}')} |")
print()
print("| setup | visitors per node | RSS per node MB | CPU % (all nodes, one core = 100) |")
print("|---|---|---|---|")
for name, label in [("idle-sqlite", "1 node, SQLite"), ("idle-pg1", "1 node, PostgreSQL"), ("idle-pg3", "3 nodes, PostgreSQL + Redis")]:
    r = runs(name)
    last = [x["steps"][-1] for x in r]
    per_node = [statistics.median(s["nodes_rss_kb"]) / 1024 if len(s.get("nodes_rss_kb", [])) > 1 else s["rss_kb"] / 1024 for s in last]
    n = max(1, len(last[0].get("nodes_rss_kb", [])) if last else 1)
    print(f"| {label} | {last[0]['visitors'] // n if last else 0:,} | {cell(per_node, lambda v: f'{v:.1f}')} | "
          f"{cell([s['cpu_percent'] for s in last], lambda v: f'{v:.1f}')} |")
