#!/usr/bin/env bash
# The realtime-service benchmark, one command from the repository root:
#
#     bash bench/run.sh               # everything below (~2 min once built)
#     bash bench/run.sh transports    # only part 3 (~1 min once built)
#     bash bench/run.sh pool          # only part 4 (~1 min once built; needs redis-server)
#
# Builds release, starts the fake identity-service (bench_identity) and the service on
# free loopback ports, and drives signed connect requests from a separate process (loadgen):
#   1. the same load straight to the fake identity-service over gRPC ("direct"), then
#      through the service ("service"), at BENCH_CONCURRENCY in flight (throughput and
#      latency under load), and again at BENCH_LATENCY_CONCURRENCY (unloaded latency);
#   2. degraded mode: a second instance whose identity-service address is a closed port,
#      with a generated fallback pool; once /health says degraded, pool tickets are driven
#      at both concurrencies;
#   3. transports: connect over HTTP and over gRPC (CentrifugoProxy/Connect) through one
#      instance that authenticates both (CENTRIFUGO_PROXY_AUTH=static_header), and through
#      the pass-through reference (bench/passthrough.rs: the same Validate call with nothing
#      around it), at BENCH_CONCURRENCY, in BENCH_TRANSPORT_ROUNDS rounds (medians). A build
#      without a gRPC listener is reported as "gRPC: not served by this build".
#   4. pool (issue 8): degraded-mode connect with FALLBACK_LEDGER=memory vs redis (a private
#      redis-server on a free port), publish with the per-replica vs the shared (Redis)
#      limiter, each at BENCH_CONCURRENCY in flight; the same with redis-server frozen
#      (SIGSTOP: the breaker decides without it), and the write-back of the claims made
#      meanwhile once it answers again; then loading 100k and 1M tickets
#      (examples/pool_load: time and peak RSS).
# Prints throughput, p50/p99, the service's CPU time per request, peak RSS, and a summary.
# Everything listens on 127.0.0.1 and every run is bounded in time; all processes started
# here are stopped on exit. bench/README.md explains each figure.
#
# Environment (all optional):
#   BENCH_CONCURRENCY=16          requests in flight for the throughput runs
#   BENCH_SECONDS=5               measured seconds per throughput run
#   BENCH_LATENCY_CONCURRENCY=1   requests in flight for the unloaded-latency runs
#   BENCH_LATENCY_SECONDS=3       measured seconds per unloaded-latency run
#   BENCH_WARMUP_SECONDS=1        warm-up before each measured run (same connections)
#   BENCH_POOL_TICKETS=600000     fallback pool size for the degraded runs (a third is kept
#                                 for the unloaded run; a run that uses up its share ends early)
#   BENCH_CLIENT=raw              loadgen HTTP client: raw (minimal HTTP/1.1) | reqwest
#   BENCH_TRANSPORT_ROUNDS=3      rounds of the transports comparison (the order of the
#                                 three paths rotates per round; the table shows medians)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIO=${1:-all}
case $SCENARIO in
  all | transports | pool) ;;
  *) echo "usage: bash bench/run.sh [all|transports|pool]" >&2; exit 2 ;;
esac

C=${BENCH_CONCURRENCY:-16}
D=${BENCH_SECONDS:-5}
C_LAT=${BENCH_LATENCY_CONCURRENCY:-1}
D_LAT=${BENCH_LATENCY_SECONDS:-3}
WARMUP=${BENCH_WARMUP_SECONDS:-1}
POOL_TICKETS=${BENCH_POOL_TICKETS:-600000}
CLIENT=${BENCH_CLIENT:-raw}
ROUNDS=${BENCH_TRANSPORT_ROUNDS:-3}
# The degraded-mode instance: the window must be >= the Validate deadline (startup check).
WINDOW_MS=2500
DEADLINE_MS=2500

for v in C D C_LAT D_LAT WARMUP POOL_TICKETS ROUNDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "run.sh: $v=${!v} must be a whole number" >&2; exit 2; }
done
(( D <= 60 && D_LAT <= 60 && WARMUP <= 10 )) || { echo "run.sh: keep runs short (seconds <= 60, warm-up <= 10)" >&2; exit 2; }
(( POOL_TICKETS >= 2000 )) || { echo "run.sh: BENCH_POOL_TICKETS must be >= 2000" >&2; exit 2; }
(( ROUNDS >= 1 && ROUNDS <= 9 )) || { echo "run.sh: BENCH_TRANSPORT_ROUNDS must be 1..9" >&2; exit 2; }

TARGET=${CARGO_TARGET_DIR:-target}/release
SERVICE_BIN=$TARGET/realtime-service
LOADGEN=$TARGET/examples/loadgen
IDENTITY_BIN=$TARGET/examples/bench_identity
PASSTHROUGH_BIN=$TARGET/examples/passthrough
POOL_LOAD_BIN=$TARGET/examples/pool_load
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/realtime-bench.XXXXXX")
STARTED_PIDS=()

cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    # Give each a moment to exit cleanly, then insist.
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '\n### %s\n' "$*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

# field LINE NAME: the value of NAME=... in a RESULT line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

free_port() { "$LOADGEN" free-port; }

wait_ready() { # PID PORT NAME LOGFILE
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || { cat "$4" >&2; die "$3 exited during startup"; }
    curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$4" >&2
  die "$3 not ready on port $2 after 10 s"
}

# wait_listening PID OUTFILE ERRFILE NAME: the address a helper prints as "listening <addr>".
wait_listening() {
  local addr
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^listening //p' "$2")
    [[ -n $addr ]] && { echo "$addr"; return 0; }
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; die "$4 exited during startup"; }
    sleep 0.1
  done
  die "$4 did not report its address within 10 s"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

health() { curl -fsS "http://127.0.0.1:$1/health"; }

peak_rss() { # PID -> "VmHWM kB" of the process (peak resident set)
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# loadgen wrapper: runs, echoes the report, stores the RESULT line in $RESULT.
RESULT=
load() {
  local out
  out=$("$LOADGEN" "$@" --clk-tck "$CLK_TCK") || { echo "$out"; die "loadgen $1 failed"; }
  echo "$out" | grep -v '^RESULT '
  RESULT=$(grep '^RESULT ' <<<"$out")
}

start_service() { # NAME PORT LOGFILE ENV...
  local name=$1 port=$2 logfile=$3
  shift 3
  env LISTEN_HOST=127.0.0.1 LISTEN_PORT="$port" \
    CENTRIFUGO_PROXY_AUTH=hmac CENTRIFUGO_PROXY_SECRET="$SECRET" \
    LOG_LEVEL=warn SHUTDOWN_DRAIN_DELAY_MS=0 OTEL_SDK_DISABLED=true \
    "$@" "$SERVICE_BIN" serve >"$logfile" 2>&1 &
  SERVICE_PID=$!
  STARTED_PIDS+=("$SERVICE_PID")
  wait_ready "$SERVICE_PID" "$port" "$name" "$logfile"
}

# ---------------------------------------------------------------------------------------
log "build (release)"
cargo build --release --bin realtime-service --example loadgen --example bench_identity --example passthrough \
  --example pool_load

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), CLK_TCK=$CLK_TCK"
echo "settings: concurrency $C for ${D}s, latency concurrency $C_LAT for ${D_LAT}s, warm-up ${WARMUP}s, client $CLIENT"

SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')

# ---------------------------------------------------------------------------------------
log "start fake identity-service and the service"
"$IDENTITY_BIN" --listen 127.0.0.1:0 >"$WORK/identity.out" 2>"$WORK/identity.err" &
IDENTITY_PID=$!
STARTED_PIDS+=("$IDENTITY_PID")
IDENTITY_ADDR=$(wait_listening "$IDENTITY_PID" "$WORK/identity.out" "$WORK/identity.err" bench_identity)
echo "fake identity-service: $IDENTITY_ADDR (pid $IDENTITY_PID)"

# ---------------------------------------------------------------------------------------
# Part 3, a function because `transports` runs it alone.
transports() {
  log "transports: connect over HTTP and gRPC through the service, and the pass-through; $C in flight, ${D}s each, $ROUNDS round(s)"
  local http_port grpc_port svc_pid pt_pid pt_addr grpc=
  http_port=$(free_port)
  grpc_port=$(free_port)
  # static_header for both transports: the gRPC listener accepts no HMAC, and both paths
  # must pay for authentication.
  start_service transports "$http_port" "$WORK/transports.log" \
    IDENTITY_VALIDATE_GRPC_ADDRESS="$IDENTITY_ADDR" IDENTITY_VALIDATE_DEADLINE_MS=$DEADLINE_MS \
    CENTRIFUGO_PROXY_AUTH=static_header GRPC_PROXY_LISTEN_PORT="$grpc_port"
  svc_pid=$SERVICE_PID
  # Ready on HTTP does not promise the gRPC listener is bound yet: allow it 2 s more.
  for _ in $(seq 1 20); do
    port_open "$grpc_port" && { grpc=yes; break; }
    sleep 0.1
  done
  echo "service: HTTP 127.0.0.1:$http_port, gRPC ${grpc:+127.0.0.1:$grpc_port}${grpc:-not served by this build} (pid $svc_pid)"

  "$PASSTHROUGH_BIN" --listen 127.0.0.1:0 --identity "$IDENTITY_ADDR" --deadline-ms "$DEADLINE_MS" \
    >"$WORK/passthrough.out" 2>"$WORK/passthrough.err" &
  pt_pid=$!
  STARTED_PIDS+=("$pt_pid")
  pt_addr=$(wait_listening "$pt_pid" "$WORK/passthrough.out" "$WORK/passthrough.err" passthrough)
  echo "pass-through: $pt_addr (pid $pt_pid)"

  # The same request bytes to both HTTP targets (the pass-through ignores the secret), so
  # only the server side differs. The first --pid is the server under test.
  local common=(--concurrency "$C" --seconds "$D" --warmup "$WARMUP" --secret "$SECRET" --auth static_header)
  local -a r_http=() r_grpc=() r_pt=()
  local round path
  for ((round = 0; round < ROUNDS; round++)); do
    # Rotate the order so no path always runs first (or last) on a drifting machine.
    local order=(http grpc passthrough)
    order=("${order[@]:round % 3}" "${order[@]:0:round % 3}")
    for path in "${order[@]}"; do
      case $path in
        http)
          load http --url "http://127.0.0.1:$http_port/centrifugo/connect" --client "$CLIENT" "${common[@]}" \
            --label "http-r$round" --pid service="$svc_pid" --pid identity="$IDENTITY_PID"
          r_http+=("$RESULT") ;;
        grpc)
          [[ -n $grpc ]] || continue
          load grpc-connect --addr "127.0.0.1:$grpc_port" "${common[@]}" \
            --label "grpc-r$round" --pid service="$svc_pid" --pid identity="$IDENTITY_PID"
          r_grpc+=("$RESULT") ;;
        passthrough)
          load http --url "http://$pt_addr/centrifugo/connect" --client "$CLIENT" "${common[@]}" \
            --label "passthrough-r$round" --pid passthrough="$pt_pid" --pid identity="$IDENTITY_PID"
          r_pt+=("$RESULT") ;;
      esac
    done
  done

  log "transports summary: medians of $ROUNDS round(s), $C in flight"
  # med FIELD RESULT...: the median of FIELD over the RESULT lines (the lower middle one).
  med() {
    local f=$1
    shift
    for r in "$@"; do field "$r" "$f"; done | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
  }
  printf '%-22s %8s %8s %8s %8s %14s %14s %7s %7s\n' \
    path inflight req/s p50_ms p99_ms server_cpu_us identity_cpu_us errors other%
  trow() { # NAME RESULT...
    local name=$1
    shift
    printf '%-22s %8s %8.0f %8.3f %8.3f %14s %14s %7s %7s\n' "$name" "$C" "$(med rps "$@")" \
      "$(calc "$(med p50_us "$@") / 1000" 3)" "$(calc "$(med p99_us "$@") / 1000" 3)" \
      "$(med cpu_us_per_req "$@")" "$(med cpu_us_per_req_identity "$@")" "$(med errors "$@")" "$(med other_cpu_pct "$@")"
  }
  trow "HTTP via service" "${r_http[@]}"
  if [[ -n $grpc ]]; then trow "gRPC via service" "${r_grpc[@]}"; else echo "gRPC: not served by this build"; fi
  trow "pass-through (HTTP)" "${r_pt[@]}"
  echo "server_cpu_us: utime+stime of the server under test (the service, or the pass-through) per request."
  local http_cpu pt_cpu
  http_cpu=$(med cpu_us_per_req "${r_http[@]}")
  pt_cpu=$(med cpu_us_per_req "${r_pt[@]}")
  local ratio
  ratio=$(calc "$http_cpu / $pt_cpu" 2)
  echo "HTTP connect CPU per request / pass-through: $ratio (target <= 1.15: $(verdict "$ratio <= 1.15"))"
  if [[ -n $grpc ]]; then
    ratio=$(calc "$(med cpu_us_per_req "${r_grpc[@]}") / $http_cpu" 2)
    echo "gRPC connect CPU per request / HTTP: $ratio (target <= 1.00: $(verdict "$ratio <= 1.00"))"
    echo "gRPC throughput / HTTP: $(calc "$(med rps "${r_grpc[@]}") / $(med rps "${r_http[@]}")" 2)"
  else
    echo "gRPC connect CPU per request / HTTP: - (gRPC: not served by this build)"
  fi
  echo "HTTP throughput / pass-through: $(calc "$(med rps "${r_http[@]}") / $(med rps "${r_pt[@]}")" 2)"
  # The same ratios per round (paths measured within seconds of each other), then their
  # median: slow drift of a shared machine moves both sides of a round together.
  paired() { # A-RESULTS B-RESULTS (names of arrays)
    local -n a=$1 b=$2
    local i
    for i in "${!a[@]}"; do
      calc "$(field "${a[$i]}" cpu_us_per_req) / $(field "${b[$i]}" cpu_us_per_req)" 3
      echo
    done | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f (rounds %.2f-%.2f)", v[int((NR + 1) / 2)], v[1], v[NR] }'
  }
  echo "per-round CPU ratios, median: HTTP / pass-through $(paired r_http r_pt)${grpc:+; gRPC / HTTP $(paired r_grpc r_http)}"
  echo "note: $(nproc) shared cores run the load generator, the server and the fake together; compare ratios, not absolutes."
}
verdict() { awk "BEGIN { print (($1) ? \"met\" : \"NOT met\") }"; }

# Part 4, a function because `pool` runs it alone.
pool() {
  command -v redis-server >/dev/null || die "the pool scenario needs redis-server (apt-get install redis-server)"
  local redis_port redis_pid mem_port redis_ledger_port local_port shared_port closed_port quick=300 n
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  redis_pid=$!
  STARTED_PIDS+=("$redis_pid")
  for _ in $(seq 1 100); do port_open "$redis_port" && break; sleep 0.1; done
  port_open "$redis_port" || die "redis-server did not listen on $redis_port"
  local redis_url="redis://127.0.0.1:$redis_port"
  echo "redis-server: 127.0.0.1:$redis_port (pid $redis_pid)"

  log "pool: degraded-mode connect, memory ledger vs Redis ledger; $C in flight, ${D}s each"
  n=$((POOL_TICKETS / 2))
  od -An -tx1 -v -w16 -N $((POOL_TICKETS * 16)) /dev/urandom | tr -d ' ' >"$WORK/pool4.txt"
  head -n "$n" "$WORK/pool4.txt" >"$WORK/pool4-memory.txt"
  tail -n +$((n + 1)) "$WORK/pool4.txt" >"$WORK/pool4-redis.txt"
  closed_port=$(free_port)
  # A window as short as the deadline: degraded right after the first failed call.
  local degraded_env=(IDENTITY_VALIDATE_GRPC_ADDRESS="127.0.0.1:$closed_port" FALLBACK_TICKETS_PATH="$WORK/pool4.txt"
    FALLBACK_DEGRADED_WINDOW_MS=$quick IDENTITY_VALIDATE_DEADLINE_MS=$quick FALLBACK_LOW_WATERMARK=0
    FALLBACK_RELOAD_INTERVAL_S=0)
  mem_port=$(free_port)
  start_service pool-memory "$mem_port" "$WORK/pool-memory.log" "${degraded_env[@]}" FALLBACK_LEDGER=memory
  local mem_pid=$SERVICE_PID
  redis_ledger_port=$(free_port)
  start_service pool-redis "$redis_ledger_port" "$WORK/pool-redis.log" "${degraded_env[@]}" FALLBACK_LEDGER=redis \
    REDIS_URL="$redis_url" REDIS_KEY_PREFIX="bench-$$:"
  local redis_ledger_pid=$SERVICE_PID
  local port
  for port in "$mem_port" "$redis_ledger_port"; do
    "$LOADGEN" http --url "http://127.0.0.1:$port/centrifugo/connect" --secret "$SECRET" --concurrency 1 \
      --requests 1 --seconds 5 --prefix open-streak- --label open-streak >/dev/null || true
    local degraded=
    for _ in $(seq 1 100); do
      if health "$port" | grep -q '"degraded":true'; then degraded=yes; break; fi
      sleep 0.1
    done
    [[ -n $degraded ]] || die "the instance on $port did not turn degraded"
  done
  local common=(--secret "$SECRET" --client "$CLIENT" --concurrency "$C" --seconds "$D" --warmup "$WARMUP")
  load http --url "http://127.0.0.1:$mem_port/centrifugo/connect" --tickets-file "$WORK/pool4-memory.txt" \
    "${common[@]}" --label pool-memory --pid service="$mem_pid"
  local r_mem=$RESULT
  load http --url "http://127.0.0.1:$redis_ledger_port/centrifugo/connect" --tickets-file "$WORK/pool4-redis.txt" \
    "${common[@]}" --label pool-redis --pid service="$redis_ledger_pid" --pid redis="$redis_pid"
  local r_redis=$RESULT
  echo "redis ledger health: $(health "$redis_ledger_port")"

  log "pool: publish, per-replica limiter vs shared (Redis) limiter; $C in flight, ${D}s each"
  local_port=$(free_port)
  start_service publish-local "$local_port" "$WORK/publish-local.log" IDENTITY_VALIDATE_GRPC_ADDRESS="$IDENTITY_ADDR"
  local local_pid=$SERVICE_PID
  shared_port=$(free_port)
  start_service publish-shared "$shared_port" "$WORK/publish-shared.log" IDENTITY_VALIDATE_GRPC_ADDRESS="$IDENTITY_ADDR" \
    REDIS_URL="$redis_url" REDIS_KEY_PREFIX="bench-$$:"
  local shared_pid=$SERVICE_PID
  load http --url "http://127.0.0.1:$local_port/centrifugo/publish" "${common[@]}" --label publish-local \
    --pid service="$local_pid"
  local r_local=$RESULT
  load http --url "http://127.0.0.1:$shared_port/centrifugo/publish" "${common[@]}" --label publish-shared \
    --pid service="$shared_pid" --pid redis="$redis_pid"
  local r_shared=$RESULT
  local fallbacks
  fallbacks=$(curl -fsS "http://127.0.0.1:$shared_port/metrics" | awk '/^realtime_publish_limiter_fallback_total/ { print $NF }')
  echo "shared limiter: publishes decided per replica because Redis did not answer: ${fallbacks:-?}"

  log "pool: Redis frozen (SIGSTOP): connects and publishes decided without it; $C in flight, ${D}s each"
  # The memory half of the pool was never claimed in Redis: each frozen connect is a take the
  # Redis ledger must decide (FALLBACK_LEDGER_UNAVAILABLE=local: claimed in memory at once).
  kill -STOP "$redis_pid"
  load http --url "http://127.0.0.1:$redis_ledger_port/centrifugo/connect" --tickets-file "$WORK/pool4-memory.txt" \
    "${common[@]}" --label pool-redis-frozen --pid service="$redis_ledger_pid"
  local r_frozen=$RESULT
  load http --url "http://127.0.0.1:$shared_port/centrifugo/publish" "${common[@]}" --label publish-shared-frozen \
    --pid service="$shared_pid"
  local r_frozen_pub=$RESULT
  local thawed local_claims pending written_at writeback_s
  local_claims=$(curl -fsS "http://127.0.0.1:$redis_ledger_port/metrics" | awk '/^realtime_fallback_ledger_local_claims_total/ { print $NF }')
  thawed=$(date +%s.%N)
  kill -CONT "$redis_pid"
  # Written back once the probe sees Redis again (<= 250 ms) and the pipelined write-back ran.
  for _ in $(seq 1 1500); do
    pending=$(curl -fsS "http://127.0.0.1:$redis_ledger_port/metrics" | awk '/^realtime_fallback_ledger_pending_claims/ { print $NF }')
    if [[ $pending == 0 ]]; then
      written_at=$(date +%s.%N)
      writeback_s=$(calc "$written_at - $thawed" 3)
      break
    fi
    sleep 0.02
  done
  echo "write-back after Redis answered again: ${local_claims:-?} local claims, in Redis after ${writeback_s:-?} s"

  log "pool: loading the ticket set (examples/pool_load)"
  "$POOL_LOAD_BIN" | tee "$WORK/pool_load.txt"

  log "pool summary"
  p() { field "$1" "$2"; }
  printf '%-22s %8s %8s %8s %8s %14s %14s %7s\n' run inflight req/s p50_ms p99_ms svc_cpu_us/req redis_cpu_us/req errors
  local r name cpu rcpu
  for r in "$r_mem" "$r_redis" "$r_local" "$r_shared"; do
    name=$(p "$r" label)
    cpu=$(p "$r" cpu_us_per_req_service)
    rcpu=$(p "$r" cpu_us_per_req_redis)
    printf '%-22s %8s %8.0f %8.3f %8.3f %14s %14s %7s\n' "$name" "$(p "$r" concurrency)" "$(p "$r" rps)" \
      "$(calc "$(p "$r" p50_us) / 1000" 3)" "$(calc "$(p "$r" p99_us) / 1000" 3)" "${cpu:--}" "${rcpu:--}" "$(p "$r" errors)"
  done
  local added_p99
  added_p99=$(calc "($(p "$r_redis" p99_us) - $(p "$r_mem" p99_us)) / 1000" 3)
  echo
  echo "degraded connect, Redis ledger / memory ledger: throughput $(calc "$(p "$r_redis" rps) / $(p "$r_mem" rps)" 2)," \
    "p50 $(calc "$(p "$r_redis" p50_us) / $(p "$r_mem" p50_us)" 2)x, p99 $(calc "$(p "$r_redis" p99_us) / $(p "$r_mem" p99_us)" 2)x," \
    "service CPU/request $(calc "$(p "$r_redis" cpu_us_per_req_service) / $(p "$r_mem" cpu_us_per_req_service)" 2)x"
  echo "Redis ledger adds ${added_p99} ms p99 at $C in flight (target < 0.5 ms: $(verdict "$added_p99 < 0.5"))"
  echo "publish, shared limiter / per-replica: throughput $(calc "$(p "$r_shared" rps) / $(p "$r_local" rps)" 2)," \
    "p50 $(calc "$(p "$r_shared" p50_us) / $(p "$r_local" p50_us)" 2)x, p99 $(calc "$(p "$r_shared" p99_us) / $(p "$r_local" p99_us)" 2)x," \
    "service CPU/request $(calc "$(p "$r_shared" cpu_us_per_req_service) / $(p "$r_local" cpu_us_per_req_service)" 2)x"
  for r in "$r_frozen" "$r_frozen_pub"; do
    printf '%-22s %8s %8.0f %8.3f %8.3f %14s %14s %7s\n' "$(p "$r" label)" "$(p "$r" concurrency)" "$(p "$r" rps)" \
      "$(calc "$(p "$r" p50_us) / 1000" 3)" "$(calc "$(p "$r" p99_us) / 1000" 3)" "$(p "$r" cpu_us_per_req_service)" - "$(p "$r" errors)"
  done
  echo "Redis frozen: connect p99 $(calc "$(p "$r_frozen" p99_us) / 1000" 3) ms, publish p99 $(calc "$(p "$r_frozen_pub" p99_us) / 1000" 3) ms" \
    "(target < 5 ms: $(verdict "$(p "$r_frozen" p99_us) < 5000 && $(p "$r_frozen_pub" p99_us) < 5000"))"
  echo "write-back: ${local_claims:-?} local claims in Redis ${writeback_s:-?} s after it answered again (probe interval included)"
  echo "note: $(nproc) shared cores run the load generator, the service and redis-server together; compare ratios, not absolutes."
}

if [[ $SCENARIO == transports ]]; then
  transports
  exit 0
fi
if [[ $SCENARIO == pool ]]; then
  pool
  exit 0
fi

SERVICE_PORT=$(free_port)
start_service service "$SERVICE_PORT" "$WORK/service.log" \
  IDENTITY_VALIDATE_GRPC_ADDRESS="$IDENTITY_ADDR"
NORMAL_PID=$SERVICE_PID
URL="http://127.0.0.1:$SERVICE_PORT/centrifugo/connect"
echo "service: 127.0.0.1:$SERVICE_PORT (pid $NORMAL_PID)"

# ---------------------------------------------------------------------------------------
log "under load: $C in flight, ${D}s each (warm-up ${WARMUP}s on the same connections)"
load grpc --addr "$IDENTITY_ADDR" --concurrency "$C" --seconds "$D" --warmup "$WARMUP" \
  --label direct --pid identity="$IDENTITY_PID"
R_DIRECT=$RESULT
load http --url "$URL" --secret "$SECRET" --client "$CLIENT" --concurrency "$C" --seconds "$D" \
  --warmup "$WARMUP" --label service --pid service="$NORMAL_PID" --pid identity="$IDENTITY_PID"
R_SERVICE=$RESULT

log "unloaded latency: $C_LAT in flight, ${D_LAT}s each"
load grpc --addr "$IDENTITY_ADDR" --concurrency "$C_LAT" --seconds "$D_LAT" --warmup "$WARMUP" \
  --label "direct-c$C_LAT" --pid identity="$IDENTITY_PID"
R_DIRECT_LAT=$RESULT
load http --url "$URL" --secret "$SECRET" --client "$CLIENT" --concurrency "$C_LAT" --seconds "$D_LAT" \
  --warmup "$WARMUP" --label "service-c$C_LAT" --pid service="$NORMAL_PID" --pid identity="$IDENTITY_PID"
R_SERVICE_LAT=$RESULT

# Channel decisions end to end: signed subscribe and publish calls (meta included, as
# Centrifugo sends them with include_connection_meta) on the same instance. No network
# behind them: the cost is the HTTP edge, the HMAC, parsing meta and the policy.
BASE="http://127.0.0.1:$SERVICE_PORT/centrifugo"
log "channel decisions over HTTP: subscribe and publish, $C and $C_LAT in flight"
load http --url "$BASE/subscribe" --secret "$SECRET" --client "$CLIENT" --concurrency "$C" --seconds "$D_LAT" \
  --warmup "$WARMUP" --label subscribe --pid service="$NORMAL_PID"
R_SUBSCRIBE=$RESULT
load http --url "$BASE/publish" --secret "$SECRET" --client "$CLIENT" --concurrency "$C" --seconds "$D_LAT" \
  --warmup "$WARMUP" --label publish --pid service="$NORMAL_PID"
R_PUBLISH=$RESULT
load http --url "$BASE/subscribe" --secret "$SECRET" --client "$CLIENT" --concurrency "$C_LAT" --seconds "$D_LAT" \
  --warmup "$WARMUP" --label "subscribe-c$C_LAT" --pid service="$NORMAL_PID"
R_SUBSCRIBE_LAT=$RESULT
load http --url "$BASE/publish" --secret "$SECRET" --client "$CLIENT" --concurrency "$C_LAT" --seconds "$D_LAT" \
  --warmup "$WARMUP" --label "publish-c$C_LAT" --pid service="$NORMAL_PID"
R_PUBLISH_LAT=$RESULT
DECISIONS=$(curl -fsS "http://127.0.0.1:$SERVICE_PORT/metrics" |
  awk '/^realtime_proxy_decisions_total\{/ && $NF > 0 { printf "%s ", $0 }')
echo "decisions counted by the service: $DECISIONS"

NORMAL_RSS_KB=$(peak_rss "$NORMAL_PID")
IDENTITY_RSS_KB=$(peak_rss "$IDENTITY_PID")

# ---------------------------------------------------------------------------------------
log "degraded mode: identity-service unreachable, fallback pool of $POOL_TICKETS tickets"
# Random 32-hex-digit tickets; the unloaded-latency run gets its own slice so the two runs
# never present a ticket the other already used (a used ticket is answered 503).
od -An -tx1 -v -w16 -N $((POOL_TICKETS * 16)) /dev/urandom | tr -d ' ' >"$WORK/pool.txt"
LAT_SLICE=$((POOL_TICKETS / 3))
head -n $((POOL_TICKETS - LAT_SLICE)) "$WORK/pool.txt" >"$WORK/pool-load.txt"
tail -n "$LAT_SLICE" "$WORK/pool.txt" >"$WORK/pool-latency.txt"

CLOSED_PORT=$(free_port)
DEGRADED_PORT=$(free_port)
start_service degraded "$DEGRADED_PORT" "$WORK/degraded.log" \
  IDENTITY_VALIDATE_GRPC_ADDRESS="127.0.0.1:$CLOSED_PORT" \
  FALLBACK_TICKETS_PATH="$WORK/pool.txt" \
  FALLBACK_DEGRADED_WINDOW_MS=$WINDOW_MS IDENTITY_VALIDATE_DEADLINE_MS=$DEADLINE_MS \
  FALLBACK_LOW_WATERMARK=0
DEGRADED_PID=$SERVICE_PID
DURL="http://127.0.0.1:$DEGRADED_PORT/centrifugo/connect"
echo "degraded instance: 127.0.0.1:$DEGRADED_PORT (pid $DEGRADED_PID), identity at closed port $CLOSED_PORT"
echo "health: $(health "$DEGRADED_PORT")"

# One connect opens the failure streak (answered 503: not yet past the window).
"$LOADGEN" http --url "$DURL" --secret "$SECRET" --concurrency 1 --requests 1 --seconds 5 \
  --prefix open-streak- --label open-streak | grep '^RESULT ' || true
degraded=
for _ in $(seq 1 $(((WINDOW_MS + 5000) / 100))); do
  if health "$DEGRADED_PORT" | grep -q '"degraded":true'; then degraded=yes; break; fi
  sleep 0.1
done
[[ -n $degraded ]] || die "the instance did not turn degraded within the window + 5 s"
echo "health: $(health "$DEGRADED_PORT")"

load http --url "$DURL" --secret "$SECRET" --client "$CLIENT" --tickets-file "$WORK/pool-load.txt" \
  --concurrency "$C" --seconds "$D" --warmup "$WARMUP" --label degraded --pid service="$DEGRADED_PID"
R_DEGRADED=$RESULT
load http --url "$DURL" --secret "$SECRET" --client "$CLIENT" --tickets-file "$WORK/pool-latency.txt" \
  --concurrency "$C_LAT" --seconds "$D_LAT" --warmup "$WARMUP" --label "degraded-c$C_LAT" --pid service="$DEGRADED_PID"
R_DEGRADED_LAT=$RESULT
for r in "$R_DEGRADED" "$R_DEGRADED_LAT"; do
  [[ $(field "$r" tickets_ran_out) == true ]] &&
    echo "warning: $(field "$r" label) used up its pool tickets early; raise BENCH_POOL_TICKETS"
done

HEALTH_AFTER=$(health "$DEGRADED_PORT")
echo "health: $HEALTH_AFTER"
CONSUMED=$(curl -fsS "http://127.0.0.1:$DEGRADED_PORT/metrics" |
  awk '/^realtime_centrifugo_connect_total\{.*outcome="fallback_pool_consumed"/ { s += $NF } END { printf "%d", s }')
POOL_LEFT=$(sed -n 's/.*"fallback_pool":{"size":\([0-9]*\).*/\1/p' <<<"$HEALTH_AFTER")
echo "pool connects counted by the service (realtime_centrifugo_connect_total{outcome=\"fallback_pool_consumed\"}): $CONSUMED;" \
  "pool size $POOL_TICKETS -> ${POOL_LEFT:-?}: $([[ $((POOL_TICKETS - ${POOL_LEFT:-0})) == "$CONSUMED" ]] && echo consistent || echo MISMATCH)"
DEGRADED_RSS_KB=$(peak_rss "$DEGRADED_PID")

# ---------------------------------------------------------------------------------------
log "summary"
p() { field "$1" "$2"; }
ADDED_P50_MS=$(calc "($(p "$R_SERVICE" p50_us) - $(p "$R_DIRECT" p50_us)) / 1000" 3)
ADDED_P50_LAT_MS=$(calc "($(p "$R_SERVICE_LAT" p50_us) - $(p "$R_DIRECT_LAT" p50_us)) / 1000" 3)
RPS_RATIO=$(calc "$(p "$R_SERVICE" rps) / $(p "$R_DIRECT" rps)" 2)
P50_RATIO=$(calc "$(p "$R_SERVICE" p50_us) / $(p "$R_DIRECT" p50_us)" 2)

printf '%-18s %8s %8s %8s %8s %8s %14s %7s %7s\n' \
  run inflight req/s p50_ms p99_ms max_ms svc_cpu_us/req errors other%
row() { # NAME RESULT
  local cpu other
  cpu=$(p "$2" cpu_us_per_req_service)
  other=$(p "$2" other_cpu_pct)
  printf '%-18s %8s %8.0f %8.3f %8.3f %8.3f %14s %7s %7s\n' "$1" "$(p "$2" concurrency)" "$(p "$2" rps)" \
    "$(calc "$(p "$2" p50_us) / 1000" 3)" "$(calc "$(p "$2" p99_us) / 1000" 3)" \
    "$(calc "$(p "$2" max_us) / 1000" 3)" "${cpu:--}" "$(p "$2" errors)" "${other:--}"
}
row "direct gRPC" "$R_DIRECT"
row "through service" "$R_SERVICE"
row "direct gRPC" "$R_DIRECT_LAT"
row "through service" "$R_SERVICE_LAT"
row "degraded (pool)" "$R_DEGRADED"
row "degraded (pool)" "$R_DEGRADED_LAT"
row "subscribe (HTTP)" "$R_SUBSCRIBE"
row "publish (HTTP)" "$R_PUBLISH"
row "subscribe (HTTP)" "$R_SUBSCRIBE_LAT"
row "publish (HTTP)" "$R_PUBLISH_LAT"
echo
echo "throughput ratio service/direct at $C in flight: $RPS_RATIO (p50 ratio $P50_RATIO)"
echo "added p50 (service - direct): ${ADDED_P50_MS} ms at $C in flight, ${ADDED_P50_LAT_MS} ms at $C_LAT in flight" \
  "(target < 0.5 ms: $(verdict "$ADDED_P50_LAT_MS < 0.5") unloaded, $(verdict "$ADDED_P50_MS < 0.5") under load)"
echo "degraded p99: $(calc "$(p "$R_DEGRADED" p99_us) / 1000" 3) ms at $C in flight, $(calc "$(p "$R_DEGRADED_LAT" p99_us) / 1000" 3) ms at $C_LAT" \
  "(target < 1 ms: $(verdict "$(p "$R_DEGRADED_LAT" p99_us) < 1000") unloaded, $(verdict "$(p "$R_DEGRADED" p99_us) < 1000") under load)"
echo "service CPU per request: $(p "$R_SERVICE" cpu_us_per_req_service) µs (normal, $C in flight), $(p "$R_DEGRADED" cpu_us_per_req_service) µs (degraded)"
echo "fake identity-service CPU per Validate: $(p "$R_DIRECT" cpu_us_per_req_identity) µs direct, $(p "$R_SERVICE" cpu_us_per_req_identity) µs via the service"
echo "peak RSS (VmHWM): service $((NORMAL_RSS_KB / 1024)) MiB, degraded instance with $POOL_TICKETS pool tickets $((DEGRADED_RSS_KB / 1024)) MiB, fake identity $((IDENTITY_RSS_KB / 1024)) MiB"
echo "other%: CPU used during the run by processes outside this benchmark, in % of one core (noise)."
echo "note: $(nproc) shared cores run the load generator, the service and the fake together; ratios matter more than absolute figures."
echo "note: while degraded, one request at a time (at most one per 100 ms after a failure) still tries identity-service; a closed port refuses at once."

# ---------------------------------------------------------------------------------------
transports
