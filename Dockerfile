# syntax=docker/dockerfile:1
#
# fieldseal container image. Details: docs/docker.md.
#
#   docker build -t fieldseal .                     # compile in the `build` stage (default target)
#   docker build --target prebuilt -t fieldseal .   # package dist/fieldseal from scripts/build-static.sh
#
# The binary is a fully static musl build (aws-lc and mimalloc compiled with musl-gcc), so the
# runtime is gcr.io/distroless/static-debian12: no shell, no package manager, no libc.
# Needs BuildKit (the default builder since Docker Engine 23): the legacy builder would also run
# the `prebuilt` stage and fail when dist/fieldseal does not exist.
#
# Nothing is baked in but the binary: the configuration, certificates and keys are mounted at
# /etc/fieldseal at run time. `run` writes nothing to disk (logs go to stdout), so the container
# works with a read-only root filesystem; only `demo` needs a writable /tmp (--tmpfs /tmp).

# Base of the runtime stages. A glibc binary from `scripts/build-static.sh --glibc` needs
# --build-arg RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot instead.
ARG RUNTIME_BASE=gcr.io/distroless/static-debian12:nonroot

# ---------------------------------------------------------------------------------------------
# Settings shared by both runtime images.
FROM ${RUNTIME_BASE} AS runtime-base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="fieldseal" \
      org.opencontainers.image.description="TLS 1.3 reverse-proxy sidecar that seals sensitive JSON fields in flight" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# distroless "nonroot": uid/gid 65532. Numeric, so Kubernetes runAsNonRoot can verify it.
USER 65532:65532
# mimalloc commits its arenas' memory as it is used rather than up front: 1,000 idle keep-alive
# connections then take 44 MiB of RSS instead of 65 MiB, at no measured throughput cost
# (benches/README.md, "Memory per idle connection"). Set it too when running the binary itself.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
# 8443: the TLS listener (`listen`); 9901: the plain-HTTP admin listener (`admin`:
# /healthz /readyz /metrics). Inside a container both must bind 0.0.0.0 — set
# `listen: "0.0.0.0:8443"` and `admin: "0.0.0.0:9901"` in the mounted config, or pass
# FIELDSEAL_LISTEN / FIELDSEAL_ADMIN (the built-in admin default is 127.0.0.1:9901).
EXPOSE 8443 9901
# No HEALTHCHECK: the image has no shell or curl to run one, and orchestrators probe the admin
# listener themselves (Kubernetes livenessProbe /healthz, readinessProbe /readyz on 9901).
ENTRYPOINT ["/fieldseal"]
CMD ["run", "--config", "/etc/fieldseal/fieldseal.yaml"]

# ---------------------------------------------------------------------------------------------
# `docker build --target prebuilt .`: the binary built on the host by scripts/build-static.sh.
FROM runtime-base AS prebuilt
COPY dist/fieldseal /fieldseal

# ---------------------------------------------------------------------------------------------
# Build stage: the Rust minor this project is developed and tested with (rustc 1.95).
FROM rust:1.95-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# musl-gcc compiles the C parts (aws-lc, mimalloc) for the musl target; the target triple is the
# host's with -gnu replaced by -musl, so amd64 and arm64 builders both work.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustc -vV | sed -n 's/^host: \(.*\)-gnu$/\1-musl/p' > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Dependencies first, so source edits do not re-download them. The manifest names bench targets
# (benches/*.rs), which must exist for cargo to read it; src/ gets empty stand-ins. No --target on
# fetch: it would also filter out build dependencies of the host (psm's ar_archive_writer).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src \
 && touch src/lib.rs src/main.rs \
 && cargo fetch --locked \
 && rm -rf src
COPY src ./src
# --offline: everything needed was fetched above. Debug info of std is dropped, symbol names kept.
# TARGET_CC: the C compiler cc-rs uses for the (musl) target; build scripts keep the host gcc.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    TARGET_CC=musl-gcc
RUN target="$(cat /rust-target)" \
 && cargo build --release --locked --offline --target "$target" --bin fieldseal \
 && cp "target/$target/release/fieldseal" /fieldseal \
 && /fieldseal --version

# ---------------------------------------------------------------------------------------------
# Default target: the binary from the build stage.
FROM runtime-base AS runtime
COPY --from=build /fieldseal /fieldseal
