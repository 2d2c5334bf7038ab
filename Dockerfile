# One image per controller binary:
#   docker build --build-arg BIN=packer-build-controller -t ghcr.io/opsy-ami-operator/packer-build-controller:0.1.0 .
#   docker build --build-arg BIN=ami-refresh-controller  -t ghcr.io/opsy-ami-operator/ami-refresh-controller:0.1.0 .
# The runtime image is distroless (no shell, no package manager) and runs as the non-root user 65532. TLS roots
# are compiled into the binary (rustls with webpki roots via the AWS SDK and kube), the IANA time zones too.

FROM rust:1.89-bookworm AS build
ARG BIN
RUN test -n "$BIN" || (echo "set --build-arg BIN=packer-build-controller or ami-refresh-controller" && false)
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package "$BIN" \
    && cp "target/release/$BIN" /controller

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /controller /controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/controller"]
