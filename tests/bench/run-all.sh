#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, medians of 3, configurations interleaved.
# Needs: a release build (see BENCHMARKS.md), `apt install mosquitto`, and
# `npm ci` in tests/bench/node-ws. Writes one JSON per run into $OUT.
# The target is pinned to CPU 0 and the generator to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}/release
L=$T/holdfast-load
export HOLDFAST_SERVER_BIN=$T/holdfast-server
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
run() { local name=$1; shift; echo "== $name"; taskset -c 1 "$L" --pin-server 0 --json "$OUT/$name.json" "$@"; }
for r in $(seq "$RUNS"); do
  # 1. Idle scale, Holdfast (with 200 agents) and a plain Node ws server.
  run "idle-holdfast-$r" --mode idle --spawn --agents 200
  run "idle-node-$r" --mode idle --spawn-node tests/bench/node-ws
  # 2. Durable throughput, group commit on and off, 200 visitors / 10 agents.
  for rate in 2000 5000 20000; do
    run "gc-on-$rate-$r" --spawn --visitors 200 --agents 10 --rate "$rate" --duration 10
    run "gc-off-$rate-$r" --spawn --visitors 200 --agents 10 --rate "$rate" --duration 10 --no-group-commit
  done
  # 3 and 4. Latency with 1k visitors / 50 agents, beside Mosquitto.
  for rate in 1000 5000 20000; do
    run "lat-$rate-$r" --spawn --visitors 1000 --agents 50 --rate "$rate" --duration 10
    run "mqtt-$rate-$r" --spawn-mosquitto --visitors 1000 --agents 50 --rate "$rate" --duration 10
  done
  run "both-$r" --spawn --visitors 1000 --agents 50 --rate 4000 --agent-rate 1000 --duration 10
  run "mqtt-both-$r" --spawn-mosquitto --visitors 1000 --agents 50 --rate 4000 --agent-rate 1000 --duration 10
  # 5. Reconnect storm.
  run "storm-$r" --mode storm --spawn --visitors 5000 --agents 100
done
