#!/usr/bin/env python3
"""The table of BENCHMARKS.md section 11, "A durable peer", from the JSON
files of tests/bench/durable-peer.sh: the median of the runs, with every run
in brackets, and each run's exactly-once check."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")


def runs(prefix):
    files = sorted(out.glob(f"{prefix}-[0-9]*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(f.read_text()) for f in files]


def med(values, digits):
    if not values:
        return "n/a"
    f = lambda v: f"{v:,.{digits}f}"
    return f"**{f(statistics.median(values))}** [{' '.join(f(v) for v in values)}]"


def col(rs, path, scale=1.0):
    vals = []
    for r in rs:
        for k in path.split("."):
            r = r[k]
        vals.append(r * scale)
    return vals


TARGETS = (("holdfast", "Holdfast (SQLite, fsync)"), ("mosquitto", "Mosquitto (no fsync)"),
           ("redis-aof", "Redis Streams (AOF, fsync)"))
print("| offered msg/s | target | delivered msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | peak RSS MB | CPU % |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
checks = []
for rate in (1000, 5000, 20000):
    for name, label in TARGETS:
        rs = runs(f"{name}-{rate}")
        if not rs:
            continue
        print(
            f"| {rate:,} | {label} | {med(col(rs, 'v2a.per_s'), 0)} | {med(col(rs, 'v2a.latency_us.p50', 1e-3), 2)} "
            f"| {med(col(rs, 'v2a.latency_us.p90', 1e-3), 2)} | {med(col(rs, 'v2a.latency_us.p99', 1e-3), 2)} "
            f"| {med(col(rs, 'v2a.latency_us.p999', 1e-3), 2)} | {med(col(rs, 'server.peak_rss_kb', 1 / 1024), 0)} "
            f"| {med(col(rs, 'server.cpu_percent'), 0)} |"
        )
        for i, r in enumerate(rs, 1):
            v = r["v2a"]
            extra = ""
            if name == "redis-aof":
                extra = (f", read in all {r['delivered_total']}, lost {r['lost']}, duplicates {r['duplicates']},"
                         f" reordered {r['reordered']}, drained {r['drain_s']:.1f} s more")
            elif name == "holdfast":
                extra = f", duplicates {r['duplicates']}"
            checks.append(f"- {rate:,} {name} run {i}: sent {v['sent']}, acked {v['acked']}, "
                          f"delivered {v['delivered']}, errors {r['errors']}{extra}")
print()
print("\n".join(checks))
