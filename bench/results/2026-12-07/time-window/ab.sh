#!/usr/bin/env bash
# A query for one day's records (no index on time: a scan) before and after the scan reads only the
# segments that can hold the window: the verify_timing example (this tree's version, copied into
# the worktree of the commit before so that both time the same queries), alternating.
#   BASE=/tmp/base (git worktree at the commit before), N (default 1000000), ROUNDS (default 2).
exec env OUT=bench/results/2026-12-07/time-window EXAMPLE=verify_timing COPY_EXAMPLE=1 ROUNDS="${ROUNDS:-2}" bench/ab-example.sh
