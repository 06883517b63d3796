# Flotilla's build. The two commands a newcomer needs:
#   make demo   the whole mission, end to end, on local clusters
#   make test   go vet and every test, against real control planes
#
# Everything is built from the Go module proxy; nothing else is downloaded.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

BIN         := $(CURDIR)/bin
TESTENV_DIR := $(BIN)/testenv

# Version stamping for `flotilla version` and agents' status files.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/flotilla-gitops/flotilla/internal/version
LDFLAGS := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)

# Tests that need a cluster fail (never skip) without the binaries; this is
# where they find them.
export KUBEBUILDER_ASSETS := $(TESTENV_DIR)

GO_TEST_FLAGS ?= -count=1 -timeout=30m

# make vet refuses tracked files above this size unless .large-files lists them.
MAX_TRACKED_BYTES := 1048576

.PHONY: build
build: ## Build bin/flotilla: static (no cgo), -trimpath and stripped (no DWARF or symbol table; stack traces keep names and lines), 88 MB instead of 193
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/flotilla ./cmd/flotilla

# The agent's image, without Docker (internal/image, go-containerregistry):
# linux/amd64 and linux/arm64 in one index, reproducible, with an SBOM.
IMAGE ?=

.PHONY: image
image: ## Build the agent's OCI image into bin/image/oci (linux/amd64 + arm64); IMAGE=REPOSITORY also pushes it, tagged with the version
	go run ./internal/image/build -version $(VERSION) -out $(BIN)/image $(if $(IMAGE),-image $(IMAGE))

.PHONY: testenv
testenv: ## Build the test control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok) into bin/testenv, once
	internal/testenv/tools/build.sh $(TESTENV_DIR)

# The linter, pinned, built from the Go module proxy into bin/tools once
# (about 6 minutes on 2 cores). .golangci.yml holds its rules.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/tools/golangci-lint@$(GOLANGCI_LINT_VERSION)/golangci-lint

$(GOLANGCI_LINT):
	@echo "make vet: building golangci-lint $(GOLANGCI_LINT_VERSION) into $(dir $@) (once)"
	GOBIN=$(dir $@) GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# An exception of .golangci.yml that matches nothing any more fails the
# run: the list of long functions only shrinks.
.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint: the layering (depguard), errors (errorlint, errcheck), function length, staticcheck
	@status=0; out=$$($(GOLANGCI_LINT) run ./... 2>&1) || status=$$?; echo "$$out"; \
	if grep -q "Skipped 0 issues by rules" <<<"$$out"; then \
		echo "make lint: an exception in .golangci.yml matches nothing any more: delete it"; exit 1; fi; \
	exit $$status

.PHONY: vet
vet: lint ## go vet, the linter, a gofmt check, and no large tracked file (built artefacts stay out of Git)
	go vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@big=$$(git ls-files -z | xargs -0 stat -c '%s %n' 2>/dev/null | \
		awk -v max=$(MAX_TRACKED_BYTES) '$$1 > max {print $$2}' | \
		grep -vxF -f <(grep -v '^#' .large-files) || true); \
	if [ -n "$$big" ]; then \
		echo "tracked files over $(MAX_TRACKED_BYTES) bytes (a built binary, a profile?):"; echo "$$big"; \
		echo "remove them from Git, or list a deliberate fixture in .large-files"; exit 1; fi

.PHONY: chromium
chromium: ## Install Debian's Chromium when missing (the status page is checked in it)
	@if ! command -v chromium >/dev/null; then \
		echo "make chromium: installing Debian's chromium (the status page test loads the page in it)"; \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		$$sudo apt-get update -qq; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@chromium --version

.PHONY: test
test: testenv chromium vet image ## Build what the tests need, vet, run every test, a short fuzz run, and the demo unattended (end to end)
	go test $(GO_TEST_FLAGS) ./...
	$(MAKE) fuzz
	$(MAKE) demo DEMO_ARGS=--ci

# A count of executions, not a duration: with a duration, Go 1.26's fuzz
# coordinator can fail a target with "context deadline exceeded" at the
# end of the time on a loaded machine (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 5000x

.PHONY: fuzz
fuzz: ## Run every fuzz test for FUZZTIME (default 5000 executions) each; the seed corpora (testdata/fuzz) also run in every go test
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' --exclude-dir=bin --exclude-dir=.git .); do \
		pkg=$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "fuzz: $$pkg $$t ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

DEMO_ARGS ?=

.PHONY: demo
demo: testenv build image ## Run the fleet-in-a-box demo (DEMO_ARGS=--ci: unattended)
	@echo "make demo: three local clusters, a git server and three agents (the first build takes minutes)"
	go run ./internal/demo $(DEMO_ARGS)

.PHONY: demo-down
demo-down: ## Stop what a running demo started
	@if [ -f .demo/demo.pid ]; then kill "$$(cat .demo/demo.pid)" && echo "stopping the demo"; else echo "no demo running"; fi

.PHONY: clean
clean: ## Remove bin/flotilla (keeps the cached control-plane binaries)
	rm -f $(BIN)/flotilla

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
