#!/usr/bin/env bash
# Load benchmark of `callbridge serve` (issue 4). One command, loopback only (127.0.0.1):
#
#   scripts/load-bench.sh     # ~6 min after the build (more while other processes keep the machine busy);
#                             # prints one result block at the end, exits non-zero only if a run failed
#
# It drives the same hook workload — receive a call payload, build a call-log body, POST it with
# a cached bearer token, extract the new id, answer — through three paths, with the same load
# generator (wrk -t2 -c32, a Lua script giving every request its own call_id):
#   1. the fake CRM directly: nginx answering canned JSON (`return 201 '{...}'`) on :18081;
#   2. an nginx reverse proxy (keepalive upstream) on :18082 in front of that fake CRM — the
#      ceiling for anything that sits in the middle on this machine;
#   3. `callbridge serve` on :18083 running bench/config (a shipped-style integration: OAuth
#      client-credentials token, savePreLogCRM → POST /calls, extract $.id) against the fake CRM;
#   and, for reference, examples/relay.rs on :18085: a minimal hand-written axum + reqwest relay
#   doing the same transformation with nothing declarative, durable or observable in it.
# Then: latency at a fixed 1,000 hooks/s (examples/loadgen.rs, open loop) direct vs callbridge;
# a cold-cache burst of 1,000 concurrent hooks on a fresh state file (token requests counted
# from /metrics and from nginx's log of /oauth/token); serve with 10,000 integrators (validate
# time, RSS). It prints PASS/MISS per target and exits non-zero only when a run failed
# (errors, wrong answers, a process died) — never because a target was missed.
#
# Environment (defaults in brackets):
#   RUNS [3]            repetitions of each wrk path (min/median/max are printed)
#   DURATION [10s]      each wrk run;  THREADS [2], CONNS [32]: wrk -t / -c
#   RATE [1000]         fixed-rate run (hooks/s), RATE_SECS [11] long, the first second left out
#   LOW_RATE [100]      also at this low rate (no queueing: the fixed cost of a hook), LOW_SECS [8]; 0 skips
#   BURST [1000]        cold-cache burst size
#   INTEGRATORS [10000] the RSS run; TENK_RATE [500] hooks/s for TENK_SECS [20] s spread over them
#   NGINX_WORKERS [auto] nginx worker_processes (auto = one per core)
#   MAX_CONCURRENT [4096] serve --max-concurrent (default 64 would answer most of the burst 429)
#   EXTRAS [1]          also measure getDataIframe (sync read) and the write path with RUST_LOG=warn
#   PROFILE [0]         1: an extra callbridge wrk run under `perf record` (cpu-clock, dwarf call
#                       graphs; needs DURATION in seconds, e.g. 10s); reports kept in the work dir
#   QUIET_WAIT [60]     before each run, wait up to this many seconds for other processes to go idle
#   KEEP [0]            1: keep the work directory (logs, wrk outputs, state files) even on success
#   SKIP_BUILD [0]      1: use the existing target/release binaries
#   BENCH_BIN           measure this callbridge binary instead of target/release/callbridge (e.g. a
#                       build of another commit, to compare); loadgen is still built here
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
RATE=${RATE:-1000}
RATE_SECS=${RATE_SECS:-11}
LOW_RATE=${LOW_RATE:-100}
LOW_SECS=${LOW_SECS:-8}
BURST=${BURST:-1000}
INTEGRATORS=${INTEGRATORS:-10000}
TENK_RATE=${TENK_RATE:-500}
TENK_SECS=${TENK_SECS:-20}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
MAX_CONCURRENT=${MAX_CONCURRENT:-4096}
EXTRAS=${EXTRAS:-1}
PROFILE=${PROFILE:-0}
QUIET_WAIT=${QUIET_WAIT:-60}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
CRM_PORT=18081
PROXY_PORT=18082
CB_PORT=18083
CB10K_PORT=18084
RELAY_PORT=18085
HOST=127.0.0.1
NCPU=$(nproc)
HZ=$(getconf CLK_TCK)

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "error: $*" >&2; exit 1; }

FAILED=()      # runs that failed (the exit status)
fail() { say "RUN FAILED: $*"; FAILED+=("$*"); }

# ── what it needs ─────────────────────────────────────────────────────────────────────────
need_install=()
command -v nginx >/dev/null 2>&1 || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
if ((${#need_install[@]})); then
  [ "$(id -u)" = 0 ] || die "needs ${need_install[*]}: run as root, or: sudo apt-get install -y ${need_install[*]}"
  say "installing ${need_install[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_install[@]}" >/dev/null
fi
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "PROFILE=1 needs perf (apt-get install linux-perf)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
fi

# 1,000 concurrent connections and 10,000 integrators need more than a 1,024-fd soft limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((BURST + 512)) ] || say "warning: open-file limit $(ulimit -n) is low for a burst of $BURST"

for p in $CRM_PORT $PROXY_PORT $CB_PORT $CB10K_PORT $RELAY_PORT; do
  if curl -s -o /dev/null --max-time 1 "http://$HOST:$p/"; then die "port $p is in use"; fi
done

# ── build ─────────────────────────────────────────────────────────────────────────────────
if [ "$SKIP_BUILD" != 1 ]; then
  say "building (cargo build --release; --example loadgen, --example relay)"
  [ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet
  cargo build --release --quiet --example loadgen --example relay
fi
WORK=$(mktemp -d /tmp/load-bench.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/nginx"
# Copies: a rebuild of target/ during the run does not change what is measured.
cp "${BENCH_BIN:-target/release/callbridge}" "$WORK/bin/callbridge"
cp target/release/examples/loadgen "$WORK/bin/loadgen"
cp target/release/examples/relay "$WORK/bin/relay"
BIN=$WORK/bin/callbridge
LOADGEN=$WORK/bin/loadgen
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
DIRTY=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
[ "$DIRTY" = 0 ] || REV="$REV+local changes in src ($DIRTY files)"
[ -z "${BENCH_BIN:-}" ] || REV="BENCH_BIN=$BENCH_BIN"
REV="$REV, binary sha256 $(sha256sum "$BIN" | cut -c1-12)"

# ── processes ─────────────────────────────────────────────────────────────────────────────
NGINX_PID=""
SERVE_PID=""
RELAY_PID=""
cleanup() {
  local rc=$?
  for pid in $SERVE_PID $RELAY_PID $NGINX_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $SERVE_PID $RELAY_PID $NGINX_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || [ "$PROFILE" = 1 ] || [ $rc != 0 ] || ((${#FAILED[@]})); then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL [CURL-ARGS…]: until it answers 2xx (60 s).
wait_http() {
  local url=$1; shift
  for _ in $(seq 600); do
    if curl -sf -o /dev/null --max-time 1 "$@" "$url"; then return 0; fi
    sleep 0.1
  done
  return 1
}

start_nginx() {
  sed -e "s#@PREFIX@#$WORK/nginx#g" -e "s/@CRM_PORT@/$CRM_PORT/g" -e "s/@PROXY_PORT@/$PROXY_PORT/g" \
    -e "s/@WORKERS@/$NGINX_WORKERS/g" bench/nginx.conf.in > "$WORK/nginx/nginx.conf"
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' \
    > "$WORK/nginx/stdout.log" 2>&1 &
  NGINX_PID=$!
  wait_http "http://$HOST:$CRM_PORT/calls" -X POST || die "nginx did not start: $(cat "$WORK/nginx/error.log")"
  wait_http "http://$HOST:$PROXY_PORT/calls" -X POST || die "the nginx proxy does not answer"
}

# start_serve NAME CONFIG STATE PORT [ENV=VALUE…]: callbridge serve in the background.
start_serve() {
  local name=$1 config=$2 state=$3 port=$4; shift 4
  local t0; t0=$(date +%s.%N)
  env "$@" "$BIN" --config "$config" --state "$state" serve --listen "$HOST:$port" \
    --max-concurrent "$MAX_CONCURRENT" > "$WORK/$name.out" 2> "$WORK/$name.log" &
  SERVE_PID=$!
  wait_http "http://$HOST:$port/readyz" || die "callbridge serve ($name) did not get ready: $(tail -5 "$WORK/$name.log")"
  READY_S=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
}

stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=""
}

alive() { kill -0 "$1" 2>/dev/null; }

# ── measuring helpers ─────────────────────────────────────────────────────────────────────
# CPU ticks (user+system) of processes and their children threads.
ticks_of() {
  local t=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$t"
}
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }
# Machine-wide busy ticks (user, nice, system, irq, softirq; not steal or idle).
sys_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# Wait until the machine is idle (≤ 15 % busy over a second) for up to QUIET_WAIT s: other
# jobs on the machine would take CPU from the runs. The run goes ahead anyway, and each run
# reports the CPU others used during it.
wait_quiet() {
  local waited=0 b0 b1 pct
  while :; do
    b0=$(sys_busy); sleep 1; b1=$(sys_busy)
    pct=$(( (b1 - b0) * 100 / (HZ * NCPU) ))
    [ "$pct" -le 15 ] && return 0
    waited=$((waited + 1))
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      say "  machine still ${pct}% busy after ${QUIET_WAIT}s (other processes); running anyway"
      return 0
    fi
    [ $((waited % 10)) = 1 ] && say "  machine ${pct}% busy (other processes); waiting for it to go idle"
  done
}

# metric BASE_URL 'name{labels}': a Prometheus sample's value (0 when absent).
metric() {
  curl -s --max-time 5 "$1/metrics" | awk -v k="$2" 'index($0, k " ") == 1 { print $NF; f = 1 } END { if (!f) print 0 }'
}

# wrk's latencies (…us, …ms, …s) in ms.
to_ms() { awk '{ v = $1 + 0; u = $1; sub(/^[0-9.]+/, "", u);
  if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000; printf "%.3f\n", v }'; }

RESULTS=$WORK/results.tsv   # label rep rps p50 p99 max requests bad server_cpu_us/req wrk_cpu% other_cpu%
: > "$RESULTS"

# run_wrk LABEL URL KEY REP [KIND]: one wrk run; KIND write|read checks callbridge's metrics.
run_wrk() {
  local label=$1 url=$2 key=$3 rep=$4 kind=${5:-}
  local out=$WORK/wrk-$label-$rep.txt base="http://$HOST:$CB_PORT"
  [ "${NO_QUIET_WAIT:-0}" = 1 ] || wait_quiet
  # The process measured besides nginx: callbridge (write/read), the relay (relay), none.
  local own=""
  case "$kind" in write|read) own=$SERVE_PID ;; relay) own=$RELAY_PID ;; esac
  local m0=0 c0=0
  if [ "$kind" = write ]; then
    m0=$(metric "$base" 'callbridge_deliveries_total{integrator="bench",hook="savePreLogCRM",outcome="delivered"}')
    c0=$(metric "$base" 'callbridge_crm_request_seconds_count{integrator="bench",endpoint="create_call"}')
  elif [ "$kind" = read ]; then
    m0=$(metric "$base" 'callbridge_hooks_total{integrator="bench",hook="getDataIframe",outcome="ok"}')
  fi
  local cb0 ng0 sb0 t0 rc=0
  cb0=$( [ -n "$own" ] && ticks_of "$own" || echo 0 )
  ng0=$(ticks_of $(nginx_pids))
  sb0=$(sys_busy)
  t0=$(date +%s%N)
  TIMEFORMAT='%3U %3S'
  { time BENCH_RUN="$label-$rep-$$" BENCH_KEY="$key" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
      -s bench/wrk-hook.lua "$url" > "$out" 2>&1; } 2> "$out.cpu" || rc=$?
  local elapsed_ticks sb1 cb1 ng1
  elapsed_ticks=$(( ($(date +%s%N) - t0) * HZ / 1000000000 ))
  sb1=$(sys_busy); ng1=$(ticks_of $(nginx_pids))
  cb1=$( [ -n "$own" ] && ticks_of "$own" || echo 0 )
  sleep 0.3   # deliveries answered as wrk stopped are recorded
  local rps p50 p99 max reqs non2xx sockerr
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  p50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
  p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
  max=$(awk '$1 == "Latency" && $2 != "Distribution" { print $4; exit }' "$out" | to_ms)
  reqs=$(awk '/ requests in / { print $1 }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out"); non2xx=${non2xx:-0}
  sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out"); sockerr=${sockerr:-0}
  local wrk_ticks server_ticks other_ticks
  wrk_ticks=$(awk '{ printf "%d", ($1 + $2) * '"$HZ"' }' "$out.cpu" 2>/dev/null || echo 0)
  server_ticks=$((cb1 - cb0 + ng1 - ng0))
  other_ticks=$(( (sb1 - sb0) - (cb1 - cb0) - (ng1 - ng0) - wrk_ticks ))
  [ "$other_ticks" -ge 0 ] || other_ticks=0
  local cpu_us wrk_pct other_pct
  cpu_us=$(awk -v t="$server_ticks" -v n="${reqs:-0}" -v hz="$HZ" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
  wrk_pct=$(awk -v t="$wrk_ticks" -v e="$elapsed_ticks" -v c="$NCPU" 'BEGIN { printf "%.0f", e ? 100 * t / (e * c) : 0 }')
  other_pct=$(awk -v t="$other_ticks" -v e="$elapsed_ticks" -v c="$NCPU" 'BEGIN { printf "%.0f", e ? 100 * t / (e * c) : 0 }')
  local bad=$((non2xx + sockerr))
  local note=""
  if [ "$kind" = write ]; then
    local m1 c1
    m1=$(metric "$base" 'callbridge_deliveries_total{integrator="bench",hook="savePreLogCRM",outcome="delivered"}')
    c1=$(metric "$base" 'callbridge_crm_request_seconds_count{integrator="bench",endpoint="create_call"}')
    note=" delivered=$((m1 - m0)) crm_creates=$((c1 - c0))"
    if [ $((m1 - m0)) -lt "${reqs:-0}" ] || [ $((c1 - c0)) -lt "${reqs:-0}" ]; then
      fail "$label run $rep: $reqs answers but only $((m1 - m0)) delivered / $((c1 - c0)) CRM creates"
    fi
  elif [ "$kind" = read ]; then
    local m1; m1=$(metric "$base" 'callbridge_hooks_total{integrator="bench",hook="getDataIframe",outcome="ok"}')
    note=" hooks_ok=$((m1 - m0))"
    [ $((m1 - m0)) -ge "${reqs:-0}" ] || fail "$label run $rep: $reqs answers but only $((m1 - m0)) hooks ok"
  fi
  if [ $rc != 0 ] || [ -z "$rps" ] || [ "${reqs:-0}" = 0 ]; then
    fail "$label run $rep: wrk exited $rc ($(tail -2 "$out" | tr '\n' ' '))"
  elif [ "$bad" != 0 ]; then
    fail "$label run $rep: $non2xx non-2xx answers, $sockerr socket errors"
  fi
  if [ -n "$own" ] && ! alive "$own"; then fail "$label run $rep: the server under test died"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rep" "$rps" "$p50" "$p99" "$max" "$reqs" "$bad" \
    "$cpu_us" "$wrk_pct" "$other_pct" >> "$RESULTS"
  say "  $label #$rep: ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  max ${max} ms  ($reqs requests, $bad errors;" \
    "server CPU ${cpu_us} µs/req, wrk ${wrk_pct}% / others ${other_pct}% of the ${NCPU} cores)$note"
}

# min median max of the numbers on stdin.
stats() { sort -g | awk '{ a[NR] = $1 } END { if (!NR) { print "- - -"; exit }
  m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print a[1], m, a[NR] }'; }
col() { awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$RESULTS"; }
med() { col "$1" "$2" | stats | awk '{ print $2 }'; }

# run_loadgen NAME ARGS…: one loadgen run; its summary line in $WORK/lg-NAME.txt, followed by
# the CPU accounting (server_us=… µs of serve + nginx CPU per request, loadgen_pct=…, others_pct=…).
run_loadgen() {
  local name=$1; shift
  local rc=0 sb0 sv0 sv1 sb1 t0 el lg_ticks others
  sv0=$(ticks_of $SERVE_PID $(nginx_pids)); sb0=$(sys_busy); t0=$(date +%s%N)
  TIMEFORMAT='%3U %3S'
  { time "$LOADGEN" "$@" > "$WORK/lg-$name.txt" 2> "$WORK/lg-$name.err"; } 2> "$WORK/lg-$name.time" || rc=$?
  el=$(( ($(date +%s%N) - t0) * HZ / 1000000000 ))
  sv1=$(ticks_of $SERVE_PID $(nginx_pids)); sb1=$(sys_busy)
  lg_ticks=$(awk '{ printf "%d", ($1 + $2) * '"$HZ"' }' "$WORK/lg-$name.time" 2>/dev/null || echo 0)
  others=$(( sb1 - sb0 - (sv1 - sv0) - lg_ticks )); [ "$others" -ge 0 ] || others=0
  awk -v sv="$((sv1 - sv0))" -v lg="$lg_ticks" -v o="$others" -v e="$el" -v c="$NCPU" -v hz="$HZ" \
    -v n="$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' "$WORK/lg-$name.txt")" \
    'BEGIN { printf " server_us=%.0f loadgen_pct=%.0f others_pct=%.0f\n", n ? sv * 1e6 / hz / n : 0, e ? 100 * lg / (e * c) : 0, e ? 100 * o / (e * c) : 0 }' \
    >> "$WORK/lg-$name.txt"
  say "  $name: $(tr -d '\n' < "$WORK/lg-$name.txt")"
  if [ $rc != 0 ]; then fail "loadgen $name: exit $rc ($(tail -c 300 "$WORK/lg-$name.err"; cat "$WORK/lg-$name.txt"))"; fi
}
lg() { tr '\n' ' ' < "$WORK/lg-$1.txt" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB (%.1f MB)", k / 1024, k * 1024 / 1e6 }'; }

# ── 1. the three paths under wrk ──────────────────────────────────────────────────────────
say "work directory $WORK; callbridge $REV"
say "starting nginx (fake CRM :$CRM_PORT, proxy :$PROXY_PORT, worker_processes $NGINX_WORKERS)"
start_nginx
NGINX_WORKER_COUNT=$(pgrep -P "$NGINX_PID" | wc -l)
say "starting callbridge serve :$CB_PORT (bench/config) and the hand-written relay :$RELAY_PORT"
start_serve serve bench/config "$WORK/state.db" "$CB_PORT"
"$WORK/bin/relay" --listen "$HOST:$RELAY_PORT" --crm "http://$HOST:$CRM_PORT/calls" > "$WORK/relay.log" 2>&1 &
RELAY_PID=$!
RELAY=http://$HOST:$RELAY_PORT/hook
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://$HOST:$RELAY_PORT/" && break; sleep 0.1; done

DIRECT=http://$HOST:$CRM_PORT/calls
PROXY=http://$HOST:$PROXY_PORT/calls
CB_WRITE=http://$HOST:$CB_PORT/v1/integrators/bench/hooks/savePreLogCRM
CB_READ=http://$HOST:$CB_PORT/v1/integrators/bench/hooks/getDataIframe

say "warm-up (3 s per path; callbridge fetches and caches its token here)"
for u in "$DIRECT bench-token" "$PROXY bench-token" "$RELAY bench-token" "$CB_WRITE bench-key"; do
  set -- $u
  BENCH_RUN="warm-$$" BENCH_KEY=$2 wrk -t"$THREADS" -c"$CONNS" -d3s -s bench/wrk-hook.lua "$1" > "$WORK/wrk-warmup.txt" 2>&1 \
    || fail "warm-up of $1: $(tail -2 "$WORK/wrk-warmup.txt")"
done

say "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $RUNS runs per path, paths interleaved"
for rep in $(seq "$RUNS"); do
  run_wrk direct "$DIRECT" bench-token "$rep"
  run_wrk proxy "$PROXY" bench-token "$rep"
  run_wrk relay "$RELAY" bench-token "$rep" relay
  run_wrk callbridge "$CB_WRITE" bench-key "$rep" write
done
kill -TERM "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; RELAY_PID=""
if [ "$EXTRAS" = 1 ]; then
  say "extra: getDataIframe (synchronous read: GET /contacts with the cached token, answer what it found)"
  for rep in $(seq "$RUNS"); do run_wrk callbridge-read "$CB_READ" bench-key "$rep" read; done
fi

if [ "$PROFILE" = 1 ]; then
  say "profile: perf record (cpu-clock, dwarf call graphs) of serve during one more write run"
  wait_quiet
  ( sleep 1; perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$SERVE_PID" -o "$WORK/perf.data" \
      -- sleep "$(( ${DURATION%s} - 2 ))" > "$WORK/perf-record.log" 2>&1 ) &
  prof=$!
  NO_QUIET_WAIT=1 run_wrk callbridge-profiled "$CB_WRITE" bench-key 1 write
  wait "$prof" || true
  perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null | head -80 > "$WORK/perf-report.txt" || true
  perf report -i "$WORK/perf.data" --stdio --children --sort symbol -g none --percent-limit 1 2>/dev/null \
    > "$WORK/perf-report-children.txt" || true
fi

# ── 2. fixed rate: latency added at RATE hooks/s ──────────────────────────────────────────
say "fixed rate: $RATE hooks/s for $RATE_SECS s (open loop, first second left out), direct / proxy / callbridge"
wait_quiet
run_loadgen rate-direct --url "$DIRECT" --key bench-token --rate "$RATE" --duration "$RATE_SECS" --warmup 1 --prefix "rd-$$"
wait_quiet
run_loadgen rate-proxy --url "$PROXY" --key bench-token --rate "$RATE" --duration "$RATE_SECS" --warmup 1 --prefix "rp-$$"
wait_quiet
run_loadgen rate-callbridge --url "$CB_WRITE" --key bench-key --rate "$RATE" --duration "$RATE_SECS" --warmup 1 --prefix "rc-$$"
if [ "$LOW_RATE" != 0 ]; then
  say "low rate: $LOW_RATE hooks/s for $LOW_SECS s (no queueing), direct / callbridge"
  wait_quiet
  run_loadgen low-direct --url "$DIRECT" --key bench-token --rate "$LOW_RATE" --duration "$LOW_SECS" --warmup 1 --prefix "ld-$$"
  wait_quiet
  run_loadgen low-callbridge --url "$CB_WRITE" --key bench-key --rate "$LOW_RATE" --duration "$LOW_SECS" --warmup 1 --prefix "lc-$$"
fi

MAIN_HWM=$(hwm_kb "$SERVE_PID")
MAIN_RSS=$(rss_kb "$SERVE_PID")
MAIN_TOKENS_METRIC=$(metric "http://$HOST:$CB_PORT" 'callbridge_token_requests_total{integrator="bench"}')
MAIN_TOKENS_LOG=$(wc -l < "$WORK/nginx/token.log" 2>/dev/null || echo 0)
MAIN_DEAD=$(metric "http://$HOST:$CB_PORT" 'callbridge_deliveries_dead{}')
MAIN_LOG_BYTES=$(stat -c %s "$WORK/serve.log")
MAIN_DB_BYTES=$(du -cb "$WORK"/state.db* | tail -1 | cut -f1)
alive "$SERVE_PID" || fail "callbridge serve died"
stop_serve

if [ "$EXTRAS" = 1 ]; then
  say "extra: the write path again with RUST_LOG=warn (no per-request log lines), same state file"
  start_serve serve-quiet bench/config "$WORK/state.db" "$CB_PORT" RUST_LOG=warn
  BENCH_RUN="warmq-$$" BENCH_KEY=bench-key wrk -t"$THREADS" -c"$CONNS" -d2s -s bench/wrk-hook.lua "$CB_WRITE" > /dev/null 2>&1 || true
  for rep in $(seq "$RUNS"); do run_wrk callbridge-warnlog "$CB_WRITE" bench-key "$rep" write; done
  stop_serve
fi

# ── 3. cold-cache burst ───────────────────────────────────────────────────────────────────
say "cold-cache burst: $BURST concurrent hooks, fresh state file (no cached token)"
start_serve serve-burst bench/config "$WORK/state-burst.db" "$CB_PORT"
wait_quiet
TOK_LOG0=$(wc -l < "$WORK/nginx/token.log" 2>/dev/null || echo 0)
run_loadgen burst --url "$CB_WRITE" --key bench-key --burst "$BURST" --prefix "burst-$$"
sleep 0.5
BURST_TOKENS_METRIC=$(metric "http://$HOST:$CB_PORT" 'callbridge_token_requests_total{integrator="bench"}')
BURST_TOKENS_LOG=$(( $(wc -l < "$WORK/nginx/token.log") - TOK_LOG0 ))
BURST_DELIVERED=$(metric "http://$HOST:$CB_PORT" 'callbridge_deliveries_total{integrator="bench",hook="savePreLogCRM",outcome="delivered"}')
BURST_HWM=$(hwm_kb "$SERVE_PID")
alive "$SERVE_PID" || fail "callbridge serve died in the burst"
stop_serve

# ── 4. 10,000 integrators ─────────────────────────────────────────────────────────────────
say "$INTEGRATORS integrators: generating, validating, serving, $((TENK_RATE * TENK_SECS)) hooks spread over them"
TENK=$WORK/config-$INTEGRATORS
mkdir -p "$TENK/integrators"
cp -r bench/config/templates bench/config/endpoints "$TENK/"
awk -v n="$INTEGRATORS" -v dir="$TENK/integrators" -v port="$CRM_PORT" 'BEGIN {
  for (i = 1; i <= n; i++) {
    f = sprintf("%s/bench-%05d.yaml", dir, i)
    printf "# Generated by scripts/load-bench.sh from bench/config/integrators/bench.yaml.\n" > f
    printf "id: bench-%05d\nintegration: bench-crm\ncallcenterId: cc-%05d\nhost: 127.0.0.1:%d\nscheme: http\n", i, i, port > f
    printf "description: Load-benchmark tenant %d\n", i > f
    printf "fields:\n  client_id: bench-client-%05d\n  client_secret: bench-secret-%05d\n  default_region: VN\n", i, i > f
    printf "apiKeys: [ \"bench-key-%05d\" ]\n", i > f
    close(f)
  }
}'
TIMEFORMAT='%3R'
VALIDATE_RC=0
{ time "$BIN" validate "$TENK" > "$WORK/validate-10k.txt" 2>&1; } 2> "$WORK/validate-10k.time" || VALIDATE_RC=$?
VALIDATE_S=$(cat "$WORK/validate-10k.time")
[ $VALIDATE_RC = 0 ] || fail "validate of $INTEGRATORS integrators: exit $VALIDATE_RC ($(tail -3 "$WORK/validate-10k.txt"))"
start_serve serve-10k "$TENK" "$WORK/state-10k.db" "$CB10K_PORT"
TENK_READY_S=$READY_S
sleep 1
TENK_IDLE_RSS=$(rss_kb "$SERVE_PID")
TENK_TOK_LOG0=$(wc -l < "$WORK/nginx/token.log")
wait_quiet
run_loadgen tenk --url "http://$HOST:$CB10K_PORT/v1/integrators/bench-{n}/hooks/savePreLogCRM" --key "bench-key-{n}" \
  --spread "$INTEGRATORS" --rate "$TENK_RATE" --duration "$TENK_SECS" --prefix "tenk-$$"
sleep 0.5
TENK_HWM=$(hwm_kb "$SERVE_PID")
TENK_RSS=$(rss_kb "$SERVE_PID")
TENK_TOKENS_LOG=$(( $(wc -l < "$WORK/nginx/token.log") - TENK_TOK_LOG0 ))
TENK_INTEGRATORS=$(curl -s "http://$HOST:$CB10K_PORT/readyz" | sed -n 's/.*"integrators":\([0-9]*\).*/\1/p')
alive "$SERVE_PID" || fail "callbridge serve died with $INTEGRATORS integrators"
stop_serve

# ── report ────────────────────────────────────────────────────────────────────────────────
mark() { if [ "$1" = 1 ]; then echo PASS; else echo MISS; fi; }
row() { # LABEL TITLE
  local l=$1 t=$2 r p9 n
  n=$(col "$l" 3 | wc -l)
  [ "$n" -gt 0 ] || return 0
  r=$(col "$l" 3 | stats); p9=$(col "$l" 5 | stats)
  printf '  %-34s %8.0f %8.0f %8.0f   %7.3f   %7.3f %7.3f %7.3f   %8.3f   %6.0f   %3.0f%% %3.0f%%\n' "$t" $r \
    "$(med "$l" 4)" $p9 "$(med "$l" 6)" "$(med "$l" 9)" "$(med "$l" 10)" "$(med "$l" 11)"
}
D_RPS=$(med direct 3); P_RPS=$(med proxy 3); C_RPS=$(med callbridge 3); H_RPS=$(med relay 3)
RATIO=$(awk -v c="$C_RPS" -v p="$P_RPS" 'BEGIN { printf "%.3f", p ? c / p : 0 }')
H_RATIO=$(awk -v c="$H_RPS" -v p="$P_RPS" 'BEGIN { printf "%.3f", p ? c / p : 0 }')
CH_RATIO=$(awk -v c="$C_RPS" -v h="$H_RPS" 'BEGIN { printf "%.3f", h ? c / h : 0 }')
R_RPS=$(med callbridge-read 3)
R_RATIO=$(awk -v c="$R_RPS" -v p="$P_RPS" 'BEGIN { printf "%.3f", p ? c / p : 0 }')
ADD50=$(awk -v c="$(med callbridge 4)" -v d="$(med direct 4)" 'BEGIN { printf "%+.3f", c - d }')
ADD99=$(awk -v c="$(med callbridge 5)" -v d="$(med direct 5)" 'BEGIN { printf "%+.3f", c - d }')
R_ADD50=$(awk -v c="$(lg rate-callbridge p50_ms)" -v d="$(lg rate-direct p50_ms)" 'BEGIN { printf "%+.3f", c - d }')
R_ADD99=$(awk -v c="$(lg rate-callbridge p99_ms)" -v d="$(lg rate-direct p99_ms)" 'BEGIN { printf "%+.3f", c - d }')
T_TPUT=$(awk -v r="$RATIO" 'BEGIN { print (r >= 0.35) ? 1 : 0 }')
T_STRETCH=$(awk -v r="$RATIO" 'BEGIN { print (r >= 0.5) ? 1 : 0 }')
T_LAT=$(awk -v a="$R_ADD99" -v ok="$(lg rate-callbridge ok)" -v s="$(lg rate-callbridge sent)" \
  'BEGIN { print (a <= 1.0 && ok == s && s > 0) ? 1 : 0 }')
T_BURST=$([ "$BURST_TOKENS_METRIC" = 1 ] && [ "$BURST_TOKENS_LOG" = 1 ] && [ "$(lg burst ok)" = "$BURST" ] && echo 1 || echo 0)
T_RSS=$(awk -v k="$TENK_HWM" 'BEGIN { print (k * 1024 <= 150e6) ? 1 : 0 }')

{
echo
echo "================================ callbridge load benchmark ================================"
echo "when:      $(date -u +%Y-%m-%dT%H:%M:%SZ)   callbridge $REV"
echo "machine:   $NCPU cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), loopback only"
echo "nginx:     $(nginx -v 2>&1 | sed 's/.*\///'), worker_processes $NGINX_WORKERS ($NGINX_WORKER_COUNT workers), keepalive upstream (64), access_log off except /oauth/token"
echo "generator: wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }') -t$THREADS -c$CONNS -d$DURATION --latency, bench/wrk-hook.lua (a distinct call_id per request), $RUNS runs per path, paths interleaved."
echo "           The same generator drives the three paths; it shares the $NCPU cores with the server under test"
echo "           (its CPU share is the 'wrk' column), so every path pays the same tax and the comparison is fair."
echo "serve:     --max-concurrent $MAX_CONCURRENT (raised from 64: the 1,000-hook burst would be answered 429); other limits at"
echo "           their defaults (--workers 32 ≥ 32 connections, --body-limit 256 KiB ≫ the 390-byte payload, --wait-timeout 10s);"
echo "           logs at the default level (info: 2 lines per write hook) to a file; SQLite WAL, synchronous=NORMAL."
echo
echo "throughput and latency under wrk (closed loop, $CONNS connections)"
echo "                                     hooks/s (req/s)               p50 ms    p99 ms                      max ms    server   wrk  others"
echo "  path                                  min   median      max   median      min  median     max      median   µs CPU/req  CPU   CPU"
row direct "1 fake CRM direct (nginx)"
row proxy "2 nginx proxy → fake CRM"
row relay "  reference: hand-written relay"
row callbridge "3 callbridge serve (write, sync)"
row callbridge-read "  extra: getDataIframe (sync read)"
row callbridge-warnlog "  extra: write, RUST_LOG=warn"
row callbridge-profiled "  extra: write under perf record"
echo "  (server µs CPU/req: nginx's CPU for paths 1–2; the relay's or callbridge's + nginx's for those; 'others' = CPU used by other processes during the run)"
echo
echo "  ratio callbridge ÷ proxy (median hooks/s):   $C_RPS ÷ $P_RPS = $RATIO   (getDataIframe: $R_RPS ÷ $P_RPS = $R_RATIO)"
echo "  ratio hand-written relay ÷ proxy:            $H_RPS ÷ $P_RPS = $H_RATIO;   callbridge ÷ relay = $CH_RATIO"
echo "  callbridge added latency under wrk (median): p50 $ADD50 ms, p99 $ADD99 ms (callbridge − direct)"
echo
echo "fixed rate: $RATE hooks/s for $RATE_SECS s, open loop (examples/loadgen.rs), first second left out"
for n in direct proxy callbridge; do
  printf '  %-11s sent %6s  ok %6s  achieved %7s/s   p50 %7s ms   p99 %8s ms   p99.9 %8s ms   max %8s ms   server %4s µs CPU/req, others %3s%% CPU\n' "$n" \
    "$(lg rate-$n sent)" "$(lg rate-$n ok)" "$(lg rate-$n achieved_rps)" "$(lg rate-$n p50_ms)" "$(lg rate-$n p99_ms)" \
    "$(lg rate-$n p999_ms)" "$(lg rate-$n max_ms)" "$(lg rate-$n server_us)" "$(lg rate-$n others_pct)"
done
echo "  callbridge added latency at $RATE/s: p50 $R_ADD50 ms, p99 $R_ADD99 ms"
if [ "$LOW_RATE" != 0 ]; then
  echo "  at $LOW_RATE/s for $LOW_SECS s (no queueing: what one hook costs):"
  for n in direct callbridge; do
    printf '  %-11s sent %6s  ok %6s  p50 %7s ms   p99 %8s ms   max %8s ms   server %4s µs CPU/req, others %3s%% CPU\n' "$n" \
      "$(lg low-$n sent)" "$(lg low-$n ok)" "$(lg low-$n p50_ms)" "$(lg low-$n p99_ms)" "$(lg low-$n max_ms)" \
      "$(lg low-$n server_us)" "$(lg low-$n others_pct)"
  done
  echo "  callbridge added latency at $LOW_RATE/s: p50 $(awk -v c="$(lg low-callbridge p50_ms)" -v d="$(lg low-direct p50_ms)" 'BEGIN { printf "%+.3f", c - d }') ms," \
       "p99 $(awk -v c="$(lg low-callbridge p99_ms)" -v d="$(lg low-direct p99_ms)" 'BEGIN { printf "%+.3f", c - d }') ms"
fi
echo
echo "callbridge serve (the runs above)"
echo "  token requests: $MAIN_TOKENS_METRIC (callbridge_token_requests_total), $MAIN_TOKENS_LOG (nginx /oauth/token log)"
echo "  peak RSS (VmHWM): $(mib "$MAIN_HWM"); RSS at the end $(mib "$MAIN_RSS"); dead deliveries $MAIN_DEAD"
echo "  its log: $MAIN_LOG_BYTES bytes; state file: $MAIN_DB_BYTES bytes (with -wal/-shm)"
echo
echo "cold-cache burst: $BURST concurrent hooks at once, fresh state file"
echo "  answered 2xx: $(lg burst ok)/$BURST (statuses $(lg burst statuses)), delivered $BURST_DELIVERED;" \
     "all answered in $(lg burst elapsed_s) s; latency p50 $(lg burst p50_ms) ms, p99 $(lg burst p99_ms) ms, max $(lg burst max_ms) ms"
echo "  token requests: $BURST_TOKENS_METRIC (callbridge_token_requests_total), $BURST_TOKENS_LOG (nginx /oauth/token log); peak RSS $(mib "$BURST_HWM")"
echo
echo "$INTEGRATORS integrators (generated from bench/config/integrators/bench.yaml)"
echo "  callbridge validate: $VALIDATE_S s ($(head -1 "$WORK/validate-10k.txt"))"
echo "  serve: ready in ${TENK_READY_S} s with $TENK_INTEGRATORS integrators; RSS idle $(mib "$TENK_IDLE_RSS")"
echo "  load: $(lg tenk sent) hooks at $TENK_RATE/s over all integrators (each fetches its token): ok $(lg tenk ok)," \
     "p50 $(lg tenk p50_ms) ms, p99 $(lg tenk p99_ms) ms, max $(lg tenk max_ms) ms; token requests (nginx log) $TENK_TOKENS_LOG"
echo "  peak RSS (VmHWM) $(mib "$TENK_HWM"); RSS at the end $(mib "$TENK_RSS")"
echo
echo "targets (2 cores, loopback, $CONNS connections)"
echo "  [$(mark "$T_TPUT")] throughput through serve ≥ 0.35 × nginx proxy: ${RATIO} ×   (stretch 0.5 ×: $(mark "$T_STRETCH"))"
echo "  [$(mark "$T_LAT")] added latency p99 ≤ 1 ms at $RATE hooks/s: $R_ADD99 ms"
echo "  [$(mark "$T_BURST")] exactly 1 token request for the cold burst of $BURST: metrics $BURST_TOKENS_METRIC, nginx log $BURST_TOKENS_LOG, $(lg burst ok)/$BURST answered"
echo "  [$(mark "$T_RSS")] serve with $INTEGRATORS integrators ≤ 150 MB RSS: VmHWM $(mib "$TENK_HWM")"
echo
if [ "$PROFILE" = 1 ]; then
  echo "profile of serve during the 'write under perf record' run: $WORK/perf-report.txt (self time),"
  echo "  $WORK/perf-report-children.txt (inclusive); data $WORK/perf.data (perf report -i …)"
  echo
fi
echo "runs (label, run, req/s, p50 ms, p99 ms, max ms, requests, errors, server µs CPU/req, wrk CPU %, others CPU %):"
sed 's/^/  /' "$RESULTS"
if ((${#FAILED[@]})); then
  echo
  echo "FAILED RUNS (${#FAILED[@]}):"
  printf '  %s\n' "${FAILED[@]}"
else
  echo "all runs completed without errors"
fi
echo "============================================================================================"
} | tee "$WORK/summary.txt"

((${#FAILED[@]} == 0))
