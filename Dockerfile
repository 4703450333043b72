# syntax=docker/dockerfile:1

# Build stage: the Rust toolchain, with the crates.io index and compiled dependencies kept in
# BuildKit caches so that a change to src/ rebuilds only this crate.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace's other member: cargo reads it before it can fetch anything.
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo fetch --locked
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin withings-exporter \
    && install -D -m 0755 target/release/withings-exporter /out/withings-exporter \
    && install -d -m 0700 /out/state /out/state/accounts

# Runtime: distroless, with glibc and CA certificates and nothing else (no shell, no curl),
# so the health check is the binary itself.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/withings-exporter /usr/local/bin/withings-exporter
# The state directory must exist and belong to the runtime user in the image: Docker gives a
# new named volume the ownership of the directory it is mounted on. With it the token
# directory of several accounts (WITHINGS_TOKEN_DIR=/var/lib/withings-exporter/accounts),
# which the image has no shell to make.
COPY --from=build --chown=65532:65532 /out/state /var/lib/withings-exporter
# DL3064 flags any ENV whose name mentions a token; this one is a file path, not a secret.
# hadolint ignore=DL3064
ENV WITHINGS_LISTEN_ADDRESS=0.0.0.0:19100 \
    WITHINGS_TOKEN_FILE=/var/lib/withings-exporter/token.json
# The token file lives here: keep it on a volume, or every restart means authorizing again.
VOLUME ["/var/lib/withings-exporter"]
USER 65532:65532
EXPOSE 19100
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/withings-exporter", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/withings-exporter"]
CMD ["serve"]
