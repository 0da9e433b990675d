# cilium-mcast-egress
#
#   make build   release binary in target/release/cilium-mcast-egress
#   make test    unit tests, then the privileged datapath and loader tests
#                (root; outside CI they skip, loudly, without it)
#   make bench   ns per packet of each datapath path (root)
#   make lint    rustfmt and clippy, warnings are errors

CARGO ?= cargo

.PHONY: all build test bench lint fmt clean

all: build

build:
	$(CARGO) build --release

test:
	$(CARGO) test --lib --bins --tests

bench:
	$(CARGO) bench --bench datapath

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
