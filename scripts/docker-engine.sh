#!/usr/bin/env bash
# Run a command with a Docker engine: the one already running, or a dockerd
# started here for the command and stopped after it (only the one started
# here: an engine someone else runs is left alone).
#
#   scripts/docker-engine.sh make-image-or-test ...
#
# The dockerd started here keeps off the host's network: no docker0 bridge,
# no iptables or ip6tables rules, no masquerading, no change to
# net.ipv4.ip_forward. Containers then have only `--network none` or another
# container's namespace (`--network container:NAME`), which is all the image
# build and the e2e lab use. Images live in the usual /var/lib/docker, so an
# image built by one run is there for the next.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARGS...]" >&2
	exit 2
fi

if info_error=$(docker info 2>&1 >/dev/null); then
	exec "$@"
fi

if ! command -v dockerd >/dev/null 2>&1; then
	echo "no Docker engine: none answers, and dockerd is not installed" >&2
	echo "(apt-get install docker.io, or run scripts/install-deps.sh as root)" >&2
	exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "no Docker engine answers (docker info: ${info_error%%$'\n'*})," >&2
	echo "and starting dockerd needs root: start the engine, or give this user its socket" >&2
	exit 2
fi

state=/run/cilium-mcast-egress-dockerd
mkdir -p "$state"
dockerd \
	--bridge=none --iptables=false --ip6tables=false \
	--ip-masq=false --ip-forward=false \
	--pidfile "$state/dockerd.pid" \
	>"$state/dockerd.log" 2>&1 &
pid=$!

stop_engine() {
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}
trap stop_engine EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 150); do
	if docker info >/dev/null 2>&1; then
		break
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "dockerd exited at start; its log ($state/dockerd.log):" >&2
		tail -n 20 "$state/dockerd.log" >&2
		exit 1
	fi
	sleep 0.2
done
if ! docker info >/dev/null 2>&1; then
	echo "dockerd did not answer within 30 s; its log ($state/dockerd.log):" >&2
	tail -n 20 "$state/dockerd.log" >&2
	exit 1
fi
echo "docker-engine: started dockerd (pid $pid) for this command; it stops after" >&2

"$@"
