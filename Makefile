# Developer and CI entry points. `make test` is what CI runs (via .ci/run).
SHELL := /usr/bin/env bash
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: test fmt cluster-build crds clean-clusters demo demo-stop

# Formatting, lints, then every test target. Integration tests start a real kube-apiserver + etcd
# (tests/cluster/start), built once from source by tests/cluster/build.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	tests/cluster/build >/dev/null
	tests/tools/build-helm >/dev/null
	$(CARGO) test --lib --bins --tests --no-fail-fast

fmt:
	$(CARGO) fmt --all

# Builds (once, then cached) the kube-apiserver and etcd used by the integration tests.
cluster-build:
	tests/cluster/build

# Regenerates the CustomResourceDefinitions installed by the integration tests and deployments.
crds:
	mkdir -p crds
	$(CARGO) run --quiet --bin versori-operator -- crds > crds/versori.com.yaml.tmp
	mv crds/versori.com.yaml.tmp crds/versori.com.yaml
	$(MAKE) chart-crds
	$(CARGO) run --quiet --bin versori-operator -- reference > docs/reference.md.tmp
	mv docs/reference.md.tmp docs/reference.md

# Stops and removes control planes left behind by test runs (normally their watcher does this).
clean-clusters:
	@shopt -s nullglob; for dir in $(TARGET_DIR)/test-clusters/*/; do \
	  echo "stopping $$dir"; tests/cluster/stop "$$dir" --purge; rm -rf "$$dir"; \
	done

# The whole flow on a local control plane and the emulator (KEEP=1 leaves it running).
demo:
	scripts/demo

demo-stop:
	scripts/demo stop

.PHONY: helm chart-crds chart-lint image

# Builds (once, then cached) the helm binary the chart tests use (tests/tools/build-helm).
helm:
	tests/tools/build-helm

# Copies the generated CRDs into the chart; tests/chart.rs fails while the two differ. Run after
# `make crds`.
chart-crds:
	rm -f charts/versori-operator/crds/*.yaml
	cp crds/*.yaml charts/versori-operator/crds/

# Lints the chart the way the tests do.
chart-lint:
	helm=$$(tests/tools/build-helm) && "$$helm" lint --strict charts/versori-operator

# Builds the container image (needs Docker with BuildKit).
IMAGE ?= versori-operator:$(shell awk -F'"' '/^version = / {print $$2; exit}' Cargo.toml)
image:
	docker build -t $(IMAGE) .

.PHONY: bench

# Benchmarks against the emulator with 20 ms per Versori call (LATENCY_MS=100: a SaaS API seen
# from a cluster), printed as one table (see
# BENCHMARKS.md): convergence, the sequential CLI-like baseline, the concurrency limit, steady-state
# calls, Secret rotation latency and peak RSS. Release binaries. `make bench SCALE=small` runs a
# tenth of the size in under 3 minutes.
SCALE ?= full
LATENCY_MS ?= 20
bench:
	tests/cluster/build >/dev/null
	SCALE=$(SCALE) BENCH_LATENCY_MS=$(LATENCY_MS) $(CARGO) bench --bench operator

.PHONY: chaos

# The failure tests at full size (tests/chaos.rs, tests/chaos_apiserver.rs; `make test` runs them
# short): more objects and SIGKILLs, longer fault windows, three apiserver restarts. A failure
# prints its seed; CHAOS_SEED=N replays that run's timing.
chaos:
	tests/cluster/build >/dev/null
	CHAOS=long $(CARGO) test --release --no-fail-fast --test chaos --test chaos_apiserver -- --test-threads=1
