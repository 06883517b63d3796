#!/usr/bin/env bash
# bench/revisions.sh — this revision against an earlier one, on the
# synthetic fleet (1,000 clusters × 50 bundles by default, with its charts
# and kustomizations, and one overlay changed for preview): for each of
# plan --all, render --all, vet and preview, wall time and peak RSS
# (/usr/bin/time -v) of both binaries, alternating runs, and a check that
# both produce the same bytes. For refactors that must change nothing:
# results go in bench/RESULTS.md by hand, with the machine and date this
# prints.
#
#   bench/revisions.sh BEFORE [CLUSTERS] [BUNDLES]
#
# RUNS (default 2) runs of each binary, alternating; ONLY=WORD measures
# only the commands whose name holds WORD.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench/revisions.sh BEFORE [CLUSTERS] [BUNDLES]}
clusters=${2:-1000}
bundles=${3:-50}
runs=${RUNS:-2}
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

source bench/lib.sh
machine
echo "fleet:   $clusters clusters x $bundles bundles; $before against $(command git rev-parse --short HEAD)"

synth_fleet "$work/fleet"
fleet_with_change

mkdir -p "$work/src-before"
command git archive "$before" | tar -x -C "$work/src-before"
(cd "$work/src-before" && go build -o "$work/flotilla-before" ./cmd/flotilla)
cp "$root/bin/flotilla" "$work/flotilla-after"

# run BIN NAME CMD...: one run, its output kept under $work/out-NAME-BIN;
# prints "seconds peak-MiB".
run() {
	local bin=$1 name=$2
	shift 2
	local out="$work/out-$name-$bin"
	rm -rf "$out" && mkdir -p "$out"
	local args=("${@//@OUT@/$out/tree}")
	/usr/bin/time -f '%e %M' -o "$work/time" "$work/flotilla-$bin" "${args[@]}" >"$out/stdout" 2>/dev/null || [ $? -eq 1 ]
	tail -1 "$work/time" | awk '{printf "%.1f %.0f\n", $1, $2 / 1024}'
}

printf '\n%-28s %-8s %s\n' "command" "binary" "runs (seconds, peak MiB)"
compare() {
	local name=$1
	shift
	[[ "$name" == *"${ONLY:-}"* ]] || return 0
	local before=() after=()
	for _ in $(seq "$runs"); do
		before+=("$(run before "$name" "$@")")
		after+=("$(run after "$name" "$@")")
	done
	printf '%-28s %-8s %s\n' "$name" before "$(printf '(%s) ' "${before[@]}")"
	printf '%-28s %-8s %s\n' "$name" after "$(printf '(%s) ' "${after[@]}")"
	if diff -r "$work/out-$name-before" "$work/out-$name-after" >/dev/null; then
		echo "  $name: the same bytes from both"
	else
		echo "  $name: OUTPUTS DIFFER" && exit 1
	fi
}
fleet=$work/fleet
compare "plan --all -o json" plan "$fleet" --all -o json
compare "render --all" render "$fleet" --all --out @OUT@
compare "vet" vet "$fleet"
compare "preview (one overlay)" preview "$fleet" --base HEAD~1 --head HEAD -o json
