#!/usr/bin/env bash
# BENCHMARKS.md section 11, "A durable peer": Holdfast, Mosquitto (no fsync)
# and Redis Streams with an fsynced AOF, side by side at 1k, 5k and 20k msg/s
# offered (1,000 visitors, 50 agents, 10 s), interleaved, RUNS times each.
# Needs a release build (see BENCHMARKS.md) and `apt install mosquitto
# redis-server`. Writes one JSON per run into $OUT; summarise with
# tests/bench/summarize_durable_peer.py $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}/release
L=$T/holdfast-load
export HOLDFAST_SERVER_BIN=${HOLDFAST_SERVER_BIN:-$T/holdfast-server}
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
RATES=${RATES:-1000 5000 20000}
mkdir -p "$OUT"
run() { local name=$1; shift; echo "== $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"; taskset -c 1 "$L" --pin-server 0 --json "$OUT/$name.json" "$@"; }
for r in $(seq "$RUNS"); do
  for rate in $RATES; do
    common=(--visitors 1000 --agents 50 --rate "$rate" --duration 10)
    run "holdfast-$rate-$r" --spawn "${common[@]}"
    run "mosquitto-$rate-$r" --spawn-mosquitto "${common[@]}"
    run "redis-aof-$rate-$r" --spawn-redis-aof "${common[@]}"
  done
done
