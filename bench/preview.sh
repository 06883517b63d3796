#!/usr/bin/env bash
# bench/preview.sh — time `flotilla preview` against the naive way of
# previewing a fleet change (render --all at base and at head into folders,
# then diff -r), on the synthetic fleet (1,000 clusters × 50 bundles by
# default, with its charts and kustomizations) and a change to one overlay;
# and `plan --all`, the floor of both. Results go in bench/RESULTS.md by
# hand, with the machine and date this prints.
#
#   bench/preview.sh [CLUSTERS] [BUNDLES]
#
# With BEFORE=<git revision>, that revision is built too and its
# `plan --all` timed in the same run, alternating with this one's (two runs
# each), for before/after ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-1000}
bundles=${2:-50}
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

source bench/lib.sh
machine
echo "fleet:   $clusters clusters x $bundles bundles, one overlay changed"

synth_fleet "$work/fleet"
flotilla=$root/bin/flotilla
git() { fleet_git "$@"; }
fleet_with_change

seconds() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); echo "$end - $start" | bc; }

# preview exits 1 when something changes: that is the expected outcome.
run_preview() { "$flotilla" preview "$work/fleet" --base HEAD~1 --head HEAD -o json >"$work/preview.json" 2>/dev/null || [ $? -eq 1 ]; }
run_naive() {
	mkdir -p "$work/base" "$work/head"
	git archive HEAD~1 | tar -x -C "$work/base"
	git archive HEAD | tar -x -C "$work/head"
	"$flotilla" render "$work/base" --all --out "$work/out-base" 2>/dev/null
	"$flotilla" render "$work/head" --all --out "$work/out-head" 2>/dev/null
	diff -r "$work/out-base" "$work/out-head" >"$work/naive.diff" || [ $? -eq 1 ]
}
run_plan() { "$flotilla" plan "$work/fleet" --all -o json >/dev/null 2>&1; }

plan=$(seconds run_plan)
if [ -n "${BEFORE:-}" ]; then
	mkdir -p "$work/before"
	command git archive "$BEFORE" | tar -x -C "$work/before"
	(cd "$work/before" && go build -o "$work/flotilla-before" ./cmd/flotilla)
	run_plan_before() { "$work/flotilla-before" plan "$work/fleet" --all -o json >/dev/null 2>&1; }
	before1=$(seconds run_plan_before)
	plan2=$(seconds run_plan)
	before2=$(seconds run_plan_before)
	plan3=$(seconds run_plan)
fi
preview=$(seconds run_preview)
naive=$(seconds run_naive)
changed=$(python3 -c "import json,sys; r=json.load(open('$work/preview.json')); print(sum(c['changed'] for c in r['clusters']), len(r['clusters']), r['renders'])")
echo
echo "one run each (whole processes):"
printf '  flotilla plan --all -o json                        %7.1f s\n' "$plan"
printf '  flotilla preview --base HEAD~1 --head HEAD -o json %7.1f s   (changed clusters, clusters, renders: %s)\n' "$preview" "$changed"
printf '  naive: render --all at both + diff -r (peer)       %7.1f s   (%s diff lines)\n' "$naive" "$(wc -l <"$work/naive.diff")"
printf '  preview is %.1fx faster than the naive way\n' "$(echo "$naive / $preview" | bc -l)"
if [ -n "${BEFORE:-}" ]; then
	echo
	echo "plan --all, this revision against $BEFORE, alternating:"
	printf '  %s: %.1f s, %.1f s\n' "$BEFORE" "$before1" "$before2"
	printf '  this revision: %.1f s, %.1f s, %.1f s\n' "$plan" "$plan2" "$plan3"
	printf '  ratio of the sums (last two of ours): %.2fx\n' "$(echo "($before1 + $before2) / ($plan2 + $plan3)" | bc -l)"
fi
