#!/usr/bin/env bash
# bench/fleet.sh — time fleet evaluation against the peer, `cue export`, on
# the same synthetic fleet (1,000 clusters × 50 bundles by default), and run
# the Go benchmarks of package fleet. Results go in bench/RESULTS.md by hand,
# with the machine and date this prints.
#
#   bench/fleet.sh [CLUSTERS] [BUNDLES]
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-1000}
bundles=${2:-50}
runs=5
tools=$PWD/bin/tools
mkdir -p "$tools"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date:    $(date -u +%Y-%m-%d)"
echo "fleet:   $clusters clusters x $bundles bundles"

[ -x "$tools/cue" ] || GOBIN=$tools go install cuelang.org/go/cmd/cue@v0.17.1
make -s build
go run ./internal/synthfleet/cmd/synthfleet -dir "$work/fleet" -clusters "$clusters" -bundles "$bundles"

# The peer evaluates the same files, with Flotilla's schema beside them and
# the first inventory cluster as `cluster`: what one agent evaluates.
mkdir -p "$work/peer"
cp "$work/fleet/fleet.cue" "$work/peer/"
cp schemas/fleet.cue "$work/peer/schema.cue"
printf 'package fleet\n\ncluster: clusters["c-0000"]\n' >"$work/peer/cluster.cue"

# median of $runs wall-clock runs, in seconds
measure() {
	local times=()
	for _ in $(seq $runs); do
		local start end
		start=$(date +%s.%N)
		"$@" >/dev/null
		end=$(date +%s.%N)
		times+=("$(echo "$end - $start" | bc)")
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

peer=$(cd "$work/peer" && measure "$tools/cue" export .)
one=$(measure bin/flotilla plan "$work/fleet" --cluster c-0000 -o json)
all=$(measure bin/flotilla plan "$work/fleet" --all -o json)
echo
echo "median of $runs runs (whole processes):"
printf '  cue export, one cluster (peer)         %6.2f s\n' "$peer"
printf '  flotilla plan --cluster c-0000 -o json %6.2f s   (%.2fx the peer)\n' "$one" "$(echo "$one / $peer" | bc -l)"
printf '  flotilla plan --all -o json            %6.2f s   (%.1f ms per cluster)\n' "$all" "$(echo "$all * 1000 / $clusters" | bc -l)"
echo
go test -run '^$' -bench . -benchmem -count 1 ./fleet/
