# Developer and CI entry points. `make test` is what CI runs (via .ci/run).
SHELL := /usr/bin/env bash
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: test fmt cluster-build crds clean-clusters

# Formatting, lints, then every test target. Integration tests start a real kube-apiserver + etcd
# (tests/cluster/start), built once from source by tests/cluster/build.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	tests/cluster/build >/dev/null
	$(CARGO) test --all-targets

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

# Stops and removes control planes left behind by test runs (normally their watcher does this).
clean-clusters:
	@shopt -s nullglob; for dir in $(TARGET_DIR)/test-clusters/*/; do \
	  echo "stopping $$dir"; tests/cluster/stop "$$dir" --purge; rm -rf "$$dir"; \
	done
