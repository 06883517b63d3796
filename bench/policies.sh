#!/usr/bin/env bash
# bench/policies.sh — what checking the fleet's policies over every
# cluster's rendered objects costs: on the synthetic fleet (1,000 clusters
# × 50 bundles by default, with its charts and kustomizations) and three
# policies (a forbid, a constrain on every Deployment, a require for one
# class), in the same run,
#   1. render --all --out: the renders alone (the peer),
#   2. vet --policies: the same plans and renders, and every policy
#      checked over every cluster's objects.
# Results go in bench/RESULTS.md by hand, with the machine and date printed.
#
#   bench/policies.sh [CLUSTERS] [BUNDLES]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
clusters=${1:-1000}
bundles=${2:-50}
runs=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

machine
echo "fleet:   $clusters clusters x $bundles bundles"
make -s build
go run ./internal/synthfleet/cmd/synthfleet -dir "$work/fleet" -clusters "$clusters" -bundles "$bundles" -sources
cat >"$work/fleet/policies.cue" <<'CUE'
package fleet

policies: {
	"no-load-balancers": forbid: [{apiVersion: "v1", kind: "Service", spec: type: "LoadBalancer"}]
	"sane-replicas": constrain: [{match: {apiVersion: "apps/v1", kind: "Deployment"}, spec: replicas: >=1 & <=50}]
	"regulated-config": {
		target: clusterSelector: matchLabels: class: "regulated"
		require: [{apiVersion: "v1", kind: "ConfigMap"}]
	}
}
CUE


render=$(measure bin/flotilla render "$work/fleet" --all --out "$work/out")
vet=$(measure bin/flotilla vet "$work/fleet" --policies)
echo
echo "median of $runs runs (whole processes):"
printf '  render --all --out (the peer)   %6.2f s\n' "$render"
printf '  vet --policies                  %6.2f s   (%.2fx render --all)\n' "$vet" "$(echo "$vet / $render" | bc -l)"
