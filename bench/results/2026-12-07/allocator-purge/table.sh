#!/usr/bin/env bash
# table.sh DIR... : per run: scenario, req/s, CPU s/10k, peak RSS (from summary.md)
for d in "$@"; do
  awk -v run="$(basename "$d")" '/^### /{scen=$5} /Tollbu full/ && !seen[scen]++ {split($0,f,"|"); printf "%-28s %-28s req/s %-26s CPU %s RSS %s\n", run, scen, f[3], f[7], f[8]}' "$d/summary.md"
done
