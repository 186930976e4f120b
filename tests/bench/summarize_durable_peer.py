#!/usr/bin/env python3
"""The table of BENCHMARKS.md section 11, "A durable peer", from the JSON
files of tests/bench/durable-peer.sh.

With one results directory: the median of its runs, every run in brackets.
With several (sessions run one after another): the median of all their
runs, each session's median in brackets, so a noisy session shows as one
outlying bracket instead of moving the figure. Then the exactly-once
counts, summed over every run."""
import json
import statistics
import sys
from pathlib import Path

dirs = [Path(d) for d in (sys.argv[1:] or ["bench-results"])]


def runs(d, prefix):
    files = sorted(d.glob(f"{prefix}-[0-9]*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(f.read_text()) for f in files]


def get(r, path):
    for k in path.split("."):
        r = r[k]
    return r


def cell(sessions, path, digits, scale=1.0):
    per = [[get(r, path) * scale for r in rs] for rs in sessions if rs]
    if not per:
        return "n/a"
    f = lambda v: "n/a" if v != v else f"{v:,.{digits}f}"
    every = [v for vs in per for v in vs]
    inner = per[0] if len(per) == 1 else [statistics.median(vs) for vs in per]
    return f"**{f(statistics.median(every))}** [{' '.join(f(v) for v in inner)}]"


TARGETS = (("holdfast", "Holdfast (SQLite, fsync)"), ("mosquitto", "Mosquitto (no fsync)"),
           ("redis-aof", "Redis Streams (AOF, fsync)"))
COLS = (("v2a.per_s", 0, 1.0), ("v2a.latency_us.p50", 2, 1e-3), ("v2a.latency_us.p90", 2, 1e-3),
        ("v2a.latency_us.p99", 2, 1e-3), ("v2a.latency_us.p999", 2, 1e-3),
        ("server.peak_rss_kb", 0, 1 / 1024), ("server.cpu_percent", 0, 1.0))
print("| offered msg/s | target | delivered msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | peak RSS MB | CPU % |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
totals = {}
for rate in (1000, 5000, 20000):
    for name, label in TARGETS:
        sessions = [runs(d, f"{name}-{rate}") for d in dirs]
        if not any(sessions):
            continue
        cells = " | ".join(cell(sessions, p, d, s) for p, d, s in COLS)
        print(f"| {rate:,} | {label} | {cells} |")
        # Only what each mode measures: the MQTT mode counts no duplicates,
        # and only the Redis mode waits for its backlog and checks order.
        keys = {"holdfast": ("duplicates",), "mosquitto": (),
                "redis-aof": ("delivered_total", "lost", "duplicates", "reordered", "read_not_acked")}[name]
        t = totals.setdefault(name, dict.fromkeys(("runs", "sent", "acked", "delivered by +2 s", "errors") + keys, 0))
        for r in (r for rs in sessions for r in rs):
            t["runs"] += 1
            t["sent"] += r["v2a"]["sent"]
            t["acked"] += r["v2a"]["acked"]
            t["delivered by +2 s"] += r["v2a"]["delivered"]
            t["errors"] += r["errors"]
            for k in keys:
                t[k] += r[k]
print()
for name, t in totals.items():
    print(f"- {name}: " + ", ".join(f"{k} {v:,}" for k, v in t.items()))
