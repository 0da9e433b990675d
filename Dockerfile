# syntax=docker/dockerfile:1
#
# The sidecar's image, built from source, for a CI with registry access:
#
#   docker build -t registry.example/cilium-mcast-egress:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) .
#
# Multi-stage: Rust and the BPF toolchain in the build stage; the runtime
# stage is distroless (glibc, libgcc_s, no shell) plus the two libraries the
# binary loads beyond those, libelf and zlib. It runs as root: the BPF
# filesystem's pins are root-owned (0600); the pod gives it only the BPF,
# NET_ADMIN and PERFMON capabilities (manifests/deploy).
#
# `make image` builds the same binary into a FROM-scratch image without
# pulling anything (scripts/build-image.sh); this file is for your own CI.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
	&& apt-get install -y --no-install-recommends \
		clang llvm libclang-dev libelf-dev zlib1g-dev pkg-config \
		libbpf-dev linux-libc-dev \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cilium-mcast-egress --bin cilium-mcast-egress
# libelf and zlib, at the multiarch path the runtime's loader searches.
RUN set -eu; \
	dir="/out/usr/lib/$(gcc -print-multiarch)"; \
	mkdir -p "$dir"; \
	for lib in $(ldd target/release/cilium-mcast-egress | awk '$3 ~ /lib(elf|z)\.so/ { print $3 }'); do \
		cp -L "$lib" "$dir/"; \
	done; \
	install -D -m 0755 target/release/cilium-mcast-egress /out/usr/bin/cilium-mcast-egress

FROM gcr.io/distroless/cc-debian12
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="cilium-mcast-egress" \
	org.opencontainers.image.description="Multicast egress for Cilium: the sidecar beside cilium-agent" \
	org.opencontainers.image.version="${VERSION}" \
	org.opencontainers.image.revision="${REVISION}" \
	org.opencontainers.image.source="${SOURCE}" \
	org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
USER 0:0
ENTRYPOINT ["/usr/bin/cilium-mcast-egress"]
CMD ["run"]
