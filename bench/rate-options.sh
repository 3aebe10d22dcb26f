# shellcheck shell=bash
# Sourced by bench/run.sh (its `rate` scenario) and bench/one-gateway.sh (`fixed_rate`), so that the
# single-gateway probes send the fixed-rate load exactly as the load run does.
#
# rate_options RATE SECONDS sets RATE_OPTIONS to h2load's options for HTTP/1.1 at RATE requests a
# second in all for SECONDS: each of 50 connections sends RATE/50 requests a second, one at a time.
# The connections open 2 per millisecond, so their timers do not all fire together: started at once,
# every connection sends in the same instant and each round trip measures a burst of 50. h2load times
# a request from when it is sent; one that the previous answer held back is sent late (at these
# rates, rarely).
rate_options() { # rate seconds
  RATE_OPTIONS=(--h1 -t2 -c50 -r2 --rate-period=1ms --rps="$(($1 / 50))" -n "$(($1 * $2))")
}
