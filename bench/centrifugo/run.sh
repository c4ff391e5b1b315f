#!/usr/bin/env bash
# The service measured through the real Centrifugo v6.9.1 and its official JavaScript SDK,
# over HTTP and gRPC proxies (bench/centrifugo/bench.mjs says what it runs):
#
#     bash bench/centrifugo/run.sh            # connect rounds, then the reconnect storms (~17 min)
#     bash bench/centrifugo/run.sh connect    # only connects/s, latency and CPU per connect
#     bash bench/centrifugo/run.sh storm      # only the reconnect storm
#
# Installs Centrifugo and the SDK with tests/e2e/setup.sh (cached), builds the release binary
# unless REALTIME_BIN names one, and raises the open-file limit to the hard limit (every
# held client is a socket in a client process and one in Centrifugo). BENCH_CF_* variables
# are listed in bench/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ulimit -n "$(ulimit -Hn)"
CENTRIFUGO_BIN="$(bash tests/e2e/setup.sh | tail -n 1)"
export CENTRIFUGO_BIN
if [[ -z ${REALTIME_BIN:-} ]]; then
    cargo build --locked --release --bin realtime-service
    REALTIME_BIN="$PWD/target/release/realtime-service"
fi
export REALTIME_BIN
CLK_TCK="$(getconf CLK_TCK)"
export CLK_TCK
echo "open files: $(ulimit -n); $("$CENTRIFUGO_BIN" version 2>&1 | head -n 1)" >&2
exec node bench/centrifugo/bench.mjs "$@"
