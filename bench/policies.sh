#!/usr/bin/env bash
# bench/policies.sh — what checking the fleet's policies over every
# cluster's rendered objects costs: on the synthetic fleet (1,000 clusters
# × 50 bundles by default, with its charts and kustomizations) and three
# policies (a forbid, a constrain on every Deployment, a require for one
# class), in the same run,
#   1. render --all --out: the renders alone (the peer),
#   2. vet --policies: the same plans and renders, and every policy
#      checked over every cluster's objects;
# and what they cost a preview of a one-overlay change (app-000's overlay
# for regulated clusters): the fleet previewed without its policies (the
# peer), with them (the clusters whose bundles change are checked), and a
# change to the policies themselves (every cluster is).
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
synth_fleet "$work/fleet"
synth_policies "$work/fleet"


render=$(measure bin/flotilla render "$work/fleet" --all --out "$work/out")
vet=$(measure bin/flotilla vet "$work/fleet" --policies)

# Previews: three commits on top of the fleet with its policies.
git() { fleet_git "$@"; }
fleet_with_change
sed -i 's/>=1 \& <=50/>=1 \& <=40/' "$work/fleet/policies.cue"
git commit -qam "sane-replicas: at most 40"
# preview exits 1 when something changes, as it does here.
preview() { bin/flotilla preview "$work/fleet" --base "$1" --head "$2" -o json >/dev/null 2>&1 || [ $? -eq 1 ]; }
with=$(measure preview HEAD~2 HEAD~1)
policy=$(measure preview HEAD~1 HEAD)
# The same overlay change without policies: base and head without the file.
git checkout -q -b without HEAD~2
git rm -q policies.cue
git commit -qm "base, no policies"
commit_overlay_change
without=$(measure preview HEAD~1 HEAD)

echo
echo "median of $runs runs (whole processes):"
printf '  render --all --out (the peer)   %6.2f s\n' "$render"
printf '  vet --policies                  %6.2f s   (%.2fx render --all)\n' "$vet" "$(echo "$vet / $render" | bc -l)"
echo "preview of a one-overlay change (the regulated clusters change):"
printf '  without policies (the peer)     %6.2f s\n' "$without"
printf '  with policies                   %6.2f s   (%.2fx)\n' "$with" "$(echo "$with / $without" | bc -l)"
printf '  a change to a policy            %6.2f s   (%.2fx; every cluster checked)\n' "$policy" "$(echo "$policy / $without" | bc -l)"
