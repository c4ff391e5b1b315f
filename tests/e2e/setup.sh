#!/usr/bin/env bash
# Installs what the end-to-end suite runs against, from the package registries, into a cache
# outside the repository (E2E_CACHE, default ~/.cache/realtime-service-e2e):
#   - Centrifugo v6.9.1, built with `go install` (the Go module and build caches are reused);
#   - the official JavaScript SDK `centrifuge` and `ws`, pinned by tests/e2e/package-lock.json.
# Nothing it downloads is committed. Prints the Centrifugo binary's path on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CENTRIFUGO_VERSION=v6.9.1
cache="${E2E_CACHE:-$HOME/.cache/realtime-service-e2e}"
bin="$cache/centrifugo-$CENTRIFUGO_VERSION"
mkdir -p "$bin"

if [[ ! -x $bin/centrifugo ]]; then
    command -v go >/dev/null || { echo "setup: go is needed to build Centrifugo" >&2; exit 1; }
    echo "setup: building Centrifugo $CENTRIFUGO_VERSION with go install (a few minutes the first time)" >&2
    GOBIN="$bin" GOFLAGS=-mod=mod go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
fi
"$bin/centrifugo" version >&2

if [[ ! -d $here/node_modules/centrifuge || $here/package-lock.json -nt $here/node_modules/.package-lock.json ]]; then
    echo "setup: npm ci in tests/e2e" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
echo "$bin/centrifugo"
