#!/bin/bash
# Starts the gateway, then renices its threads: NICE_WRITER for the audit writer, NICE_WORKERS for
# the request workers (as root; values relative to 0).
( sleep 3
  for t in /proc/$$/task/*; do
    name=$(cat "$t/comm" 2>/dev/null)
    case $name in
      tollbu-audit-wr*) [ -n "${NICE_WRITER:-}" ] && renice -n "$NICE_WRITER" -p "${t##*/}" >/dev/null ;;
      tollbu-worker-*) [ -n "${NICE_WORKERS:-}" ] && renice -n "$NICE_WORKERS" -p "${t##*/}" >/dev/null ;;
    esac
  done
  ps -L -o tid,ni,comm -p $$ > /tmp/prio/last-threads.txt ) &
exec /work/main/target/release/tollbu "$@"
