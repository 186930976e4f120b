#!/usr/bin/env bash
# BENCHMARKS.md section 7: the worst flood one address is allowed, against
# an older server build (BEFORE=path/to/holdfast-server) and this one,
# interleaved, 3 runs each, at 64 and at 256 attacker WebSockets (256 is
# the per-address WebSocket cap). The server is pinned to CPU 0 and the
# flood to CPU 1. Writes one JSON per run into $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}/release
F=$T/holdfast-flood
AFTER=${AFTER:-$T/holdfast-server}
: "${BEFORE:?set BEFORE to the holdfast-server binary to compare with}"
OUT=${OUT:-bench-results/flood}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
for conns in 64 256; do
  for r in $(seq "$RUNS"); do
    for which in before after; do
      bin=$AFTER; [ "$which" = before ] && bin=$BEFORE
      sfx=""; [ "$conns" = 256 ] && sfx="-256"
      taskset -c 1 "$F" --server "$bin" --duration 20 --connections "$conns" --pin-server 0 \
        --label "$which$sfx-$r" --json "$OUT/$which$sfx-$r.json"
    done
  done
done
