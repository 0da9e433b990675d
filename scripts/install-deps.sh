#!/usr/bin/env bash
# Debian packages the build and the tests need. Run as root.
#
#   install-deps.sh          the build and the tests (make demo, make test)
#   install-deps.sh e2e      that, and a Docker engine, Prometheus and a static
#                            busybox (make e2e-local)
#   install-deps.sh image    only what building the image needs (make image,
#                            and make e2e on a user's machine): the build
#                            packages below and docker.io
#   install-deps.sh build    the build packages only
set -euo pipefail

mode=${1:-}

# What `cargo build --release` of the sidecar needs (scripts/ensure-deps.sh
# says which file or command each one is checked by).
build_packages=(gcc libc6-dev make pkg-config clang libclang-dev libelf-dev zlib1g-dev linux-libc-dev)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
case $mode in
image | build)
	apt-get install -y -qq --no-install-recommends "${build_packages[@]}" >/dev/null
	;;
*)
	apt-get install -y -qq --no-install-recommends \
		"${build_packages[@]}" llvm libbpf-dev \
		iproute2 ethtool bpftool ca-certificates \
		iperf tshark shellcheck socat nftables openssl xz-utils >/dev/null
	;;
esac

# Install packages whose install would start a service (a Prometheus
# server, a Docker engine): a policy-rc.d of our own keeps them from starting
# (only when none is there), and the units are not enabled for the next boot.
# The tests start what they need themselves, and stop it.
install_without_starting() {
	local own_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	if [ -n "$own_policy" ]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
	if command -v systemctl >/dev/null; then
		systemctl disable --quiet prometheus.service docker.service docker.socket \
			containerd.service etcd.service 2>/dev/null || true
	fi
}

check_cargo() {
	if ! command -v cargo >/dev/null; then
		echo "cargo not found: install a Rust toolchain (1.82 or newer)" >&2
		exit 1
	fi
}

if [ "$mode" = image ] || [ "$mode" = build ]; then
	if [ "$mode" = image ] && ! command -v docker >/dev/null; then
		install_without_starting docker.io
	fi
	check_cargo
	exit 0
fi

# promtool, for the alert rules' unit tests (tests/manifests.rs), and the
# Prometheus server that `make e2e-local` starts: Debian's prometheus.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
	install_without_starting prometheus
fi

# etcd for the real API server the tests start (lab/src/kube.rs, which runs
# its own in a network namespace, with openssl's throwaway certificates and
# ../shared/k8s's binaries unpacked with xz): Debian's etcd-server, its own
# service left stopped.
if ! command -v etcd >/dev/null; then
	install_without_starting etcd-server
fi

# `install-deps.sh e2e`: what `make e2e-local` needs too: a Docker engine
# (docker.io; scripts/docker-engine.sh starts and stops it) and a static
# busybox for the lab's node containers.
if [ "$mode" = e2e ]; then
	if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
		install_without_starting docker.io
	fi
	if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
		apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
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

check_cargo
