#!/usr/bin/env bash
# Runs realtime-service next to the real Centrifugo v6.9.1 on this machine, without Docker:
# installs Centrifugo (go install, cached) and the JavaScript SDK (npm ci in tests/e2e),
# builds the service, then starts Centrifugo, the service and the stand-in identity-service
# on loopback and prints a URL and an SDK snippet that connects. Ctrl-C stops it.
# QUICKSTART_PROXY=grpc uses Centrifugo's gRPC proxies (deploy/centrifugo/config-grpc.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CENTRIFUGO_BIN="$(bash "$root/tests/e2e/setup.sh" | tail -n 1)"
export CENTRIFUGO_BIN
if [[ -z ${REALTIME_BIN:-} ]]; then
    (cd "$root" && cargo build --locked --quiet --bin realtime-service)
    REALTIME_BIN="$root/target/debug/realtime-service"
fi
export REALTIME_BIN
exec node "$root/tests/e2e/quickstart.mjs"
