# cilium-mcast-egress
#
#   make demo    the lab: three nodes in network namespaces, an SSM stream
#                from a pod to an upstream receiver, a summary (root); runs
#                target/debug/cilium-mcast-egress-lab, the lab crate in lab/
#   make build   release binary in target/release/cilium-mcast-egress
#   make test    unit tests, then the privileged datapath and loader tests,
#                of the sidecar and the lab crates (root; outside CI they
#                skip, loudly, without it)
#   make bench   ns per packet of each datapath path (root)
#   make bench-controller
#                the controller on one gateway node of a generated cluster
#                (10000x100, 50000x1000): first sync, one endpoint added
#                to its map entry, peak RSS, idle CPU (root; BENCH_SIZES,
#                BENCH_REPEATS, BENCH_IDLE_SECS, BENCH_IPV4_POOL)
#   make bench-lab
#                the whole path (pod, VXLAN, gateway, uplink) against the
#                kernel's multicast routing and a socat relay: pps at <= 0.1 %
#                loss and CPU ns per packet, 1316 and 64 B; then pods' unicast
#                (iperf2) with our links attached and detached (root; 2-3
#                minutes; tables also in target/bench-lab.md)
#   make fuzz    the datapath fuzzer at length: 5000000 frames through
#                BPF_PROG_RUN, 20000 on real veths, 200000 from a lab pod
#                and from a pod behind a Linux router whose kernel judges
#                them (root; FUZZ_SEED=... replays a run, FUZZ_FRAMES /
#                FUZZ_REAL_FRAMES / FUZZ_KERNEL_FRAMES resize it)
#   make lint    rustfmt and clippy on both crates, warnings are errors
#   make deps    install the Debian packages the build and the tests need,
#                only if one is missing (demo and test run it first)
#   make image   the sidecar's OCI image, cilium-mcast-egress:<version>,
#                FROM scratch with the release binary and its libraries,
#                nothing pulled (IMAGE=... to tag it otherwise). Needs only
#                the build's tools (a Rust toolchain, cc, clang, libclang,
#                make, pkg-config, libelf, zlib and kernel headers) and a
#                Docker engine: a running one, or root to start one; run
#                without root, it names what is missing and installs nothing
#   make push    push that image to the registry its name holds: the same
#                IMAGE=registry.example.org/cilium-mcast-egress:0.1.0 as
#                make image (a name without a registry is refused)
#   make deploy-config
#                the deployment files for a cluster in target/deploy (OUT=...):
#                the cilium chart's values, the DaemonSet and the monitoring
#                as kustomize overlays, with IMAGE, the API server
#                (K8S_SERVICE_HOST, K8S_SERVICE_PORT) and kube-prometheus-
#                stack's PROMETHEUS_RELEASE; no cluster, no root
#   make e2e-local
#                the image as a sidecar beside lab nodes that are
#                containers, scraped by a real Prometheus: an SSM stream
#                through docker restart and docker stop (root)
#   make e2e     for users, on their own machine: a kind cluster with Cilium
#                (VXLAN, egress gateway), the sidecar from `make image` and
#                `make deploy-config`, an SSM stream out through a gateway node,
#                checked at the receiver and in the sidecars' /metrics; needs
#                Docker 23 or newer, kind, helm, kubectl, registry access and,
#                unless IMAGE is given, what `make image` needs; no root
#                (MODE=sidecar or daemonset, IMAGE=..., KEEP=1;
#                scripts/e2e-kind.sh)

CARGO ?= cargo

.PHONY: all build deps deps-e2e deps-image demo test image push deploy-config e2e-local e2e bench bench-controller bench-lab fuzz lint fmt clean

all: build

build:
	$(CARGO) build --release

deps:
	@bash scripts/ensure-deps.sh

# Both binaries: the lab runs the sidecar built beside it.
demo: deps
	$(CARGO) build --workspace --bins
	./target/debug/cilium-mcast-egress-lab demo

test: deps
	$(CARGO) test --workspace --lib --bins --tests

deps-e2e: deps
	@bash scripts/ensure-deps.sh e2e

# Only what building the image needs, none of the tests' tools: `make e2e`
# runs `make image` on users' machines, as the user.
deps-image:
	@CARGO=$(CARGO) bash scripts/ensure-deps.sh image

# A Docker engine for the command: the one running, or a dockerd started
# for it (off the host's network) and stopped after.
image: deps-image
	CARGO=$(CARGO) bash scripts/docker-engine.sh bash scripts/build-image.sh

push:
	bash scripts/push-image.sh

deploy-config:
	bash scripts/deploy-config.sh

e2e-local: deps-e2e
	CARGO=$(CARGO) bash scripts/docker-engine.sh sh -c \
		'bash scripts/build-image.sh && $(CARGO) test --test e2e_local -- --ignored --nocapture'

bench:
	$(CARGO) bench --bench datapath

bench-controller:
	$(CARGO) bench --bench controller

# Release builds of both binaries: the generator and the daemons run as
# they would be shipped.
bench-lab: deps
	$(CARGO) build --release --workspace --bins
	./target/release/cilium-mcast-egress-lab bench --out target/bench-lab.md

fuzz:
	FUZZ_FRAMES=$${FUZZ_FRAMES:-5000000} FUZZ_REAL_FRAMES=$${FUZZ_REAL_FRAMES:-20000} \
		FUZZ_KERNEL_FRAMES=$${FUZZ_KERNEL_FRAMES:-200000} \
		$(CARGO) test --release --test fuzz -- --nocapture

# Not run here: these machines have no kind, helm or registry.
e2e:
	bash scripts/e2e-kind.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
