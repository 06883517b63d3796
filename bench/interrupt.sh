#!/usr/bin/env bash
# bench/interrupt.sh — how long Flotilla takes to stop after a signal, on
# the work that used to ignore one: `plan --all` on a 1,000-cluster fleet
# (SIGINT once it reports progress) and `render` of a chart whose templates
# never end (SIGTERM after 2 s). The reference is the same `plan --all` run
# to its end. Results go in bench/RESULTS.md by hand, with the machine and
# date this prints.
#
#   bench/interrupt.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date:    $(date -u +%Y-%m-%d)"
make -s build
go run ./internal/synthfleet/cmd/synthfleet -dir "$work/fleet" -clusters 1000 -bundles 50

# A chart whose helpers call each other 2^40 times, printing nothing.
chart=$work/slow/charts/slow
mkdir -p "$chart/templates"
printf 'apiVersion: v2\nname: slow\nversion: 0.1.0\n' >"$chart/Chart.yaml"
for i in $(seq 0 39); do
	printf '{{- define "t%d" -}}{{ include "t%d" . }}{{ include "t%d" . }}{{- end -}}\n' "$i" $((i + 1)) $((i + 1))
done >"$chart/templates/_helpers.tpl"
echo '{{- define "t40" -}}{{- end -}}' >>"$chart/templates/_helpers.tpl"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\ndata:\n  x: {{ include "t0" . | quote }}\n' >"$chart/templates/cm.yaml"
printf 'package fleet\n\nclusters: c1: {}\nbundles: slow: {namespace: "slow", helm: chart: "charts/slow"}\n' >"$work/slow/fleet.cue"

now() { date +%s.%N; }

# interrupt SIGNAL READY-PATTERN-OR-SECONDS CMD...: start CMD, wait until
# its stderr matches the pattern (or the seconds pass), send SIGNAL, print
# "<seconds to exit> <exit code>".
interrupt() {
	local sig=$1 ready=$2
	shift 2
	"$@" >/dev/null 2>"$work/stderr" &
	local pid=$! deadline=$((SECONDS + 120))
	if [[ $ready =~ ^[0-9]+$ ]]; then
		sleep "$ready"
	else
		until grep -q "$ready" "$work/stderr"; do
			((SECONDS < deadline)) || { echo "never printed $ready" >&2; kill -9 $pid; return 1; }
			sleep 0.05
		done
	fi
	local start code=0
	start=$(now)
	kill "-$sig" $pid
	wait $pid || code=$?
	echo "$(echo "$(now) - $start" | bc) $code"
}

median() { sort -n | sed -n "$(((runs + 1) / 2))p"; }

start=$(now)
bin/flotilla plan "$work/fleet" --all -o json >/dev/null 2>&1
full=$(echo "$(now) - $start" | bc)

plan=() render=() codes=()
for _ in $(seq "$runs"); do
	read -r t c < <(interrupt INT "planned " bin/flotilla plan "$work/fleet" --all -o json)
	plan+=("$t") codes+=("plan:$c")
	read -r t c < <(interrupt TERM 2 bin/flotilla render "$work/slow" --cluster c1)
	render+=("$t") codes+=("render:$c")
done
echo
echo "plan --all, 1,000 clusters, run to its end:     ${full} s"
echo "plan --all, SIGINT after progress → exit:       $(printf '%s\n' "${plan[@]}" | median) s (median of $runs)"
echo "render of a never-ending chart, SIGTERM → exit: $(printf '%s\n' "${render[@]}" | median) s (median of $runs)"
echo "exit codes: $(printf '%s\n' "${codes[@]}" | sort | uniq -c | xargs)"
echo
grep -h "flotilla:" "$work/stderr" | tail -1
