# shellcheck shell=bash
# Sourced (not run) by the single-gateway probes: bench/results/2026-12-04/memory/rss.sh,
# bench/results/2026-12-05/gateway-probe.sh, bench/results/2026-12-06/rss-rounds/rounds.sh, and
# threads.sh and commits.sh in bench/results/2026-12-06/cpu-by-thread/.
# Starts the bench issuer, the bench upstream and one gateway with bench/tollbu.toml.in on
# 127.0.0.1 (the ports bench/run.sh gives Tollbu), waits for the gateway, and leaves:
#   G    the gateway's pid (under heaptrack: the gateway itself; HT is heaptrack's)
#   OUT  its scratch directory (removed on exit)
#   URL  a person record's address; BENCH_TOKEN and BENCH_PURPOSE exported for bench/wrk.lua
#   fixed_rate RATE SECONDS, a function: that load at a fixed rate (h2load) against URL
# Reads: BIN (default target/release/tollbu), GW_ENV (e.g. MIMALLOC_PURGE_DELAY=1), EXTRA_TOML
# (appended to the config), HEAPTRACK=1 with HEAPTRACK_OUT (heaptrack's -o, default $OUT/ht),
# SCRATCH (prefix of OUT, default /tmp/one-gateway).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# bench/run.sh installs the load generators; a probe run before it on a fresh machine says what is missing.
for tool in wrk h2load python3 ${HEAPTRACK:+heaptrack}; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: wrk nghttp2-client heaptrack; or run bench/run.sh once)" >&2; exit 1; }
done
BENCH=$ROOT/bench
REL=$ROOT/target/release
BIN=${BIN:-$REL/tollbu}
OUT=${SCRATCH:-/tmp/one-gateway}-$$
rm -rf "$OUT"
mkdir -p "$OUT/policies"
ulimit -n "$(ulimit -Hn)"
ISSUER="http://127.0.0.1:18070/"
sed -e "s|@OUT@|$OUT|g" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM_PORT@|18001|g" \
  -e "s|@TOLLBU_PORT@|18005|g" -e "s|@TOLLBU_ADMIN_PORT@|18095|g" "$BENCH/tollbu.toml.in" > "$OUT/tollbu.toml"
if [[ -n ${EXTRA_TOML:-} ]]; then printf '%b\n' "$EXTRA_TOML" >> "$OUT/tollbu.toml"; fi
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  "$ROOT/policies/population.toml" > "$OUT/policies/population.toml"
"$REL/examples/bench_issuer" 127.0.0.1:18070 > "$OUT/issuer.log" 2>&1 &
I=$!
"$REL/examples/bench_upstream" 127.0.0.1:18001 > "$OUT/up.log" 2>&1 &
U=$!
sleep 0.5
HT=
if [[ -n ${HEAPTRACK:-} ]]; then
  heaptrack -o "${HEAPTRACK_OUT:-$OUT/ht}" "$BIN" serve --config "$OUT/tollbu.toml" > "$OUT/gw.log" 2>&1 &
  HT=$!
else
  # shellcheck disable=SC2086 # GW_ENV is a list of NAME=value words
  env ${GW_ENV:-X=1} "$BIN" serve --config "$OUT/tollbu.toml" > "$OUT/gw.log" 2>&1 &
  G=$!
fi
trap 'kill $I $U ${G:-} $HT 2>/dev/null || true; sleep 0.5; rm -rf "$OUT"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18005) 2>/dev/null && break; sleep 0.2; done
if [[ -n $HT ]]; then G=$(pgrep -f "^$BIN serve" | head -1); fi
BENCH_TOKEN=$("$REL/tollbu" token --issuer "$ISSUER" --client-id demo-welfare \
  --key "$ROOT/certs-example/clients/demo-welfare.key.pem" --kid demo-welfare-1 --scope demo:population)
PERSON=$("$REL/examples/bench_upstream" 127.0.0.1:0 --print-body)
# shellcheck disable=SC2034 # read by the scripts that source this file
URL=http://127.0.0.1:18005/population/persons/$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
export BENCH_TOKEN BENCH_PURPOSE=benefit-assessment

# HTTP/1.1 at RATE requests a second in all for SECONDS, sent as bench/run.sh's `rate` scenario
# sends them (bench/rate-options.sh).
# shellcheck source=bench/rate-options.sh
source "$BENCH/rate-options.sh"
fixed_rate() { # rate seconds
  rate_options "$1" "$2"
  h2load "${RATE_OPTIONS[@]}" -H "authorization: Bearer $BENCH_TOKEN" -H "tollbu-purpose: $BENCH_PURPOSE" "$URL"
}
