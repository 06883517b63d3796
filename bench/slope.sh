#!/usr/bin/env bash
# bench/slope.sh — how the batch commands grow with the fleet: plan --all,
# render --all, vet and preview (one overlay changed) of the synthetic fleet
# (with its charts and kustomizations) at each number of clusters given
# (default 1000 5000), BUNDLES bundles each (default 50): wall seconds and
# peak RSS (/usr/bin/time -v) of each command, and the size of what it
# wrote. Memory that grows with the distinct inputs stays level from one
# size to the next; memory that grows with clusters × bundles does not.
# Results go in bench/RESULTS.md by hand, with the machine and date this
# prints.
#
#   bench/slope.sh [CLUSTERS...]        BUNDLES=50 ONLY=WORD
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000)
bundles=${BUNDLES:-50}
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

source bench/lib.sh
machine
echo "commit:  $(command git rev-parse --short HEAD)"
flotilla=$root/bin/flotilla

# run NAME CMD...: prints "NAME seconds peak-MiB output-MB"; the command's
# output goes to $work/out (a folder with @OUT@ in the arguments).
run() {
	local name=$1
	shift
	[[ "$name" == *"${ONLY:-}"* ]] || return 0
	rm -rf "$work/out" && mkdir -p "$work/out"
	local args=("${@//@OUT@/$work/out/tree}")
	# preview exits 1 when something changes, vet when it finds problems.
	/usr/bin/time -f '%e %M' -o "$work/time" "$flotilla" "${args[@]}" >"$work/out/stdout" 2>"$work/stderr" || [ $? -eq 1 ]
	printf '%-22s %8s s %8s MiB %8s MB written\n' "$name" \
		"$(tail -1 "$work/time" | awk '{print $1}')" \
		"$(tail -1 "$work/time" | awk '{printf "%.0f", $2 / 1024}')" \
		"$(du -sm "$work/out" | cut -f1)"
}

for clusters in "${sizes[@]}"; do
	echo
	echo "fleet:   $clusters clusters x $bundles bundles"
	rm -rf "$work/fleet"
	synth_fleet "$work/fleet"
	fleet_with_change
	fleet=$work/fleet
	run "plan --all -o json" plan "$fleet" --all -o json -q
	run "render --all" render "$fleet" --all --out @OUT@ -q
	run "vet" vet "$fleet" -q
	run "preview" preview "$fleet" --base HEAD~1 --head HEAD -o json -q
done
