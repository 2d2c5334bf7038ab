# syntax=docker/dockerfile:1.7
# One image per controller binary, for amd64 and arm64 from one builder (Rust cross-compiles; no emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg BIN=packer-build-controller \
#     -t <registry>/packer-build-controller:0.1.0 .
#   (same with BIN=ami-refresh-controller)
# The runtime image is distroless (no shell, no package manager) and runs as the non-root user 65532.
# TLS roots: kube and the AWS SDK use rustls with the operating system's trust store (rustls-native-certs), which
# distroless ships in /etc/ssl/certs; behind a TLS-intercepting proxy, mount your CA bundle and set SSL_CERT_FILE
# (the Helm charts' extraVolumes/extraVolumeMounts/extraEnv). The IANA time zones are compiled in (jiff).
# Reproducible: --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) makes BuildKit (0.11+) stamp the image with
# the commit time; add --output type=image,rewrite-timestamp=true to also fix the file times inside the layers.
# Pin the bases by digest in your release pipeline:
#   --build-arg RUST=rust:1.89-bookworm@sha256:<digest> --build-arg RUNTIME=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
ARG RUST=rust:1.89-bookworm
ARG RUNTIME=gcr.io/distroless/cc-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${RUST} AS build
ARG BIN
ARG BUILDARCH
ARG TARGETARCH
ARG SOURCE_DATE_EPOCH
RUN test -n "$BIN" || (echo "set --build-arg BIN=packer-build-controller or ami-refresh-controller" && false)
# aws-lc-rs needs cmake and clang; a cross build needs the target's C toolchain too.
RUN case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu; cross="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) target=aarch64-unknown-linux-gnu; cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH" && false ;; \
    esac \
    && if [ "$TARGETARCH" = "$BUILDARCH" ]; then cross=""; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends cmake clang $cross \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$target" \
    && echo "$target" > /rust-target
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETARCH} \
    target="$(cat /rust-target)" \
    && cargo build --release --locked --package "$BIN" --target "$target" \
    && cp "target/$target/release/$BIN" /controller

FROM ${RUNTIME}
ARG BIN
LABEL org.opencontainers.image.title="${BIN}" \
      org.opencontainers.image.description="opsy-ami-operator ${BIN}" \
      org.opencontainers.image.source="https://github.com/opsy-ami-operator/opsy-ami-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /controller /controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/controller"]
