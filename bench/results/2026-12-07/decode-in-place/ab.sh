#!/usr/bin/env bash
# `decode` before and after its canonical check compares the re-serialised record with the stored
# bytes as it goes (no copy of the payload, no re-encoded buffers): the verify_timing example built
# from each tree, alternating.
#   BASE=/tmp/base (git worktree at the commit before), N (default 1000000), ROUNDS (default 3).
exec env OUT=bench/results/2026-12-07/decode-in-place EXAMPLE=verify_timing bench/ab-example.sh
