#!/usr/bin/env bash
# Two server builds side by side: the idle and 20k runs of BENCHMARKS.md
# section 8, interleaved (old, new, old, new, ...) so the shared machine's
# noise falls on both alike. One generator drives both.
#   OLD=path/to/old/holdfast-server NEW=path/to/new/holdfast-server tests/bench/before-after.sh
# Build the old one from its commit in a worktree of its own:
#   git worktree add /tmp/old 97d33d0 && (cd /tmp/old && cargo build --release -p holdfast-server)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OLD:?the old holdfast-server binary}" "${NEW:?the new holdfast-server binary}"
L=${CARGO_TARGET_DIR:-target}/release/holdfast-load
OUT=${OUT:-bench-results}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
run() {
  local name=$1 bin=$2; shift 2
  echo "== $name"
  HOLDFAST_SERVER_BIN=$bin taskset -c 1 "$L" --pin-server 0 --json "$OUT/$name.json" "$@"
}
for r in $(seq "$RUNS"); do
  run "t20k-old-$r" "$OLD" --spawn --visitors 1000 --agents 50 --rate 20000 --duration 10
  run "t20k-new-$r" "$NEW" --spawn --visitors 1000 --agents 50 --rate 20000 --duration 10
done
for r in $(seq "$RUNS"); do
  run "idle-new-$r" "$NEW" --mode idle --spawn --agents 200
  run "idle-old-$r" "$OLD" --mode idle --spawn --agents 200
done
