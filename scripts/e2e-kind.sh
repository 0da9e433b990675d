#!/usr/bin/env bash
# make e2e: the sidecar on a real kind cluster with Cilium, for users.
#
# Creates a docker network on 203.0.113.0/24 and a three-node kind cluster
# on it (no kube-proxy, no default CNI), installs Cilium in VXLAN tunnel mode
# with kube-proxy replacement, BPF masquerading and the egress gateway, and
# the sidecar from the same artifacts `make e2e-local` proves:
#   MODE=sidecar    (default) beside cilium-agent, through the chart's
#                   extraContainers: helm -f manifests/deploy/cilium-values.yaml
#   MODE=daemonset  its own DaemonSet: kubectl apply -k manifests/deploy
# Then a publisher pod on one worker sends an SSM stream with iperf2 (TTL 8)
# to 232.1.1.1 under a CiliumEgressGatewayPolicy whose gateway is the other
# worker, and a receiver container on the same docker network joins
# (gateway IP, 232.1.1.1). It asserts that every datagram arrived, from the
# gateway's eth0 address with TTL 7 and the group's MAC, that the sidecars'
# origin and gateway counters rose by exactly the datagrams on the wire, and
# that no sidecar dropped anything; prints a summary; exits 1 on any failure
# with the reason, 2 when a prerequisite is missing.
#
# Needs docker (a running engine, Docker 23 or newer, on a kernel >= 6.6),
# kind, helm, kubectl, and access to Docker Hub, quay.io and helm.cilium.io
# (kind's node image, Debian, Cilium); unless IMAGE is given, also what
# `make image` needs to build the sidecar (make, a Rust toolchain, cc, clang,
# libclang, pkg-config, libelf, zlib and kernel headers: scripts/ensure-deps.sh
# names them). It runs as the user; nothing here needs root.
#
# Knobs: MODE=sidecar|daemonset; IMAGE=name:tag to use an image already
# built instead of running `make image` (default: make image builds
# cilium-mcast-egress:<version>); either way, that one name is what
# `make deploy-config` writes into the values and the overlay the run
# deploys, and what kind loads; KEEP=1 to leave the cluster, receiver and network up afterwards;
# DURATION (seconds of stream, default 5); RATE (iperf -b, default 2M);
# E2E_RAW=1 to print iperf's raw output on failure.
set -euo pipefail

# --- pinned versions --------------------------------------------------------
# kind v0.29.0's own default node image, with its digest: the constant
# pkg/apis/config/defaults/image.go at the v0.29.0 tag of kubernetes-sigs/kind
# (also in that release's notes). Kubernetes 1.33.1: the version the
# manifests are validated against (tests/manifests.rs).
KIND_VERSION=0.29.0
KIND_NODE_IMAGE=kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f
KUBERNETES_VERSION=1.33.1
# Cilium 1.18: tcx attach by default, cilium_egress_gw_policy_v4 layout the
# sidecar reads, and Kubernetes 1.33 among its tested versions.
CILIUM_VERSION=1.18.9
CILIUM_CHART_REPO=https://helm.cilium.io
# Tool minimums: kubectl within one minor of the cluster; helm 3.12+ (or 4)
# for --repo installs of OCI-era charts; tcx needs kernel 6.6; Docker 23
# gives privileged containers (kind's nodes) CAP_BPF and CAP_PERFMON.
MIN_HELM=3.12.0
MIN_KUBECTL=1.32.0
MIN_KERNEL=6.6
MIN_DOCKER=23.0
# The test tools (scripts/e2e-kind/tools.Dockerfile); publisher.yaml names
# the same tag.
TOOLS_IMAGE=cilium-mcast-egress-e2e-tools:bookworm-iperf-2.1.8

# --- the run ----------------------------------------------------------------
MODE=${MODE:-sidecar}
IMAGE=${IMAGE:-}
KEEP=${KEEP:-0}
DURATION=${DURATION:-5}
RATE=${RATE:-2M}
NETWORK=mcast-e2e
SUBNET=203.0.113.0/24
SUBNET_GATEWAY=203.0.113.1
GROUP=232.1.1.1
POLICY=mcast-e2e
# The gateway decrements the publisher's TTL once.
PUBLISH_TTL=8
EXPECT_TTL=7
# RFC 1112: 01:00:5e + the low 23 bits of 232.1.1.1.
GROUP_MAC=01:00:5e:01:01:01
METRICS_PORT=9980

if ((BASH_VERSINFO[0] < 4)); then
	printf 'e2e: needs bash 4 or newer, this is %s\n' "$BASH_VERSION" >&2
	exit 2
fi
ROOT=.
if [[ ${BASH_SOURCE[0]} == */* ]]; then ROOT=${BASH_SOURCE[0]%/*}; fi
ROOT=$(cd "$ROOT/.." && pwd)
HERE=$ROOT/scripts/e2e-kind
# shellcheck source=scripts/e2e-kind/lib.sh
source "$HERE/lib.sh"

# The files a user deploys, rendered from manifests/deploy by the same
# `make deploy-config` (scripts/deploy-config.sh) that README's Deploying
# uses, into the run's directory: the image and the API server are the run's.
DEPLOY_CONFIG=$ROOT/scripts/deploy-config.sh

say() { printf '== %s\n' "$*"; }
fail() {
	printf 'e2e: FAILED: %s\n' "$*" >&2
	exit 1
}

case $MODE in
sidecar | daemonset) ;;
*)
	printf 'e2e: MODE must be sidecar or daemonset, not %q\n' "$MODE" >&2
	exit 2
	;;
esac
if ! [[ $DURATION =~ ^[1-9][0-9]*$ ]]; then
	printf 'e2e: DURATION must be a whole number of seconds, not %q\n' "$DURATION" >&2
	exit 2
fi

# Prerequisites first, all of them in one message, before anything changes.
# Without IMAGE the run builds the image (make image): its tools too.
need_build=1
if [[ -n $IMAGE ]]; then need_build=0; fi
if ! missing=$(check_prereqs "$KIND_VERSION" "$MIN_HELM" "$MIN_KUBECTL" "$MIN_KERNEL" "$MIN_DOCKER" "$need_build"); then
	{
		printf 'e2e: missing prerequisites:\n'
		# Builtins only: the PATH may hold nothing else.
		while IFS= read -r line; do printf '  - %s\n' "$line"; done <<<"$missing"
		printf 'Install them (kind v%s, helm, kubectl, Docker %s or newer' "$KIND_VERSION" "$MIN_DOCKER"
		if ((need_build)); then printf ', and what make image needs to build the sidecar'; fi
		printf ') and run make e2e again; nothing was changed.\n'
		if ((need_build)); then
			printf 'IMAGE=name:tag runs an image built elsewhere instead, without building it here.\n'
		fi
	} >&2
	exit 2
fi
kind_have=$(version_of "$(kind version)")
if [[ $kind_have != "$KIND_VERSION" ]]; then
	say "note: kind v$kind_have; the node image is kind v$KIND_VERSION's, other releases run it best-effort"
fi
if docker network inspect "$NETWORK" >/dev/null 2>&1; then
	printf 'e2e: the docker network %s exists already (a run with KEEP=1?). Remove it and its cluster first:\n  kind get clusters; kind delete cluster --name <mcast-e2e-...>; docker network rm %s\n' \
		"$NETWORK" "$NETWORK" >&2
	exit 2
fi

# Unique per run: a kept cluster never collides with the next one's name.
CLUSTER=mcast-e2e-$(printf '%04x%04x' "$RANDOM" "$RANDOM")
RECEIVER=$CLUSTER-receiver
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcast-e2e.XXXXXX")
export KUBECONFIG=$WORK/kubeconfig
DEPLOY=$WORK/deploy
CILIUM_VALUES=$DEPLOY/cilium-values.yaml
DEPLOY_OVERLAY=$DEPLOY/daemonset
created_network=0
created_cluster=0

diagnose() {
	if [[ $created_cluster != 1 ]]; then return 0; fi
	printf '\n--- diagnostics\n' >&2
	{
		kubectl get nodes -o wide
		kubectl get pods -A -o wide
		kubectl get ciliumegressgatewaypolicies,ciliumnodes -o wide
		if [[ $MODE == sidecar ]]; then
			kubectl -n kube-system logs -l k8s-app=cilium -c mcast-egress --prefix --tail=40
		else
			kubectl -n kube-system logs -l app.kubernetes.io/name=cilium-mcast-egress --prefix --tail=40
		fi
		docker logs --tail=40 "$RECEIVER"
	} >&2 2>&1 || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((rc != 0)); then diagnose; fi
	if [[ $KEEP == 1 ]]; then
		say "KEEP=1: left up. KUBECONFIG=$KUBECONFIG; remove with:"
		printf '  docker rm -f %s; kind delete cluster --name %s; docker network rm %s; rm -rf %s\n' \
			"$RECEIVER" "$CLUSTER" "$NETWORK" "$WORK"
		exit "$rc"
	fi
	say "cleaning up"
	docker rm -f "$RECEIVER" >/dev/null 2>&1 || true
	if [[ $created_cluster == 1 ]]; then
		kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 ||
			printf 'e2e: could not delete kind cluster %s\n' "$CLUSTER" >&2
	fi
	if [[ $created_network == 1 ]]; then
		docker network rm "$NETWORK" >/dev/null 2>&1 ||
			printf 'e2e: could not remove docker network %s\n' "$NETWORK" >&2
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for WHAT SECONDS CMD...: poll CMD every 2 s until it succeeds. For
# state outside this script (a scrape, a log line) there is no event to
# await.
wait_for() {
	local what=$1 timeout=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@"; do
		if ((SECONDS >= deadline)); then fail "timed out after ${timeout}s waiting for $what"; fi
		sleep 2
	done
}

# --- images and the files that deploy them ---------------------------------
build_image=0
if [[ -z $IMAGE ]]; then
	IMAGE=cilium-mcast-egress:$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
	build_image=1
fi
# The API server as Cilium is given it below (k8sServiceHost): the cluster
# has no kube-proxy, so the sidecar must not depend on the ClusterIP.
say "the deployment files for IMAGE=$IMAGE: make deploy-config"
IMAGE=$IMAGE K8S_SERVICE_HOST=$CLUSTER-control-plane K8S_SERVICE_PORT=6443 OUT=$DEPLOY \
	bash "$DEPLOY_CONFIG" >/dev/null || fail "make deploy-config IMAGE=$IMAGE refused it (above)"
if ((build_image)); then
	say "building the sidecar image: make image IMAGE=$IMAGE"
	make -C "$ROOT" image IMAGE="$IMAGE"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "no local image $IMAGE (make image IMAGE=$IMAGE builds it)"
say "building the test tools image $TOOLS_IMAGE"
docker build -q -t "$TOOLS_IMAGE" -f "$HERE/tools.Dockerfile" "$HERE" >/dev/null ||
	fail "building $TOOLS_IMAGE from scripts/e2e-kind/tools.Dockerfile, which pulls debian:bookworm-slim and Debian's iperf, tcpdump and curl: it needs access to Docker Hub and deb.debian.org"

# load_images IMAGE...: the local images into every node. `kind load
# docker-image` exports them with `docker save`; with Docker's containerd
# image store (the default from Docker 29 on) that archive can name content
# the engine never held, and the nodes' import fails with "content digest
# ... not found" (kubernetes-sigs/kind#3795). Then each image is saved for
# its own platform only (docker save --platform, Docker 28 and later) and
# loaded with `kind load image-archive`, the workaround kind's maintainers
# give there.
load_images() {
	local out img platform archive=$WORK/image.tar
	if out=$(kind load docker-image --name "$CLUSTER" "$@" 2>&1); then
		printf '%s\n' "$out"
		return
	fi
	printf '%s\n' "$out" >&2
	if [[ $out != *"content digest"*"not found"* ]]; then
		fail "kind load docker-image $*"
	fi
	say "kind load docker-image failed as in kind#3795; loading each image with docker save --platform and kind load image-archive"
	for img in "$@"; do
		platform=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$img") ||
			fail "docker image inspect $img"
		docker save --platform "$platform" -o "$archive" "$img" ||
			fail "docker save --platform $platform $img (Docker 28 or newer saves one platform; or turn off the engine's containerd image store, see kind#3795)"
		kind load image-archive --name "$CLUSTER" "$archive" || fail "kind load image-archive ($img)"
		rm -f "$archive"
	done
}

# --- cluster ----------------------------------------------------------------
say "docker network $NETWORK ($SUBNET)"
docker network create --driver bridge --subnet "$SUBNET" --gateway "$SUBNET_GATEWAY" "$NETWORK" >/dev/null
created_network=1

say "kind cluster $CLUSTER: kind v$kind_have, Kubernetes v$KUBERNETES_VERSION, 3 nodes"
created_cluster=1
KIND_EXPERIMENTAL_DOCKER_NETWORK=$NETWORK kind create cluster --name "$CLUSTER" \
	--image "$KIND_NODE_IMAGE" --config "$HERE/kind-config.yaml" --kubeconfig "$KUBECONFIG"
load_images "$IMAGE" "$TOOLS_IMAGE"

# Nodes are named after their containers; find them by the kind config's
# labels rather than by kind's numbering.
GW_NODE=$(kubectl get nodes -l egress-gateway=multicast -o jsonpath='{.items[0].metadata.name}')
PUB_NODE=$(kubectl get nodes -l mcast-e2e/role=publisher -o jsonpath='{.items[0].metadata.name}')
mapfile -t NODES < <(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[[ -n $GW_NODE && -n $PUB_NODE && ${#NODES[@]} == 3 ]] ||
	fail "expected 3 nodes with a gateway and a publisher worker, got: ${NODES[*]}"
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$1"; }
node_mac() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").MacAddress}}" "$1"; }
GW_IP=$(node_ip "$GW_NODE")
GW_MAC=$(node_mac "$GW_NODE")
[[ $GW_IP == 203.0.113.* ]] || fail "gateway $GW_NODE has address '$GW_IP', not one of $SUBNET"

say "Cilium $CILIUM_VERSION: VXLAN, kube-proxy replacement, egress gateway, BPF masquerade (MODE=$MODE)"
helm_args=(
	install cilium cilium --repo "$CILIUM_CHART_REPO" --version "$CILIUM_VERSION"
	--namespace kube-system
)
if [[ $MODE == sidecar ]]; then
	helm_args+=(-f "$CILIUM_VALUES")
fi
# After the values file: these are the run's, and the egress gateway's
# requirements are set in both modes.
helm_args+=(
	--set routingMode=tunnel
	--set tunnelProtocol=vxlan
	--set kubeProxyReplacement=true
	--set "k8sServiceHost=$CLUSTER-control-plane"
	--set k8sServicePort=6443
	--set egressGateway.enabled=true
	--set bpf.masquerade=true
	--set ipam.mode=kubernetes
	--set operator.replicas=1
)
helm "${helm_args[@]}" >/dev/null
kubectl -n kube-system rollout status ds/cilium --timeout=10m
kubectl -n kube-system rollout status deploy/cilium-operator --timeout=5m
kubectl wait --for=condition=Ready nodes --all --timeout=5m

if [[ $MODE == daemonset ]]; then
	say "the sidecar's own DaemonSet: kubectl apply -k (make deploy-config's overlay of manifests/deploy)"
	kubectl apply -k "$DEPLOY_OVERLAY"
	# Its readiness probe is /readyz.
	kubectl -n kube-system rollout status ds/cilium-mcast-egress --timeout=5m
fi

metrics() { docker exec "$1" curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics"; }
ready() { docker exec "$1" curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz"; }

# In cilium-agent's pod the sidecar has no readiness probe (it would hold
# back Cilium's); ask /readyz on every node directly, in both modes.
for n in "${NODES[@]}"; do
	wait_for "the sidecar's /readyz on $n" 180 ready "$n"
done
say "sidecars ready on ${NODES[*]}"

# --- policy, publisher, receiver -------------------------------------------
kubectl apply -f "$HERE/policy.yaml"
kubectl apply -f "$HERE/publisher.yaml"
kubectl -n mcast-e2e wait --for=condition=Ready pod/publisher --timeout=3m
PUB_IP=$(kubectl -n mcast-e2e get pod publisher -o jsonpath='{.status.podIP}')
[[ $(kubectl -n mcast-e2e get pod publisher -o jsonpath='{.spec.nodeName}') == "$PUB_NODE" ]] ||
	fail "the publisher is not on $PUB_NODE"

# The stream must not start before both sidecars have resolved the policy
# for this pod: the gateway with its eth0 address as egress IP, and the
# publisher's node with the pod's entry.
gateway_resolved() {
	local m
	m=$(metrics "$GW_NODE") || return 1
	[[ $(prom_label cilium_mcast_egress_gateway egress_ip "policy=$POLICY" <<<"$m") == "$GW_IP" ]] &&
		(($(prom_sum cilium_mcast_egress_policy_entries <<<"$m") > 0))
}
origin_resolved() {
	local m
	m=$(metrics "$PUB_NODE") || return 1
	(($(prom_sum cilium_mcast_egress_policy_entries <<<"$m") > 0))
}
wait_for "$GW_NODE's sidecar to be the gateway of $POLICY with egress IP $GW_IP" 120 gateway_resolved
wait_for "$PUB_NODE's sidecar to hold the publisher's policy entry" 120 origin_resolved
say "policy $POLICY resolved: publisher $PUB_IP on $PUB_NODE, gateway $GW_NODE ($GW_IP)"

counter() {
	local m
	m=$(metrics "$1") || fail "no /metrics from $1"
	prom_sum cilium_mcast_egress_packets_total "policy=$POLICY" "role=$2" <<<"$m"
}
gw_before=$(counter "$GW_NODE" gateway)
origin_before=$(counter "$PUB_NODE" origin)

# The receiver: an iperf2 SSM join of (gateway IP, group) on eth0, and
# tcpdump writing every datagram to the group, packet by packet, to a file
# read after the stream. It listens well past the stream, and is removed at
# cleanup. No interval reports (-i): the only Lost/Total line is then the
# final one, printed when the stream's last datagram arrives.
listen=$((DURATION + 300))
docker run -d --name "$RECEIVER" --network "$NETWORK" "$TOOLS_IMAGE" sh -c \
	"tcpdump -i eth0 -p -n -U -Z root -w /tmp/mcast.pcap 'udp and dst host $GROUP' &
	 exec iperf -s -u -B $GROUP%eth0 -H $GW_IP -e -t $listen" >/dev/null
receiver_joined() {
	local l
	l=$(docker logs "$RECEIVER" 2>&1) || return 1
	[[ $l == *"Joining multicast"* && $l == *"listening on eth0"* ]]
}
wait_for "the receiver's SSM join and capture" 60 receiver_joined
RECEIVER_IP=$(node_ip "$RECEIVER")

say "$PUB_NODE/publisher ($PUB_IP) sends SSM to $GROUP for $DURATION s: iperf -c $GROUP -u -T $PUBLISH_TTL -l 1316 -b $RATE"
client_out=$(kubectl -n mcast-e2e exec publisher -- \
	iperf -c "$GROUP" -u -T "$PUBLISH_TTL" -l 1316 -b "$RATE" -t "$DURATION" -e 2>&1) ||
	fail "iperf in the publisher pod failed: $client_out"

# The final report appears when the stream's last datagram arrives.
receiver_reported() { [[ -n $(docker logs "$RECEIVER" 2>&1 | iperf_lost_total) ]]; }
wait_for "the receiver's final report (nothing arrived?)" 30 receiver_reported
server_out=$(docker logs "$RECEIVER" 2>&1)

# --- what happened ----------------------------------------------------------
sent=$(iperf_sent <<<"$client_out")
read -r lost total < <(iperf_lost_total <<<"$server_out") || fail "no Lost/Total in the receiver's report"
received=$((total - lost))
source=$(iperf_source <<<"$server_out")
pcap_count() {
	docker exec "$RECEIVER" tcpdump -r /tmp/mcast.pcap -n "udp and dst host $GROUP${1:+ and $1}" 2>/dev/null | wc -l | tr -d ' '
}
cap_all=$(pcap_count "")
cap_src=$(pcap_count "src host $GW_IP")
cap_ttl=$(pcap_count "ip[8] = $EXPECT_TTL")
cap_mac=$(pcap_count "ether dst $GROUP_MAC and ether src $GW_MAC")
gw_after=$(counter "$GW_NODE" gateway)
origin_after=$(counter "$PUB_NODE" origin)
gw_delta=$((gw_after - gw_before))
origin_delta=$((origin_after - origin_before))
drops=0
drop_lines=""
for n in "${NODES[@]}"; do
	m=$(metrics "$n") || fail "no /metrics from $n"
	d=$(prom_sum cilium_mcast_egress_drops_total <<<"$m")
	drops=$((drops + d))
	if ((d > 0)); then
		drop_lines+=$(grep '^cilium_mcast_egress_drops_total{' <<<"$m" | awk -v n="$n" '$NF > 0 { print "  " n ": " $0 }')$'\n'
	fi
done

# iperf 2.1.8 (pinned in tools.Dockerfile) reports one datagram more as
# "Sent" than it puts on the wire; the wire count is what every other
# number must equal.
wire=$((${sent:-0} - 1))
cat <<EOF

== summary: MODE=$MODE, kind v$kind_have, Kubernetes v$KUBERNETES_VERSION, Cilium $CILIUM_VERSION, $IMAGE

  datagrams sent by the pod            ${sent:-?} (iperf2 counts one more than it puts on the wire: $wire)
  datagrams received by the receiver   $received of $total, $lost lost ($RECEIVER, $RECEIVER_IP)
  source address the receiver saw      ${source:-?} (gateway $GW_NODE, eth0 $GW_IP)
  captured at the receiver             $cap_all; from $GW_IP: $cap_src; TTL $EXPECT_TTL: $cap_ttl; $GW_MAC > $GROUP_MAC: $cap_mac
$(printf '  %-36s +%s packets towards the gateway' "origin counter ($PUB_NODE)" "$origin_delta")
$(printf '  %-36s +%s packets out of eth0' "gateway counter ($GW_NODE)" "$gw_delta")
  drops, all sidecars                  $drops

EOF

failures=()
[[ -n $sent ]] || failures+=("no 'Sent N datagrams' in the publisher's iperf output")
((total > 0)) || failures+=("the receiver got nothing")
((lost == 0)) || failures+=("the receiver lost $lost of $total datagrams")
((total == wire)) || failures+=("the receiver accounted for $total datagrams, $wire were sent")
[[ $source == "$GW_IP" ]] || failures+=("the receiver saw source ${source:-none}, not the gateway's $GW_IP")
((cap_all == received)) || failures+=("tcpdump captured $cap_all datagrams, iperf received $received")
((cap_src == cap_all)) || failures+=("$((cap_all - cap_src)) captured datagrams were not from $GW_IP")
((cap_ttl == cap_all)) || failures+=("$((cap_all - cap_ttl)) captured datagrams did not arrive with TTL $EXPECT_TTL (sent with $PUBLISH_TTL, one gateway hop)")
((cap_mac == cap_all)) || failures+=("$((cap_all - cap_mac)) captured datagrams were not $GW_MAC > $GROUP_MAC")
((gw_delta == wire)) || failures+=("the gateway counter rose by $gw_delta, $wire datagrams were sent")
((origin_delta == wire)) || failures+=("the origin counter rose by $origin_delta, $wire datagrams were sent")
((drops == 0)) || failures+=("the sidecars dropped $drops packets:"$'\n'"$drop_lines")
if ((${#failures[@]} > 0)); then
	printf '  - %s\n' "${failures[@]}" >&2
	if [[ -n ${E2E_RAW:-} ]]; then printf -- '--- publisher\n%s\n--- receiver\n%s\n' "$client_out" "$server_out" >&2; fi
	fail "${#failures[@]} check(s) failed"
fi
say "PASSED: every datagram left through $GW_NODE as ($GW_IP, $GROUP), counted once at each end, no drops"
