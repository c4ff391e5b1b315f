#!/usr/bin/env bash
# The end-to-end suite: the real Centrifugo v6.9.1 and the official JavaScript SDK against this
# service, over HTTP, gRPC and gzip-compressed gRPC proxies. Installs what it needs first
# (setup.sh), builds the service unless REALTIME_BIN names a binary, then runs node's test
# runner, one process per variant.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CENTRIFUGO_BIN="$(bash "$here/setup.sh" | tail -n 1)"
export CENTRIFUGO_BIN
if [[ -z ${REALTIME_BIN:-} ]]; then
    (cd "$here/../.." && cargo build --locked --bin realtime-service)
    REALTIME_BIN="$(cd "$here/../.." && pwd)/target/debug/realtime-service"
fi
export REALTIME_BIN
cd "$here"
exec node --test --test-concurrency=3 --test-reporter=spec "${@:-.}"
