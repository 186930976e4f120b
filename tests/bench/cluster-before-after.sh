#!/usr/bin/env bash
# Two server builds side by side on the PostgreSQL setups, interleaved in
# one run so the shared machine's noise falls on both alike: throughput on
# 1 and 3 nodes, and cross-node latency (visitors on node 1, agents on node
# 0) at 400 + 100 and 1,000 + 250 msg/s. BENCHMARKS.md section 10 ("Taking
# the log heads last") was made with it.
#   BEFORE=/path/to/old/holdfast-server AFTER=target/release/holdfast-server \
#     OUT=bench-results tests/bench/cluster-before-after.sh
#   python3 tests/bench/summarize_before_after.py bench-results
set -uo pipefail
cd "$(dirname "$0")/../.."
L=${CARGO_TARGET_DIR:-target}/release/holdfast-load
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
declare -A BIN=([before]=${BEFORE:?the old holdfast-server} [after]=${AFTER:?the new holdfast-server})
run() {
  local name=$1 which=$2; shift 2
  echo "== $name-$which $(date +%T)"
  HOLDFAST_SERVER_BIN=${BIN[$which]} timeout 300 "$L" --json "$OUT/$name-$which.json" "$@" \
    > "$OUT/$name-$which.txt" 2>&1
  echo "rc=$?"
}
for r in $(seq "$RUNS"); do
  for w in before after; do
    run "thr-pg3-$r" "$w" --spawn --nodes 3 --visitors 200 --agents 10 --rate 20000 --duration 10
    run "thr-pg1-$r" "$w" --spawn --postgres --visitors 200 --agents 10 --rate 20000 --duration 10
    run "lat500-cross-$r" "$w" --spawn --nodes 3 --visitor-nodes 1 --agent-nodes 0 \
      --visitors 1000 --agents 50 --rate 400 --agent-rate 100 --duration 10
    run "lat-cross-$r" "$w" --spawn --nodes 3 --visitor-nodes 1 --agent-nodes 0 \
      --visitors 1000 --agents 50 --rate 1000 --agent-rate 250 --duration 10
  done
done
