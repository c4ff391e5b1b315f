#!/usr/bin/env bash
# User-space instructions per connect, counted by callgrind: a figure that does not move with
# the machine's load, for choosing and checking changes to the request path.
#
#     bash bench/instructions.sh          # HTTP and gRPC through the service, and the pass-through
#
# Each server runs under `valgrind --tool=callgrind` behind the fake identity-service
# (bench_identity); 300 connects warm it up, its counters are zeroed (`callgrind_control -z`),
# BENCH_INSTR_REQUESTS connects at 16 in flight are counted, and the dump is divided by them.
# The same binary gives the same count to within 0.01 %. The kernel is not counted, and
# callgrind's CPU lacks SHA extensions (SHA-256 runs in software, ~3 500 instructions per
# static-header check that the real CPU does in a fraction of that): compare runs of this
# script, and use `bash bench/run.sh transports` for CPU time.
#
# Environment: BENCH_INSTR_REQUESTS=2000. Needs valgrind (apt-get install valgrind). About
# two minutes once built. Everything listens on 127.0.0.1; all processes stop on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${BENCH_INSTR_REQUESTS:-2000}
[[ $N =~ ^[0-9]+$ ]] && ((N >= 100 && N <= 100000)) || {
  echo "instructions.sh: BENCH_INSTR_REQUESTS must be 100..100000" >&2
  exit 2
}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
  echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2
  exit 2
}

cargo build --release --bin realtime-service --example loadgen --example bench_identity --example passthrough

TARGET=${CARGO_TARGET_DIR:-target}/release
LOADGEN=$TARGET/examples/loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/realtime-instr.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')

"$TARGET/examples/bench_identity" --listen 127.0.0.1:0 >"$WORK/identity.out" 2>"$WORK/identity.err" &
PIDS+=($!)
for _ in $(seq 1 100); do
  IDENTITY=$(sed -n 's/^listening //p' "$WORK/identity.out")
  [[ -n $IDENTITY ]] && break
  sleep 0.1
done
[[ -n ${IDENTITY:-} ]] || { cat "$WORK/identity.err" >&2; exit 1; }

port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# count NAME LOADGEN-ARGS...: the server just started as $SERVER_PID on $WAIT_PORT.
count() {
  local name=$1 out
  shift
  for _ in $(seq 1 300); do port_open "$WAIT_PORT" && break; sleep 0.1; done
  port_open "$WAIT_PORT" || { echo "instructions.sh: $name did not start" >&2; exit 1; }
  local common=(--concurrency 16 --secret "$SECRET" --auth static_header --seconds 300 --warmup 0)
  "$LOADGEN" "$@" "${common[@]}" --requests 300 --label warm-up >/dev/null
  callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
  "$LOADGEN" "$@" "${common[@]}" --requests "$N" --label "$name" | grep -q " errors=0 " ||
    { echo "instructions.sh: $name: requests failed" >&2; exit 1; }
  callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  # The dump taken after the counted requests is the largest file (the exit dump is empty).
  out=$(ls -S "$WORK/$name".cg* | head -1)
  local total
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  echo $((total / N))
}

start_service() {
  local http=$1 grpc=$2 name=$3
  env LISTEN_HOST=127.0.0.1 LISTEN_PORT="$http" GRPC_PROXY_LISTEN_PORT="$grpc" \
    CENTRIFUGO_PROXY_AUTH=static_header CENTRIFUGO_PROXY_SECRET="$SECRET" \
    IDENTITY_VALIDATE_GRPC_ADDRESS="$IDENTITY" LOG_LEVEL=warn SHUTDOWN_DRAIN_DELAY_MS=0 \
    OTEL_SDK_DISABLED=true \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.cg" "$TARGET/realtime-service" serve \
    >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}

declare -A RESULT
for path in http grpc passthrough; do
  http=$("$LOADGEN" free-port)
  grpc=$("$LOADGEN" free-port)
  case $path in
    http)
      start_service "$http" "$grpc" http
      WAIT_PORT=$http
      RESULT[http]=$(count http http --url "http://127.0.0.1:$http/centrifugo/connect" --client raw) ;;
    grpc)
      start_service "$http" "$grpc" grpc
      WAIT_PORT=$grpc
      RESULT[grpc]=$(count grpc grpc-connect --addr "127.0.0.1:$grpc") ;;
    passthrough)
      valgrind --tool=callgrind --callgrind-out-file="$WORK/passthrough.cg" \
        "$TARGET/examples/passthrough" --listen "127.0.0.1:$http" --identity "$IDENTITY" \
        >"$WORK/passthrough.log" 2>&1 &
      SERVER_PID=$!
      PIDS+=("$SERVER_PID")
      WAIT_PORT=$http
      RESULT[passthrough]=$(count passthrough http --url "http://127.0.0.1:$http/centrifugo/connect" --client raw) ;;
  esac
done

printf '%-22s %14s\n' path instr/request
printf '%-22s %14s\n' "HTTP via service" "${RESULT[http]}" "gRPC via service" "${RESULT[grpc]}" \
  "pass-through (HTTP)" "${RESULT[passthrough]}"
awk -v h="${RESULT[http]}" -v g="${RESULT[grpc]}" -v p="${RESULT[passthrough]}" 'BEGIN {
  printf "HTTP / pass-through: %.2f   gRPC / HTTP: %.2f   (user space only; see the header)\n", h / p, g / h }'
