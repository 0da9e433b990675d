#!/usr/bin/env bash
# What `make demo` and `make test` run first: nothing when every tool and
# header the build and the tests need is present (a few `command -v` and
# file checks), scripts/install-deps.sh otherwise (as root). Prints what
# was missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for cmd in cargo clang llvm-strip bpftool ip ethtool iperf tshark pkg-config make; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
for header in /usr/include/gelf.h /usr/include/zlib.h /usr/include/bpf/libbpf.h /usr/include/linux/bpf.h; do
	[ -e "$header" ] || missing+=("$header")
done
# The manifest checks: promtool, and the pinned Kubernetes schema validator.
command -v promtool >/dev/null 2>&1 || missing+=(promtool)
[ -x /opt/kubernetes-validate-1.37.0/bin/kubernetes-validate ] || missing+=(kubernetes-validate)
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
bash scripts/install-deps.sh
