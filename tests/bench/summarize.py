#!/usr/bin/env python3
"""Turn the JSON files of tests/bench/run-all.sh into the Markdown tables of
BENCHMARKS.md: the median of the runs, with every run in brackets."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")


def runs(prefix):
    files = sorted(out.glob(f"{prefix}-[0-9]*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(f.read_text()) for f in files]


def fmt(v, digits):
    if isinstance(v, float) and v != v:
        return "n/a"
    return f"{v:,.{digits}f}"


def med(values, digits=1, unit=""):
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"**{fmt(m, digits)}**{unit} [{' '.join(fmt(v, digits) for v in values)}]"


def median(values):
    return statistics.median(values) if values else float("nan")


def get(r, path):
    for k in path.split("."):
        r = r[k]
    return r


def col(rs, path, scale=1.0):
    return [get(r, path) * scale for r in rs]


print("## 1. Idle scale\n")
hf, node = runs("idle-holdfast"), runs("idle-node")
print("| idle visitors | Holdfast RSS MB | Holdfast KB/visitor | Node ws RSS MB | Node ws KB/visitor |")
print("|---:|---:|---:|---:|---:|")
if hf:
    for i, step in enumerate(hf[0]["steps"]):
        k = step["visitors"]
        h_rss = [r["steps"][i]["rss_kb"] / 1024 for r in hf]
        h_per = [r["steps"][i]["kb_per_visitor"] for r in hf]
        n_rss = [r["steps"][i]["rss_kb"] / 1024 for r in node] if node else []
        n_per = [r["steps"][i]["kb_per_visitor"] for r in node] if node else []
        print(f"| {k:,} | {med(h_rss)} | {med(h_per, 2) if k else '–'} | {med(n_rss)} | {med(n_per, 2) if k else '–'} |")

print("\n## 2. Durable throughput, group commit on and off\n")
print("| offered msg/s | group commit | committed msg/s | p50 ms | p99 ms | mean batch | mean commit ms | server CPU % |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for rate in (2000, 5000, 20000):
    for gc in ("on", "off"):
        rs = runs(f"gc-{gc}-{rate}")
        if not rs:
            continue
        print(
            f"| {rate:,} | {gc} | {med(col(rs, 'v2a.per_s'), 0)} | {med(col(rs, 'v2a.latency_us.p50', 1e-3), 2)} "
            f"| {med(col(rs, 'v2a.latency_us.p99', 1e-3), 1)} | {med(col(rs, 'commit.mean_batch'), 1)} "
            f"| {med(col(rs, 'commit.mean_commit_ms'), 2)} | {med(col(rs, 'server.cpu_percent'), 0)} |"
        )
    on, off = runs(f"gc-on-{rate}"), runs(f"gc-off-{rate}")
    if on and off:
        print(f"|  | on ÷ off | {median(col(on, 'v2a.per_s')) / median(col(off, 'v2a.per_s')):.2f}× | | | | | |")

print("\n## 3 and 4. Latency under load, beside Mosquitto (1,000 visitors, 50 agents)\n")
print("| offered msg/s | target | delivered msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | peak RSS MB | CPU % |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
ratios = []
for rate, hname, mname in ((1000, "lat-1000", "mqtt-1000"), (5000, "lat-5000", "mqtt-5000"),
                           (20000, "lat-20000", "mqtt-20000")):
    for name, label in ((hname, "Holdfast"), (mname, "Mosquitto")):
        rs = runs(name)
        if not rs:
            continue
        print(
            f"| {rate:,} | {label} | {med(col(rs, 'v2a.per_s'), 0)} | {med(col(rs, 'v2a.latency_us.p50', 1e-3), 2)} "
            f"| {med(col(rs, 'v2a.latency_us.p90', 1e-3), 2)} | {med(col(rs, 'v2a.latency_us.p99', 1e-3), 2)} "
            f"| {med(col(rs, 'v2a.latency_us.p999', 1e-3), 2)} | {med(col(rs, 'server.peak_rss_kb', 1 / 1024), 0)} "
            f"| {med(col(rs, 'server.cpu_percent'), 0)} |"
        )
    h, m = runs(hname), runs(mname)
    if h and m:
        ratios.append((rate, median(col(h, "v2a.per_s")) / median(col(m, "v2a.per_s")),
                       median(col(h, "v2a.latency_us.p99")) / median(col(m, "v2a.latency_us.p99"))))
print("\n| offered msg/s | throughput Holdfast ÷ Mosquitto | p99 Holdfast ÷ Mosquitto |")
print("|---:|---:|---:|")
for rate, t, p in ratios:
    print(f"| {rate:,} | {t:.2f} | {p:.1f}× |")

print("\n### Both directions (4,000 visitor→agent + 1,000 agent→visitor msg/s)\n")
print("| target | direction | delivered msg/s | p50 ms | p99 ms | p99.9 ms |")
print("|---|---|---:|---:|---:|---:|")
for name, label in (("both", "Holdfast"), ("mqtt-both", "Mosquitto")):
    rs = runs(name)
    for d, dl in (("v2a", "visitor→agent"), ("a2v", "agent→visitor")):
        if rs:
            print(
                f"| {label} | {dl} | {med(col(rs, d + '.per_s'), 0)} | {med(col(rs, d + '.latency_us.p50', 1e-3), 2)} "
                f"| {med(col(rs, d + '.latency_us.p99', 1e-3), 2)} | {med(col(rs, d + '.latency_us.p999', 1e-3), 2)} |"
            )

print("\n## 5. Reconnect storm (5,000 visitors + 100 agents)\n")
rs = runs("storm")
if rs:
    print("| | median [runs] |")
    print("|---|---:|")
    print(f"| drop → everyone resumed (s) | {med(col(rs, 'all_resumed_s'), 2)} |")
    print(f"| drop → all 5,000 queued messages at agents (s) | {med(col(rs, 'backlog_delivered_s'), 2)} |")
    print(f"| visitor resume p50 (s) | {med(col(rs, 'visitor_resume_us.p50', 1e-6), 2)} |")
    print(f"| visitor resume p99 (s) | {med(col(rs, 'visitor_resume_us.p99', 1e-6), 2)} |")
    print(f"| agent resume max (s) | {med(col(rs, 'agent_resume_us.max', 1e-6), 2)} |")
    print(f"| server RSS before (MB) | {med(col(rs, 'server.rss_before_kb', 1 / 1024), 0)} |")
    print(f"| server peak RSS during the storm (MB) | {med(col(rs, 'server.peak_rss_kb', 1 / 1024), 0)} |")
    print(f"| delivered / acked / duplicates | {[r['delivered'] for r in rs]} / {[r['acked'] for r in rs]} / {[r['duplicates'] for r in rs]} |")
    print(f"| reconnect attempts retried | {[r['retries'] for r in rs]} |")
