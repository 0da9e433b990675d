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

# promtool, for the alert rules' unit tests (tests/manifests.rs). Debian
# ships it in the prometheus package, whose install would start a Prometheus
# server: a policy-rc.d of our own keeps it from starting (only when none is
# there), and the unit we just installed is not enabled for the next boot.
if ! command -v promtool >/dev/null; then
	own_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	if [ -n "$own_policy" ]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
	if command -v systemctl >/dev/null; then
		systemctl disable --quiet prometheus.service 2>/dev/null || true
	fi
fi

# kubernetes-validate from PyPI, pinned, in a venv of its own: the
# manifests' schema check (tests/manifests.rs looks for it there).
kv_venv=/opt/kubernetes-validate-1.37.0
if [ ! -x "$kv_venv/bin/kubernetes-validate" ]; then
	if ! python3 -m venv --help >/dev/null 2>&1; then
		apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
	fi
	python3 -m venv "$kv_venv"
	"$kv_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi

if ! command -v cargo >/dev/null; then
	echo "cargo not found: install a Rust toolchain (1.82 or newer)" >&2
	exit 1
fi
