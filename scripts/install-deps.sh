#!/usr/bin/env bash
# Debian packages the build and the tests need. Run as root.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	clang llvm libclang-dev \
	libelf-dev zlib1g-dev pkg-config libbpf-dev linux-libc-dev \
	iproute2 ethtool bpftool make ca-certificates \
	iperf tshark >/dev/null

if ! command -v cargo >/dev/null; then
	echo "cargo not found: install a Rust toolchain (1.82 or newer)" >&2
	exit 1
fi
