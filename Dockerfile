# syntax=docker/dockerfile:1
# portcullis container image: a glibc distroless base (no shell, no package manager), running as
# the distroless "nonroot" user, UID/GID 65532.
#
#   docker build -t portcullis:dev \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# The build stage runs the cargo build CI proves (scripts/test: `cargo build --locked --bins`
# with the same Cargo.lock and toolchain), in the release profile, through `cargo auditable` so
# the binary embeds its dependency list (`cargo audit bin`, `trivy rootfs`, syft can read it).

ARG RUST_VERSION=1.95
ARG CARGO_AUDITABLE_VERSION=0.7.7

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG CARGO_AUDITABLE_VERSION
# The image's own toolchain (the rust image sets RUST_VERSION, e.g. 1.95.0), instead of
# rust-toolchain.toml's "stable" + rustfmt + clippy, which would download another toolchain.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
RUN cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"
WORKDIR /src
COPY . .
RUN cargo auditable build --locked --release --bin portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Kubernetes validating admission webhook that lets only trusted images run" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/portcullis /usr/local/bin/portcullis
USER 65532:65532
# 8443: HTTPS webhook (POST /validate); 8081: plain-HTTP probes and metrics.
EXPOSE 8443 8081
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
