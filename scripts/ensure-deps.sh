#!/usr/bin/env bash
# What `make demo` and `make test` run first: nothing when every tool and
# header the build and the tests need is present (a few `command -v` and
# file checks), scripts/install-deps.sh otherwise (as root). Prints what
# was missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# `ensure-deps.sh e2e`: also what `make image` and `make e2e-local` need.
e2e=${1:-}

missing=()
for cmd in cargo clang llvm-strip bpftool ip ethtool iperf tshark shellcheck socat nft pkg-config make; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
for header in /usr/include/gelf.h /usr/include/zlib.h /usr/include/bpf/libbpf.h /usr/include/linux/bpf.h; do
	[ -e "$header" ] || missing+=("$header")
done
# The manifest checks: promtool, and the pinned Kubernetes schema validator.
command -v promtool >/dev/null 2>&1 || missing+=(promtool)
[ -x /opt/kubernetes-validate-1.37.0/bin/kubernetes-validate ] || missing+=(kubernetes-validate)
if [ "$e2e" = e2e ]; then
	command -v docker >/dev/null 2>&1 || missing+=(docker)
	command -v dockerd >/dev/null 2>&1 || missing+=(dockerd)
	command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
	dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
fi
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
	missing+=(libclang)
fi

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "missing: ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
	echo "run as root (or run scripts/install-deps.sh as root once) to install them" >&2
	exit 1
fi
bash scripts/install-deps.sh ${e2e:+"$e2e"}
