#!/usr/bin/env bash
# Regenerates the shipped release build's two profiles of a serving gateway (scripts/build-release
# uses both; docs/BENCHMARKS.md, "Build profile", has what they give):
#   crates/proxy/pgo/tollbu.profdata  where the gateway spends its time, for profile-guided
#                                     optimisation (rustc -Cprofile-use): an instrumented build
#                                     serves the workload below and its counts are merged, sparse
#                                     (functions never run are left out, so they are compiled as
#                                     without a profile, not as cold code);
#   crates/proxy/link-order.txt       the functions that run, for lld's --symbol-ordering-file
#                                     (crates/proxy/build.rs): they are laid out together at the
#                                     start of .text, so the code the gateway touches shares few
#                                     pages instead of being spread over the whole binary.
#
# The workload is the bench gateway (bench/tollbu.toml.in plus a TLS listener) serving what a
# deployment serves: allowed reads over HTTP/1.1 at 50 and 1,000 connections, over HTTP/2, over
# TLS with both, refused ones, the admin endpoints. For the ordering it runs twice on the
# profile-optimised binary:
#   1. natively under `perf record`: the functions sampled, most samples first. This pass sees the
#      code this CPU runs (SHA-NI, AVX2/AVX-512 variants) that valgrind cannot emulate. It also
#      records page faults: a function whose first instruction fetch faulted lies outside the
#      current file's hot region (a rare path: a contended lock, a task dropped while running)
#      and follows the sampled ones, so each regeneration catches what the last one missed;
#   2. under valgrind's callgrind, which records every function executed, however rarely: the ones
#      pass 1 did not see follow, by instructions executed.
# Needs perf, valgrind, wrk, h2load, curl (Debian: linux-perf valgrind wrk nghttp2-client curl) and
# llvm-profdata (rustup component add llvm-tools).
#
#   bench/build-profile/collect.sh              # both profiles, then the release build with them
#   SKIP_BUILD=1 bench/build-profile/collect.sh # the ordering only, from target/release/tollbu
#
# Re-run it after a change of toolchain, dependencies or build settings, or of the request path:
# symbol names carry a hash of their crate's build and the profile a hash of each function's
# control flow. What no longer matches is skipped, so a stale profile costs speed, never the build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$ROOT/bench
REL=$ROOT/target/release
ORDER=$ROOT/crates/proxy/link-order.txt
PGO_PROFILE=$ROOT/crates/proxy/pgo/tollbu.profdata
for tool in perf valgrind wrk h2load curl; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
[[ -n ${SKIP_BUILD:-} || -x $PROFDATA ]] || { echo "needs llvm-profdata: rustup component add llvm-tools" >&2; exit 1; }

WORK=$(mktemp -d /tmp/build-profile.XXXXXX)
PGO_GENERATE=$ROOT/target/pgo-generate
if [[ -z ${SKIP_BUILD:-} ]]; then
  # The bench helpers first: built with the gateway, the examples' dev-dependencies would change
  # its dependencies' features and so its symbol names.
  (cd "$ROOT" && cargo build --release --locked -p tollbu-proxy --examples)
  (cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$WORK/pgo-raw" \
    cargo build --release --locked -p tollbu-proxy --target-dir "$PGO_GENERATE")
fi
mkdir -p "$WORK/policies"
ISSUER="http://127.0.0.1:18170/"
PORT=18105 ADMIN_PORT=18195 TLS_PORT=18106
sed -e "s|@OUT@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM_PORT@|18101|g" \
  -e "s|@TOLLBU_PORT@|$PORT|g" -e "s|@TOLLBU_ADMIN_PORT@|$ADMIN_PORT|g" "$BENCH/tollbu.toml.in" >"$WORK/tollbu.toml"
cat >>"$WORK/tollbu.toml" <<TOML

[gateway.tls]
listen = "127.0.0.1:$TLS_PORT"
cert = "$ROOT/certs-example/gateway.pem"
key = "$ROOT/certs-example/gateway.key.pem"
TOML
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  "$ROOT/policies/population.toml" >"$WORK/policies/population.toml"
ulimit -n "$(ulimit -Hn)"
G=
"$REL/examples/bench_issuer" 127.0.0.1:18170 >"$WORK/issuer.log" 2>&1 & I=$!
"$REL/examples/bench_upstream" 127.0.0.1:18101 >"$WORK/upstream.log" 2>&1 & U=$!
trap 'kill $I $U $G 2>/dev/null || true; rm -rf "$WORK"' EXIT
sleep 0.5
# Any build of the gateway can fetch the token; an instrumented one keeps this run's counts apart.
TOKEN_BIN=$REL/tollbu
[[ -x $TOKEN_BIN ]] || TOKEN_BIN=$PGO_GENERATE/release/tollbu
TOKEN=$(LLVM_PROFILE_FILE="$WORK/token.profraw" "$TOKEN_BIN" token --issuer "$ISSUER" --client-id demo-welfare \
  --key "$ROOT/certs-example/clients/demo-welfare.key.pem" --kid demo-welfare-1 --scope demo:population)
PERSON=$("$REL/examples/bench_upstream" 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
URL=http://127.0.0.1:$PORT/population/persons/$PID0
TLS_URL=https://127.0.0.1:$TLS_PORT/population/persons/$PID0
export BENCH_TOKEN=$TOKEN BENCH_PURPOSE=benefit-assessment
# The gateway runs with the container image's environment (Dockerfile `ENV`), as in bench/run.sh:
# the allocator's option parsing is code the image runs.
IMAGE_ENV=$(sed -n 's/^ENV //p' "$ROOT/Dockerfile")

status() { curl -s -o /dev/null -w '%{http_code} ' "$@"; }
serve_requests() { # seconds per load
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
  wrk -t2 -c50 -d"$1s" --timeout 30s -s "$BENCH/wrk.lua" "$URL" | grep -E 'Requests/sec'
  wrk -t2 -c1000 -d"$1s" --timeout 30s -s "$BENCH/wrk.lua" "$URL" | grep -E 'Requests/sec'
  h2load -t2 -c50 -m10 -D "$1" -H "tollbu-purpose: benefit-assessment" -H "accept: application/json" \
    -H "authorization: Bearer $TOKEN" "$URL" | grep -E '^requests:'
  # Over TLS (wrk and h2load do not check the demo certificate; ALPN picks HTTP/1.1 or h2).
  wrk -t2 -c50 -d"$1s" --timeout 30s -s "$BENCH/wrk.lua" "$TLS_URL" | grep -E 'Requests/sec'
  h2load -t2 -c50 -m10 -D "$1" -H "tollbu-purpose: benefit-assessment" -H "accept: application/json" \
    -H "authorization: Bearer $TOKEN" "$TLS_URL" | grep -E '^requests:'
  # Refused and failed requests: no token, a bad one, no purpose, an unknown service; the admin side.
  status "$URL"
  status -H "authorization: Bearer x.y.z" "$URL"
  status -H "authorization: Bearer $TOKEN" "$URL"
  status -H "authorization: Bearer $TOKEN" -H 'tollbu-purpose: benefit-assessment' "http://127.0.0.1:$PORT/nowhere/x"
  for path in /healthz /readyz /metrics /audit/checkpoint /audit/verifier-key "/audit/proof/inclusion?index=0&size=1"; do
    status "http://127.0.0.1:$ADMIN_PORT$path"
  done
  echo
  kill -TERM $G
  wait $G || true
}

if [[ -z ${SKIP_BUILD:-} ]]; then
  echo "pass 0: profile-guided optimisation, instrumented build"
  env $IMAGE_ENV "$PGO_GENERATE/release/tollbu" serve --config "$WORK/tollbu.toml" >"$WORK/gateway-pgo.log" 2>&1 & G=$!
  serve_requests 8
  mkdir -p "$(dirname "$PGO_PROFILE")"
  "$PROFDATA" merge --sparse -o "$PGO_PROFILE" "$WORK"/pgo-raw/*.profraw
  rustc -V >"$(dirname "$PGO_PROFILE")/rustc-version"
  "$ROOT/scripts/pgo-source-digest" >"$(dirname "$PGO_PROFILE")/source-digest"
  rm -rf "$WORK/audit"
  "$ROOT/scripts/build-release"
fi

echo "pass 1: perf"
env $IMAGE_ENV perf record -q -d -e cpu-clock/freq=9999/ -e page-faults/period=1/ -o "$WORK/perf.data" -- \
  "$REL/tollbu" serve --config "$WORK/tollbu.toml" >"$WORK/gateway-perf.log" 2>&1 & G=$!
serve_requests 5
perf script -i "$WORK/perf.data" -F event,addr,ip,sym,dso --no-demangle 2>/dev/null >"$WORK/perf.txt"
# tollbu's functions by cpu-clock samples, then those whose instruction fetch faulted (the fault
# address is the instruction pointer), in the order they faulted.
python3 - "$WORK/perf.txt" "$REL/tollbu" >"$WORK/sampled.txt" <<'PY'
import collections, re, sys
samples, faulted = collections.Counter(), []
for line in open(sys.argv[1], errors="replace"):
    event, _, rest = line.partition(":")
    event = event.strip()
    fields = re.findall(r"(\S+)\s+(\S+)\s+\((\S+)\)", rest)
    if event.startswith("cpu-clock") and fields and fields[-1][2] == sys.argv[2]:
        samples[fields[-1][1]] += 1
    elif event.startswith("page-faults") and len(fields) == 2:
        (addr, _, _), (ip, function, dso) = fields
        if addr == ip and dso == sys.argv[2] and function not in faulted:
            faulted.append(function)
for function in sorted(samples, key=lambda name: (-samples[name], name)) + faulted:
    print(function)
PY
rm -rf "$WORK/audit"

echo "pass 2: callgrind"
env $IMAGE_ENV valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$WORK/callgrind.out" "$REL/tollbu" serve --config "$WORK/tollbu.toml" \
  >"$WORK/gateway-callgrind.log" 2>&1 & G=$!
serve_requests 10

# Callgrind's self cost per function of the tollbu object. A `calls=` line is followed by the
# callee's inclusive cost, which is not this function's own; `'N` marks a recursion copy.
# Last come the names the previous file held that the binary still defines: a rare path found
# once (by a fault, which does not recur once the function sits in the hot region) stays in.
nm --defined-only "$REL/tollbu" | awk 'NF == 3 {print $3}' >"$WORK/defined.txt"
touch "$ORDER"
python3 - "$WORK/callgrind.out" "$REL/tollbu" "$WORK/sampled.txt" "$ORDER" "$WORK/defined.txt" >"$ORDER.tmp" <<'PY'
import collections, re, sys
out, binary, sampled, previous, defined = sys.argv[1:6]
cost = collections.Counter()
obj = fn = None
skip_next = False
for line in open(out, errors="replace"):
    if line.startswith("ob="):
        obj = line[3:].strip()
    elif line.startswith("fn="):
        fn = re.sub(r"'\d+$", "", line[3:].strip())
    elif line.startswith("calls="):
        skip_next = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if skip_next:
            skip_next = False
        elif obj == binary and fn:
            parts = line.split()
            if len(parts) >= 2:
                cost[fn] += int(parts[1])
seen = set()
names = [line.strip() for line in open(sampled)]
names += [name for name, _ in sorted(cost.items(), key=lambda item: (-item[1], item[0]))]
still_defined = set(line.strip() for line in open(defined))
names += [line.strip() for line in open(previous) if line.strip() in still_defined]
for name in names:
    if name and name not in seen and not name.startswith(("0x", "(", "[")):
        seen.add(name)
        print(name)
PY
mv "$ORDER.tmp" "$ORDER"
echo "$(wc -l <"$WORK/sampled.txt") functions sampled or faulted, $(wc -l <"$ORDER") in all written to $ORDER"
# The shipped build with the new order.
[[ -n ${SKIP_BUILD:-} ]] || "$ROOT/scripts/build-release"
