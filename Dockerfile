# syntax=docker/dockerfile:1
#
# realtime-service image: a static-ish Rust binary on distroless (glibc, CA certificates,
# no shell, no package manager), running as the numeric non-root user 65532.
#
#   docker build -t realtime-service:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --rm -p 9730:9730 -e CENTRIFUGO_PROXY_AUTH=static_header \
#     -e CENTRIFUGO_PROXY_SECRET=dev-secret realtime-service:0.1.0
#
# NOT VERIFIED here: there is no Docker engine on the build machine, so this file has never
# been built or run. What CI does verify is the same binary (`cargo build`), its subcommands,
# ports and probes (.ci/check-deploy runs it). To check on a machine with Docker: build, run
# as above, `docker inspect --format '{{.State.Health.Status}}'` should reach "healthy", and
# `docker run --rm realtime-service:0.1.0 check-config` should print the settings.

# Same toolchain as CI (rust-version in Cargo.toml, 1.88, is the floor). Bookworm matches
# the glibc of distroless cc-debian12.
ARG RUST_VERSION=1.95
# OCI annotations of the image (set by the build; the defaults mark a local build).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

FROM rust:${RUST_VERSION}-bookworm AS builder
# The commit for realtime_build_info{commit}: the build context has no .git (build.rs reads
# REALTIME_GIT_COMMIT instead; "unknown" stays unknown).
ARG REVISION
WORKDIR /src
# build.rs compiles proto/ with a vendored protoc (protoc-bin-vendored): no apt packages.
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cache mount so the next stage can see it. [profile.release] strips the debug info.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    REALTIME_GIT_COMMIT="$REVISION" cargo build --release --locked --bin realtime-service \
    && install -D -m 0755 target/release/realtime-service /out/realtime-service

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="realtime-service" \
      org.opencontainers.image.description="Centrifugo v6 proxy backend: connect via identity-service tickets, with an outage fallback pool" \
      org.opencontainers.image.source="https://git.example.com/realtime/realtime-service" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/realtime-service /usr/local/bin/realtime-service
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# 9730: Centrifugo's HTTP proxy calls (LISTEN_PORT). 9731: its gRPC proxy calls
# (GRPC_PROXY_LISTEN_PORT). 9732: /metrics (METRICS_LISTEN_PORT). /health, /livez and /readyz
# on the HTTP listeners.
EXPOSE 9730 9731 9732
# `healthcheck` GETs http://127.0.0.1:$LISTEN_PORT/livez and exits 0 on 200, else 1 (no shell
# or curl needed). Kubernetes ignores HEALTHCHECK and uses the httpGet probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/realtime-service", "healthcheck"]
# `serve` is the default; override the command for `check-config` or `demo`.
ENTRYPOINT ["/usr/local/bin/realtime-service"]
CMD ["serve"]
