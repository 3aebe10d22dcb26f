#!/usr/bin/env bash
# build.sh COMMIT... : release tollbu binaries of older commits, as /tmp/bis/tollbu-COMMIT
set -euo pipefail
for c in "$@"; do
  if [[ -x /tmp/bis/tollbu-$c ]]; then continue; fi
  if [[ ! -d /tmp/bis/wt ]]; then git -C /work/main worktree add --detach /tmp/bis/wt "$c"; fi
  git -C /tmp/bis/wt checkout -q --detach "$c"
  (cd /tmp/bis/wt && CARGO_TARGET_DIR=/tmp/bis/target scripts/build-release)
  cp /tmp/bis/target/release/tollbu /tmp/bis/tollbu-$c
  echo "built $c"
done
