#!/usr/bin/env bash
# Issue 15's figures (BENCHMARKS.md section 9): one node on SQLite, one node
# on PostgreSQL, and 3 nodes on PostgreSQL + Redis, interleaved in one run so
# the shared machine's noise falls on all alike. The harness starts its own
# PostgreSQL (fsync on, on the same disk as SQLite's temp dir) and Redis.
# By default nothing is pinned: on a 2-core machine, three nodes plus
# PostgreSQL and Redis on one core starve each other (BENCHMARKS.md section
# 10 says what that did). PIN=1 pins everything of "the server" (nodes,
# PostgreSQL, Redis) to CPU 0 and the generator to CPU 1, as the other
# sections do.
#   cargo build --release -p holdfast-server -p holdfast-tests
#   tests/bench/scale-out.sh            # RUNS=3 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}/release
L=$T/holdfast-load
export HOLDFAST_SERVER_BIN=$T/holdfast-server
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
run() {
  local name=$1; shift; echo "== $name"
  if [ -n "${PIN:-}" ]; then
    taskset -c 1 "$L" --pin-server 0 --json "$OUT/$name.json" "$@"
  else
    "$L" --json "$OUT/$name.json" "$@"
  fi
}
sqlite=(--spawn)
pg1=(--spawn --postgres)
pg3=(--spawn --nodes 3)
for r in $(seq "$RUNS"); do
  # Durable throughput: offered 20k msg/s, 200 visitors and 10 agents
  # spread over every node.
  run "thr-sqlite-$r" "${sqlite[@]}" --visitors 200 --agents 10 --rate 20000 --duration 10
  run "thr-pg1-$r" "${pg1[@]}" --visitors 200 --agents 10 --rate 20000 --duration 10
  run "thr-pg3-$r" "${pg3[@]}" --visitors 200 --agents 10 --rate 20000 --duration 10
  # Latency at 1k msg/s (plus 250/s from agents): 1,000 visitors, 50 agents;
  # on 3 nodes once with everyone on node 0 and once with visitors on node
  # 1 and agents on node 0.
  lat=(--visitors 1000 --agents 50 --rate 1000 --agent-rate 250 --duration 10)
  run "lat-sqlite-$r" "${sqlite[@]}" "${lat[@]}"
  run "lat-pg1-$r" "${pg1[@]}" "${lat[@]}"
  run "lat-pg3-same-$r" "${pg3[@]}" --visitor-nodes 0 --agent-nodes 0 "${lat[@]}"
  run "lat-pg3-cross-$r" "${pg3[@]}" --visitor-nodes 1 --agent-nodes 0 "${lat[@]}"
  # The same at 400 + 100 msg/s, which one PostgreSQL node sustains here.
  lat500=(--visitors 1000 --agents 50 --rate 400 --agent-rate 100 --duration 10)
  run "lat500-sqlite-$r" "${sqlite[@]}" "${lat500[@]}"
  run "lat500-pg1-$r" "${pg1[@]}" "${lat500[@]}"
  run "lat500-pg3-same-$r" "${pg3[@]}" --visitor-nodes 0 --agent-nodes 0 "${lat500[@]}"
  run "lat500-pg3-cross-$r" "${pg3[@]}" --visitor-nodes 1 --agent-nodes 0 "${lat500[@]}"
  # Idle: 5,000 visitors per node, 50 agents.
  run "idle-sqlite-$r" "${sqlite[@]}" --mode idle --agents 50 --steps 0,5000
  run "idle-pg1-$r" "${pg1[@]}" --mode idle --agents 50 --steps 0,5000
  run "idle-pg3-$r" "${pg3[@]}" --mode idle --agents 50 --steps 0,15000
done
