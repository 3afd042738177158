# syntax=docker/dockerfile:1.7
#
# The versori-operator image:   docker build -t versori-operator:0.1.0 .
#
# Base images are pinned by tag. For fully reproducible builds pin their digests as well, e.g.
#   FROM rust:1.95-bookworm@sha256:<digest> AS builder
#   FROM gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
# (`docker buildx imagetools inspect <image>` prints the digest) and let Renovate or Dependabot
# bump them. Both stages are Debian 12 (bookworm), so the binary's glibc matches the runtime's.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Only what the build needs (see .dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the Versori emulator, for tests): cargo reads every member's
# manifest to load the workspace. Only versori-operator is built below.
COPY crates ./crates
# --locked: build exactly the dependency versions in Cargo.lock. The cache mounts keep the crate
# registry and target directory between builds (BuildKit); the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin versori-operator \
 && install -D -m 0755 target/release/versori-operator /out/versori-operator

# Distroless "cc": glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
# The :nonroot tag runs as 65532:65532 by default; USER below states it explicitly.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="versori-operator" \
      org.opencontainers.image.description="Kubernetes operator for Versori systems, connection templates and connections" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/versori-operator /usr/local/bin/versori-operator
ENV LOG_FORMAT=json
USER 65532:65532
# /metrics, /healthz and /readyz (METRICS_ADDR).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/versori-operator"]
CMD ["run"]
