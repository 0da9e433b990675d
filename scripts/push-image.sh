#!/usr/bin/env bash
# `make push`: push the image `make image` built to the registry its name
# holds. IMAGE is the one name of the image everywhere: `make image`,
# `make push`, `make deploy-config` (default cilium-mcast-egress:<version>).
#
# A name without a registry or an account (no "/") would go to Docker Hub's
# official library, where nobody can push: refused before anything runs.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
image=${IMAGE:-cilium-mcast-egress:$version}

# A tag never holds "/", a digest comes after "@".
if [[ ${image%@*} != */* ]]; then
	printf 'push: IMAGE=%s names no registry; build and push under your registry'"'"'s name:\n' "$image" >&2
	printf '  make image push deploy-config IMAGE=registry.example.org/cilium-mcast-egress:%s\n' "$version" >&2
	exit 2
fi
# With the Docker engine running, or one started for the push (the image
# is in the engine's store either way).
exec bash scripts/docker-engine.sh bash -c '
	if ! docker image inspect "$1" >/dev/null 2>&1; then
		printf "push: no local image %s; build it first: make image IMAGE=%s\n" "$1" "$1" >&2
		exit 2
	fi
	docker push "$1"' push "$image"
