#!/usr/bin/env bash
# `tollbu audit query --scan` before and after the scan's needle shortcut (records that lack the
# subject's pseudonym, consumer or service as stored are not decoded): the verify_timing example
# built from each tree, alternating, each run on a log of its own of N records.
#   BASE=/tmp/base (git worktree at the commit before), N (default 1000000), ROUNDS (default 3).
exec env OUT=bench/results/2026-12-07/scan-prefilter EXAMPLE=verify_timing bench/ab-example.sh
