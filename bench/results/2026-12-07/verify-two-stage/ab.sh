#!/usr/bin/env bash
# `verify` before and after its two stages (a second thread reads, decodes and hashes; the calling
# thread does the ordered work): the verify_timing example built from each tree, alternating.
#   BASE=/tmp/base (git worktree at the commit before), N (default 1000000), ROUNDS (default 3).
exec env OUT=bench/results/2026-12-07/verify-two-stage EXAMPLE=verify_timing bench/ab-example.sh
