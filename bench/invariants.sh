#!/usr/bin/env bash
# bench/invariants.sh — what checking the fleet's invariants (rules over
# every cluster's plan at once) costs `flotilla vet`: on the synthetic
# fleet (1,000 clusters × 50 bundles by default, with its charts and
# kustomizations), in the same run,
#   1. vet without invariants (the peer: the plans alone),
#   2. vet with four invariants over every bundle (regions per bundle,
#      clusters per region and class, a count per team, the same values
#      per class and bundle),
#   3. vet --invariants with the four and one rule over rendered objects
#      (every Deployment's apiVersion the same per class): every cluster
#      rendered, each distinct input once,
#   4. vet --policies without invariants (what the issue compares with:
#      every cluster rendered, the three policies of bench/policies.sh
#      checked over its objects),
# wall time (median of 3) and peak RSS (/usr/bin/time -v, the vet and its
# render workers together).
# Results go in bench/RESULTS.md by hand, with the machine and date printed.
#
#   bench/invariants.sh [CLUSTERS] [BUNDLES]
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
synth_fleet "$work/fleet"
synth_policies "$work/fleet"
invariants='package fleet

invariants: {
	"every-app-in-two-regions": {bundles: ["app-*"], regions: min: 2}
	"region-class-size": {groupBy: "region", clusters: max: 100000}
	"a-team-per-class": {groupBy: "labels.class", count: [{clusterSelector: matchLabels: team: "payments", max: 100000}]}
	"same-values-per-class": {groupBy: "labels.class", bundles: ["app-*"], same: ["values.replicas"]}
}'

rendered='package fleet

invariants: "deployments-agree-per-class": {groupBy: "labels.class", same: [{match: kind: "Deployment", field: "apiVersion"}]}'

# vet exits 1 when it finds problems; the invariants above hold, the
# synthetic fleet has none.
vet() { bin/flotilla vet "$work/fleet" "$@" -q; }
peak() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk '/Maximum resident/ {printf "%.0f MiB", $6/1024}'; }

mv "$work/fleet/policies.cue" "$work/policies.cue"
plain=$(measure vet)
plain_rss=$(peak bin/flotilla vet "$work/fleet" -q)
echo "$invariants" >"$work/fleet/invariants.cue"
vet >/dev/null # the rules hold: vet must pass with them
with=$(measure vet)
with_rss=$(peak bin/flotilla vet "$work/fleet" -q)
echo "$rendered" >"$work/fleet/rendered.cue"
vet --invariants >/dev/null
rendered_t=$(measure vet --invariants)
rendered_rss=$(peak bin/flotilla vet "$work/fleet" --invariants -q)
rm "$work/fleet/invariants.cue" "$work/fleet/rendered.cue"
mv "$work/policies.cue" "$work/fleet/policies.cue"
policies=$(measure vet --policies)
policies_rss=$(peak bin/flotilla vet "$work/fleet" --policies -q)

echo
echo "median of $runs runs (whole processes), peak RSS:"
printf '  vet (the peer: plans alone)      %6.2f s   %s\n' "$plain" "$plain_rss"
printf '  vet with 4 invariants            %6.2f s   %s   (%.2fx vet)\n' "$with" "$with_rss" "$(echo "$with / $plain" | bc -l)"
printf '  vet --invariants (4 + 1 rendered) %5.2f s   %s   (%.2fx vet, %.2fx --policies)\n' "$rendered_t" "$rendered_rss" "$(echo "$rendered_t / $plain" | bc -l)" "$(echo "$rendered_t / $policies" | bc -l)"
printf '  vet --policies (3 policies)      %6.2f s   %s   (%.2fx vet)\n' "$policies" "$policies_rss" "$(echo "$policies / $plain" | bc -l)"
