#!/usr/bin/env bash
# Load benchmark: Tollbu beside nginx and HAProxy, on 127.0.0.1 only (issue 7).
# Not part of CI. See docs/BENCHMARKS.md for what it measures and how to read it.
#
#   bench/run.sh                 # install, build, 3 interleaved rounds of 10 s per server and scenario
#   ROUNDS=5 DURATION=15 bench/run.sh
#   SKIP_INSTALL=1 SKIP_BUILD=1 SCENARIOS="c50" bench/run.sh
#   SKIP_INSTALL=1 SKIP_BUILD=1 SCENARIOS=rate RATE=20000 bench/run.sh
#   SKIP_INSTALL=1 SKIP_BUILD=1 TARGETS=tollbu SCENARIOS=c1000 TOLLBU_BIN=/tmp/tollbu-old bench/run.sh
#                                # another build of the gateway (e.g. an older commit) serves instead
#   KEEP_AUDIT=1 bench/run.sh    # keep the run's audit logs (removed once verified otherwise)
#
# Scenarios: c50 and c1000 (wrk, as many requests as each server answers), h2 (h2load over h2c,
# 50 connections x 10 streams), rate (h2load over HTTP/1.1 at RATE requests/s in all, default
# 10,000, spread over 50 connections: every server gets the same load, so latencies compare
# servers rather than their throughput).
#
# Servers (every one started here is stopped on exit):
#   upstream   crates/proxy/examples/bench_upstream.rs: a fixed ~1 KiB JSON person record
#   nginx      nginx 1.22, plain reverse proxy, upstream keep-alive
#   haproxy    HAProxy 2.6, RS256 jwt_verify (issuer PEM key) + alg/iss/exp checks, then proxy
#   plain      crates/proxy/examples/bench_plain_proxy.rs: Tollbu's listener + forwarding, no auth
#   tollbu     target/release/tollbu serve: token, policy, rate limit, minimisation, fsync'd audit
#   relaxed    diagnostic only: the same gateway with `durability = "relaxed"` (fsync every 100 ms),
#              to show what the per-batch fsync costs; not a configuration the targets are judged on
# Raw output goes to bench/out/<timestamp>/ (git-ignored); summary: bench/summarise.py.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/rate-options.sh
source "$BENCH/rate-options.sh"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$BENCH/out/$STAMP}
# Absolute, because nginx and HAProxy resolve paths from their own prefix.
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-"c50 c1000 h2 rate"}
RATE=${RATE:-10000}
if ! [[ $RATE =~ ^[0-9]+$ ]] || ((RATE < 50)); then
  echo "RATE=$RATE: requests per second in all, a whole number of at least 50 (one a second per connection)" >&2
  exit 2
fi
TARGETS=${TARGETS:-"upstream nginx haproxy plain tollbu relaxed"}
H2_TARGETS=${H2_TARGETS:-"nginx plain tollbu"}
WRK_THREADS=${WRK_THREADS:-2}

UPSTREAM_PORT=18001 NGINX_PORT=18002 NGINX_H2_PORT=18012 HAPROXY_PORT=18003
PLAIN_PORT=18004 TOLLBU_PORT=18005 TOLLBU_ADMIN_PORT=18095 ISSUER_PORT=18070
RELAXED_PORT=18006 RELAXED_ADMIN_PORT=18096
ISSUER="http://127.0.0.1:$ISSUER_PORT/"
PURPOSE=benefit-assessment

mkdir -p "$OUT"/{raw,nginx/tmp,haproxy,policies,logs}
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }

# --- install and build ------------------------------------------------------
if [[ -z ${SKIP_INSTALL:-} ]]; then
  need=()
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >"$OUT/logs/apt.log"
  fi
fi
if [[ -z ${SKIP_BUILD:-} ]]; then
  log "building (release)"
  # The bench helpers, then the gateway as the container image builds it (scripts/build-release:
  # with the profile in crates/proxy/pgo/). Apart: built together, the examples' dev-dependencies
  # would change the gateway's dependency features, hence its symbol names, and neither the profile
  # nor crates/proxy/link-order.txt would match (docs/BENCHMARKS.md, "Build profile").
  (cd "$ROOT" && cargo build --release --locked -p tollbu-proxy --examples && scripts/build-release) \
    >"$OUT/logs/build.log" 2>&1
fi
REL=$ROOT/target/release
for bin in "$REL/tollbu" "$REL/examples/bench_upstream" "$REL/examples/bench_plain_proxy" "$REL/examples/bench_issuer"; do
  [[ -x $bin ]] || { echo "missing $bin (build first)" >&2; exit 1; }
done

ulimit -n "$(ulimit -Hn)"  # 1,000 client + 1,000 upstream connections per proxy need > 2,000

# --- start servers ------------------------------------------------------------
declare -A PID
PIDS_STARTED=()
cleanup() {
  local p
  for p in "${PIDS_STARTED[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 1
  for p in "${PIDS_STARTED[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1" >&2
  return 1
}
fill() { # template output
  sed -e "s|@OUT@|$OUT|g" -e "s|@ROOT@|$ROOT|g" -e "s|@ISSUER@|$ISSUER|g" \
    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@NGINX_H2_PORT@|$NGINX_H2_PORT|g" -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" \
    -e "s|@TOLLBU_PORT@|$TOLLBU_PORT|g" -e "s|@TOLLBU_ADMIN_PORT@|$TOLLBU_ADMIN_PORT|g" "$1" >"$2"
}
start() { # name port command...
  local name=$1 port=$2
  shift 2
  "$@" >"$OUT/logs/$name.out" 2>"$OUT/logs/$name.err" &
  PID[$name]=$!
  PIDS_STARTED+=("$!")
  wait_port "$port"
  log "started $name (pid ${PID[$name]}) on 127.0.0.1:$port"
}

start issuer $ISSUER_PORT "$REL/examples/bench_issuer" "127.0.0.1:$ISSUER_PORT"
start upstream $UPSTREAM_PORT "$REL/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT"

# Config files.
fill "$BENCH/nginx.conf.in" "$OUT/nginx/nginx.conf"
fill "$BENCH/haproxy.cfg.in" "$OUT/haproxy/haproxy.cfg"
fill "$BENCH/tollbu.toml.in" "$OUT/tollbu.toml"
sed -e "s|127.0.0.1:$TOLLBU_PORT|127.0.0.1:$RELAXED_PORT|; s|127.0.0.1:$TOLLBU_ADMIN_PORT|127.0.0.1:$RELAXED_ADMIN_PORT|" \
  -e "s|$OUT/audit|$OUT/audit-relaxed|; s|durability = \"fsync\"|durability = \"relaxed\"|" \
  "$OUT/tollbu.toml" >"$OUT/tollbu-relaxed.toml"
openssl pkey -in "$ROOT/certs-example/issuer-signing.key.pem" -pubout -out "$OUT/haproxy/issuer.pub.pem"
# The example population policy with the welfare grant's 600/min limit raised
# so it never triggers (the limiter still runs on every request).
sed -e 's/rate_limit = { requests = 600, per_seconds = 60 }/rate_limit = { requests = 1000000000, per_seconds = 60 }/' \
  "$ROOT/policies/population.toml" >"$OUT/policies/population.toml"
grep -q 'requests = 1000000000' "$OUT/policies/population.toml"

start nginx $NGINX_PORT nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
start haproxy $HAPROXY_PORT haproxy -db -f "$OUT/haproxy/haproxy.cfg"
start plain $PLAIN_PORT "$REL/examples/bench_plain_proxy" "127.0.0.1:$PLAIN_PORT" "http://127.0.0.1:$UPSTREAM_PORT"
# The gateway runs with the environment its container image sets (Dockerfile `ENV`).
IMAGE_ENV=$(sed -n 's/^ENV //p' "$ROOT/Dockerfile")
TOLLBU_BIN=${TOLLBU_BIN:-$REL/tollbu}
start tollbu $TOLLBU_PORT env $IMAGE_ENV "$TOLLBU_BIN" serve --config "$OUT/tollbu.toml"
if [[ " $TARGETS " == *" relaxed "* ]]; then
  start relaxed $RELAXED_PORT env $IMAGE_ENV "$TOLLBU_BIN" serve --config "$OUT/tollbu-relaxed.toml"
fi

TOKEN=$("$REL/tollbu" token --issuer "$ISSUER" --client-id demo-welfare \
  --key "$ROOT/certs-example/clients/demo-welfare.key.pem" --kid demo-welfare-1 --scope demo:population)
PERSON=$("$REL/examples/bench_upstream" 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
PATH_=/population/persons/$PID0
declare -A URL=(
  [upstream]="http://127.0.0.1:$UPSTREAM_PORT$PATH_"
  [nginx]="http://127.0.0.1:$NGINX_PORT$PATH_"
  [haproxy]="http://127.0.0.1:$HAPROXY_PORT$PATH_"
  [plain]="http://127.0.0.1:$PLAIN_PORT$PATH_"
  [tollbu]="http://127.0.0.1:$TOLLBU_PORT$PATH_"
  [relaxed]="http://127.0.0.1:$RELAXED_PORT$PATH_"
)
declare -A H2URL=(
  [nginx]="http://127.0.0.1:$NGINX_H2_PORT$PATH_"
  [plain]="http://127.0.0.1:$PLAIN_PORT$PATH_"
  [tollbu]="http://127.0.0.1:$TOLLBU_PORT$PATH_"
)
needs_token() { [[ $1 == haproxy || $1 == tollbu || $1 == relaxed ]]; }

# --- pre-flight: every target answers 200 with the record; auth is enforced ---
AUTH=(-H "Authorization: Bearer $TOKEN" -H "Tollbu-Purpose: $PURPOSE")
for t in $TARGETS; do
  code=$(curl -s -o "$OUT/raw/preflight-$t.json" -w '%{http_code}' "${AUTH[@]}" "${URL[$t]}")
  [[ $code == 200 ]] || { echo "preflight $t: HTTP $code" >&2; cat "$OUT/raw/preflight-$t.json" >&2; exit 1; }
  log "preflight $t: 200, $(wc -c <"$OUT/raw/preflight-$t.json") bytes"
done
# A token whose signature differs in one character well inside the signature.
BAD_TOKEN=$(python3 -c 'import sys; t=sys.argv[1]; i=len(t)-20; print(t[:i] + ("B" if t[i] != "B" else "C") + t[i+1:])' "$TOKEN")
for t in haproxy tollbu; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Tollbu-Purpose: $PURPOSE" "${URL[$t]}")
  [[ $code == 401 ]] || { echo "preflight $t without token: HTTP $code, expected 401" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BAD_TOKEN" -H "Tollbu-Purpose: $PURPOSE" "${URL[$t]}")
  [[ $code == 401 ]] || { echo "preflight $t with a tampered token: HTTP $code, expected 401" >&2; exit 1; }
done
python3 - "$OUT/raw/preflight-tollbu.json" <<'EOF'
import json, sys
body = json.load(open(sys.argv[1]))
assert set(body) <= {"name", "address", "marital_status"}, body.keys()
EOF
log "preflight: auth enforced by haproxy and tollbu; tollbu minimises the record to name, address, marital_status"

# --- measurement helpers ------------------------------------------------------
pids_of() { # name -> the process and its children (nginx workers)
  local p=${PID[$1]}
  echo "$p"
  pgrep -P "$p" || true
}
cpu_ticks() { # name -> utime+stime of the process tree, in clock ticks
  local sum=0 p f
  for p in $(pids_of "$1"); do
    # fields after the ")" of the command name: 14=utime 15=stime overall
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo "$sum"
}
status_kib() { # name field -> sum of VmHWM/VmRSS (KiB) over the tree
  local sum=0 p v
  for p in $(pids_of "$1"); do
    v=$(awk -v k="$2:" '$1==k {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)

record() { # scenario target round rawfile tool cpu_ticks
  python3 "$BENCH/summarise.py" parse "$5" "$4" \
    --scenario "$1" --target "$2" --round "$3" --cpu-ticks "$6" --clk-tck "$CLK_TCK" \
    --hwm-kib "$(status_kib "$2" VmHWM)" --rss-kib "$(status_kib "$2" VmRSS)" \
    --load "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/results.jsonl"
}

run_wrk() { # scenario target round conns seconds
  local raw="$OUT/raw/$1-$2-r$3.txt" before after tok=""
  needs_token "$2" && tok=$TOKEN
  before=$(cpu_ticks "$2")
  BENCH_TOKEN=$tok BENCH_PURPOSE=$PURPOSE wrk -t"$WRK_THREADS" -c"$4" -d"$5s" --timeout 10s --latency \
    -s "$BENCH/wrk.lua" "${URL[$2]}" >"$raw" 2>&1 || true
  after=$(cpu_ticks "$2")
  [[ $3 == warmup ]] && return 0
  record "$1" "$2" "$3" "$raw" wrk $((after - before))
  log "$1 $2 round $3: $(tail -1 "$OUT/results.jsonl" | python3 "$BENCH/summarise.py" brief)"
}

run_h2load() { # scenario target round url h2load-options...
  local raw="$OUT/raw/$1-$2-r$3.txt" reqlog="$OUT/raw/$1-$2-r$3.reqlog" before after url=$4
  local args=("${@:5}" -H "tollbu-purpose: $PURPOSE" -H "accept: application/json")
  needs_token "$2" && args+=(-H "authorization: Bearer $TOKEN")
  before=$(cpu_ticks "$2")
  h2load "${args[@]}" --log-file="$reqlog" "$url" >"$raw" 2>&1 || true
  after=$(cpu_ticks "$2")
  if [[ $3 == warmup ]]; then rm -f "$reqlog"; return 0; fi
  python3 "$BENCH/summarise.py" reqlog "$reqlog" >>"$raw"
  rm -f "$reqlog"
  record "$1" "$2" "$3" "$raw" h2load $((after - before))
  log "$1 $2 round $3: $(tail -1 "$OUT/results.jsonl" | python3 "$BENCH/summarise.py" brief)"
}
run_h2() { run_h2load "$1" "$2" "$3" "${H2URL[$2]}" -t2 -c50 -m10 -D "$4"; } # scenario target round seconds
# HTTP/1.1 at a fixed rate (scenario target round seconds); the load's shape: bench/rate-options.sh.
run_rate() {
  rate_options "$RATE" "$4"
  run_h2load "$1" "$2" "$3" "${URL[$2]}" "${RATE_OPTIONS[@]}"
}

rotate() { # round list... -> list rotated by round, so no server always runs first
  local r=$1
  shift
  local a=("$@") n=$# i
  for ((i = 0; i < n; i++)); do echo "${a[$(((i + r) % n))]}"; done
}

# --- profile mode: PROFILE=tollbu bench/run.sh -------------------------------------
# Samples the named server with perf (cpu-clock: hardware counters are not
# available in this VM) during one wrk run (PROFILE_CONNS connections, default
# 50), and writes flat and call-graph reports; no load rounds.
if [[ -n ${PROFILE:-} ]]; then
  PROFILE_CONNS=${PROFILE_CONNS:-50}
  run_wrk warmup "$PROFILE" warmup "$PROFILE_CONNS" 2
  perf record -e cpu-clock -F "${PERF_FREQ:-499}" --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" \
    -o "$OUT/perf-$PROFILE.data" -p "${PID[$PROFILE]}" -- sleep "$((DURATION + 1))" \
    >"$OUT/logs/perf.log" 2>&1 &
  perf_pid=$!
  sleep 0.5
  run_wrk profile "$PROFILE" 1 "$PROFILE_CONNS" "$DURATION"
  wait "$perf_pid" || true
  perf report -i "$OUT/perf-$PROFILE.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -v '^$' | grep -E '^ +[0-9]' | head -80 >"$OUT/profile-$PROFILE-flat.txt" || true
  perf report -i "$OUT/perf-$PROFILE.data" --children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | head -150 >"$OUT/profile-$PROFILE-inclusive.txt" || true
  log "profile written to $OUT/profile-$PROFILE-{flat,inclusive}.txt"
  exit 0
fi

# --- environment record ---------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo
  grep MemTotal /proc/meminfo
  echo "kernel: $(uname -r)"
  echo "uptime: $(uptime)"
  nginx -v 2>&1
  haproxy -v 2>&1 | head -1 || true
  wrk -v 2>&1 | head -1 || true
  h2load --version || true
  rustc --version
  echo "rounds: $ROUNDS  duration: ${DURATION}s  scenarios: $SCENARIOS  targets: $TARGETS  h2: $H2_TARGETS  rate: $RATE req/s"
  echo "tollbu commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) $(cd "$ROOT" && git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
  echo "gateway environment (from the Dockerfile): $IMAGE_ENV"
  echo "binaries built: $(date -u -r "$REL/tollbu" +%FT%TZ) (tollbu), $(date -u -r "$REL/examples/bench_plain_proxy" +%FT%TZ) (bench_plain_proxy)"
} >"$OUT/environment.txt"

# --- warm-up: connection pools, JWKS, page cache ----------------------------------
for t in $TARGETS; do run_wrk warmup "$t" warmup 50 2; done

# --- interleaved rounds ------------------------------------------------------------
for scenario in $SCENARIOS; do
  for ((r = 1; r <= ROUNDS; r++)); do
    case $scenario in
      c50) for t in $(rotate "$r" $TARGETS); do run_wrk c50 "$t" "$r" 50 "$DURATION"; done ;;
      c1000) for t in $(rotate "$r" $TARGETS); do run_wrk c1000 "$t" "$r" 1000 "$DURATION"; done ;;
      h2)
        if [[ $r == 1 ]]; then for t in $H2_TARGETS; do run_h2 warmup "$t" warmup 2; done; fi
        for t in $(rotate "$r" $H2_TARGETS); do run_h2 h2 "$t" "$r" "$DURATION"; done
        ;;
      rate) for t in $(rotate "$r" $TARGETS); do run_rate rate "$t" "$r" "$DURATION"; done ;;
    esac
  done
  for t in $TARGETS; do
    echo "$scenario $t VmHWM_kib=$(status_kib "$t" VmHWM) VmRSS_kib=$(status_kib "$t" VmRSS)"
  done >>"$OUT/memory.txt"
done
echo "uptime at end: $(uptime)" >>"$OUT/environment.txt"

# Stop the gateway (it flushes and writes a final checkpoint); its audit log must verify.
kill -TERM "${PID[tollbu]}" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "${PID[tollbu]}" 2>/dev/null || break; sleep 0.1; done
"$REL/tollbu" audit verify "$OUT/audit" >"$OUT/logs/audit-verify.txt" 2>&1 || log "audit verify FAILED (see logs/audit-verify.txt)"
log "audit verify: $(tail -1 "$OUT/logs/audit-verify.txt")"
# At these rates a run's audit logs reach 5-6 GiB; once verified they are removed (their size is
# kept), unless KEEP_AUDIT=1 asks to keep them for a closer look.
if [[ ${KEEP_AUDIT:-0} != 1 ]]; then
  if [[ -n ${PID[relaxed]:-} ]]; then
    kill -TERM "${PID[relaxed]}" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "${PID[relaxed]}" 2>/dev/null || break; sleep 0.1; done
  fi
  for dir in "$OUT/audit" "$OUT/audit-relaxed"; do
    [[ -d $dir ]] || continue
    echo "$(du -sh "$dir" | cut -f1) $(basename "$dir") (removed after verify; KEEP_AUDIT=1 keeps it)" >>"$OUT/logs/audit-size.txt"
    rm -rf "$dir"
  done
fi

python3 "$BENCH/summarise.py" table "$OUT/results.jsonl" | tee "$OUT/summary.md"
log "raw output in $OUT"
