#!/usr/bin/env bash
# Runs one example of `tollbu-audit` built from two trees, alternating, so that a change is
# measured against the code before it in the same minutes on this shared machine.
#   BASE      a git worktree of the commit before (default /tmp/base)
#   EXAMPLE   the example (default verify_timing); COPY_EXAMPLE=1 copies this tree's version into
#             BASE first, so that both builds time the same things
#   N         the example's argument (default 1000000); ROUNDS (default 3)
#   OUT       where `ab-$N.txt` goes (required)
# Run from the repository root.
set -euo pipefail
BASE=${BASE:-/tmp/base}
EXAMPLE=${EXAMPLE:-verify_timing}
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
: "${OUT:?OUT names the results directory}"
if [ "${COPY_EXAMPLE:-0}" = 1 ]; then
  cp "crates/audit/examples/$EXAMPLE.rs" "$BASE/crates/audit/examples/$EXAMPLE.rs"
fi
(cd "$BASE" && cargo build -q --release -p tollbu-audit --example "$EXAMPLE")
cargo build -q --release -p tollbu-audit --example "$EXAMPLE"
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  for build in before after; do
    if [ "$build" = before ]; then bin="$BASE/target/release/examples/$EXAMPLE"; else bin="target/release/examples/$EXAMPLE"; fi
    echo "== $N records, round $round, $build, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$N"
  done
done 2>&1 | tee "$OUT/ab-$N.txt"
