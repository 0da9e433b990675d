#!/usr/bin/env bash
# `make image`: the sidecar's OCI image, assembled from what this build
# produced and nothing pulled: FROM scratch with the release binary and
# exactly the shared libraries its ELF interpreter loads (glibc, libelf,
# zlib, libgcc_s), at the paths the binary asks for. Needs a Docker engine
# (run it through scripts/docker-engine.sh).
#
#   IMAGE   the tag (default cilium-mcast-egress:<version of Cargo.toml>)
#   CARGO   cargo to build with (default cargo)
#   CARGO_TARGET_DIR  where cargo builds (default target/), as for cargo
#
# For a build with registry access (your own CI) use the multi-stage
# Dockerfile at the top of the repository instead.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
image=${IMAGE:-cilium-mcast-egress:$version}
cargo=${CARGO:-cargo}

"$cargo" build --release --locked -p cilium-mcast-egress --bin cilium-mcast-egress
bin=${CARGO_TARGET_DIR:-target}/release/cilium-mcast-egress

ctx=$(mktemp -d "${TMPDIR:-/tmp}/cilium-mcast-egress-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
install -D -m 0755 "$bin" "$root/usr/bin/cilium-mcast-egress"

# Every library the dynamic loader resolves, and the loader itself, copied
# (symlinks followed) to the very path the binary names. A library it cannot
# find fails the build here rather than the container at start.
if ldd "$bin" | grep -q 'not found'; then
	echo "build-image: $bin needs libraries this machine lacks:" >&2
	ldd "$bin" | grep 'not found' >&2
	exit 1
fi
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
	# Modes kept: the ELF interpreter must stay executable.
	install -D -m "$(stat -L -c %a "$lib")" "$(readlink -f "$lib")" "$root$lib"
done

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit="$commit-dirty"
fi
# The image's creation time is the commit's, so that the same commit makes
# the same labels.
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
source=$(git remote get-url origin 2>/dev/null || true)

labels=(
	--label "org.opencontainers.image.title=cilium-mcast-egress"
	--label "org.opencontainers.image.description=Multicast egress for Cilium: the sidecar beside cilium-agent"
	--label "org.opencontainers.image.version=$version"
	--label "org.opencontainers.image.revision=$commit"
	--label "org.opencontainers.image.created=$created"
	--label "org.opencontainers.image.licenses=Apache-2.0"
)
if [ -n "$source" ]; then
	labels+=(--label "org.opencontainers.image.source=$source")
fi

cp scripts/scratch.Dockerfile "$ctx/Dockerfile"
docker build --quiet "${labels[@]}" --tag "$image" "$ctx" >/dev/null

# The image runs: the loader finds every library, and the binary starts.
got=$(docker run --rm --network none --read-only --cap-drop ALL "$image" --version)
if [ "$got" != "cilium-mcast-egress $version" ]; then
	echo "build-image: $image --version printed '$got'" >&2
	exit 1
fi

size=$(docker image inspect --format '{{.Size}}' "$image")
echo "built $image: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB), revision $commit"
echo "  binary $(stat -c %s "$bin") bytes; libraries: $(echo "$libs" | tr '\n' ' ')"
