#!/usr/bin/env bash
# `verify` before and after its segment readers (reader threads read, decode and hash whole
# segments ahead of the thread building the tree): the verify_timing example built from each
# tree, alternating.   BASE=/tmp/base (git worktree at the commit before), N, ROUNDS.
exec env OUT=bench/results/2026-12-07/verify-readers EXAMPLE=verify_timing bench/ab-example.sh
