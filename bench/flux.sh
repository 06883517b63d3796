#!/usr/bin/env bash
# bench/flux.sh — the Flotilla agent against its peer, Flux's
# source-controller and kustomize-controller (v1.9.6, built by make
# testenv), on the same workload (1 namespace, OBJECTS ConfigMaps and 20
# Deployments in a Git repository over HTTP), the same poll interval, one
# tool after the other on a fresh control plane with fake nodes each,
# alternating, RUNS times: first sync, a 10-object change, API requests,
# idle CPU seconds and the resident memory of every process each tool
# runs (internal/fluxbench says how each is measured). Results go in
# bench/RESULTS.md by hand, with the machine and date this prints.
#
#   bench/flux.sh [OBJECTS...]        default: 1000 5000
#
# RUNS (default 2), IDLE (default 3m) and INTERVAL (default 30s) tune it;
# TOOLS (default flux,flotilla) picks the tools, and flux+observer is Flux
# with the agent beside it in --observe flux mode (a fleet that keeps Flux).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
machine
make -s testenv build
export KUBEBUILDER_ASSETS=$PWD/bin/testenv
go build -o bin/fluxbench ./internal/fluxbench
for objects in "${@:-1000 5000}"; do
	for n in $objects; do
		bin/fluxbench -objects "$n" -runs "${RUNS:-2}" -idle "${IDLE:-3m}" -interval "${INTERVAL:-30s}" -tools "${TOOLS:-flux,flotilla}" -flotilla bin/flotilla
	done
done
