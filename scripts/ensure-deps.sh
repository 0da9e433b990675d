#!/usr/bin/env bash
# What the make targets run first: nothing when every tool and header they
# need is present (a few `command -v` and file checks, bash builtins only),
# otherwise it says what is missing.
#
#   ensure-deps.sh           the build and the tests (make demo, make test)
#   ensure-deps.sh e2e       that, and what make e2e-local needs too (a
#                            Docker engine, Prometheus, a static busybox)
#   ensure-deps.sh image     only what building the sidecar's image needs
#                            (make image): a Rust toolchain, a C compiler,
#                            clang and libclang, make, pkg-config, the
#                            libelf, zlib and kernel headers, and docker
#   ensure-deps.sh build     the same without docker: what
#                            `cargo build --release` of the sidecar needs
#   ensure-deps.sh --check MODE
#                            print what is missing, one line each, change
#                            nothing; exit 1 if anything is (this is how
#                            scripts/e2e-kind.sh names them)
#
# For the first two, as root, scripts/install-deps.sh installs what is
# missing (Debian); otherwise it exits 1. For `image` and `build` it installs
# only as root on a machine with apt-get, and only those packages; anyone
# else is told each missing piece and where it comes from (exit 2).
set -euo pipefail

here=.
if [[ ${BASH_SOURCE[0]} == */* ]]; then here=${BASH_SOURCE[0]%/*}; fi

check_only=0
if [[ ${1:-} == --check ]]; then
	check_only=1
	shift
fi
mode=${1:-}
case $mode in
'' | e2e | image | build) ;;
*)
	printf 'usage: %s [--check] [e2e|image|build]\n' "$0" >&2
	exit 2
	;;
esac

# One line per missing piece: "what: problem (where it comes from)".
missing=()
# Debian/Ubuntu packages that provide them.
packages=()
need_rust=0

need_cmd() { # COMMAND PACKAGE WHAT
	if ! command -v "$1" >/dev/null 2>&1; then
		missing+=("$1: not found on PATH ($3; Debian/Ubuntu package $2)")
		packages+=("$2")
	fi
}
need_file() { # PATH PACKAGE WHAT
	if [[ ! -e $1 ]]; then
		missing+=("${1##*/}: no $1 ($3; Debian/Ubuntu package $2)")
		packages+=("$2")
	fi
}

# What `cargo build --release -p cilium-mcast-egress` needs (build.rs,
# Cargo.toml): rustc and cargo; clang to compile bpf/*.bpf.c and libclang
# for bindgen's bindings of include/; a C compiler (cc), make and
# pkg-config for libbpf-sys, which builds its vendored libbpf from source
# and links the system's libelf and zlib; the kernel's UAPI headers the BPF
# programs include. libbpf's own headers come with libbpf-sys, llvm-strip
# and bpftool are not used.
check_build() {
	local cargo=${CARGO:-cargo}
	if ! command -v "$cargo" >/dev/null 2>&1; then
		missing+=("cargo: not found on PATH (a Rust toolchain, 1.82 or newer: https://rustup.rs; Debian 12's cargo is too old)")
		need_rust=1
	fi
	if ! command -v rustc >/dev/null 2>&1; then
		missing+=("rustc: not found on PATH (comes with the Rust toolchain)")
		need_rust=1
	fi
	need_cmd cc gcc "a C compiler: libbpf-sys and ring build C, rustc links with it"
	need_cmd clang clang "compiles the BPF programs"
	need_cmd make make "runs make image; libbpf-sys builds libbpf with it"
	need_cmd pkg-config pkg-config "libbpf-sys runs it"
	need_file /usr/include/stdlib.h libc6-dev "the C library's headers"
	need_file /usr/include/gelf.h libelf-dev "libelf's headers and library"
	need_file /usr/include/zlib.h zlib1g-dev "zlib's headers and library"
	need_file /usr/include/linux/bpf.h linux-libc-dev "the kernel's UAPI headers"
	# Where clang-sys looks for the library bindgen loads.
	local -a libclang
	shopt -s nullglob
	libclang=(/usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so*
		/usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* /usr/lib/libclang.so*
		/usr/local/lib/libclang.so*)
	shopt -u nullglob
	if ((${#libclang[@]} == 0)) && [[ -z ${LIBCLANG_PATH:-} ]]; then
		missing+=("libclang: no libclang.so under /usr/lib (bindgen loads it; Debian/Ubuntu package libclang-dev, or set LIBCLANG_PATH)")
		packages+=(libclang-dev)
	fi
}

case $mode in
build) check_build ;;
image)
	check_build
	# The engine itself may be remote (DOCKER_HOST) or started by
	# scripts/docker-engine.sh: here only the client.
	need_cmd docker docker.io "the Docker client; make image builds with a Docker engine"
	;;
*)
	check_build
	for cmd in llvm-strip bpftool ip ethtool iperf tshark shellcheck socat nft; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd: not found on PATH")
	done
	[[ -e /usr/include/bpf/libbpf.h ]] || missing+=("libbpf.h: no /usr/include/bpf/libbpf.h")
	# The real API server of the Kubernetes source's tests (lab/src/kube.rs):
	# etcd (from KUBEBUILDER_ASSETS, or Debian's etcd-server), openssl for its
	# certificates, xz to unpack ../shared/k8s's kube-apiserver and kubectl.
	for cmd in openssl xz; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd: not found on PATH")
	done
	if [[ ! -x ${KUBEBUILDER_ASSETS:-/nonexistent}/etcd ]] && ! command -v etcd >/dev/null 2>&1; then
		missing+=("etcd: not found on PATH nor in KUBEBUILDER_ASSETS (Debian/Ubuntu package etcd-server)")
	fi
	# The manifest checks: promtool, and the pinned Kubernetes schema validator.
	command -v promtool >/dev/null 2>&1 || missing+=("promtool: not found on PATH")
	[[ -x /opt/kubernetes-validate-1.37.0/bin/kubernetes-validate ]] || missing+=("kubernetes-validate: not in /opt/kubernetes-validate-1.37.0")
	if [[ $mode == e2e ]]; then
		command -v docker >/dev/null 2>&1 || missing+=("docker: not found on PATH")
		command -v dockerd >/dev/null 2>&1 || missing+=("dockerd: not found on PATH")
		command -v prometheus >/dev/null 2>&1 || missing+=("prometheus: not found on PATH")
		dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q "ok installed" ||
			missing+=("busybox-static: not installed")
	fi
	;;
esac

if ((${#missing[@]} == 0)); then
	exit 0
fi
if ((check_only)); then
	printf '%s\n' "${missing[@]}"
	exit 1
fi

case $mode in
image | build)
	if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1 && ((need_rust == 0)); then
		printf 'ensure-deps: installing %s\n' "${packages[*]}" >&2
		exec bash "$here/install-deps.sh" "$mode"
	fi
	{
		if [[ $mode == image ]]; then
			printf 'make image: missing what building the image needs:\n'
		else
			printf 'missing what building the sidecar needs:\n'
		fi
		printf '  - %s\n' "${missing[@]}"
		if ((${#packages[@]} > 0)); then
			printf 'On Debian or Ubuntu, as root: apt-get install --no-install-recommends %s\n' "${packages[*]}"
			printf '  (or: sudo bash scripts/install-deps.sh %s)\n' "$mode"
		fi
		printf 'Nothing was installed.\n'
	} >&2
	exit 2
	;;
esac

names=("${missing[@]%%:*}")
echo "missing: ${names[*]}" >&2
if ((EUID != 0)); then
	echo "run as root (or run scripts/install-deps.sh as root once) to install them" >&2
	exit 1
fi
bash "$here/install-deps.sh" ${mode:+"$mode"}
