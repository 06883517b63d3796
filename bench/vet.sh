#!/usr/bin/env bash
# bench/vet.sh — what checking Helm values against the charts'
# values.schema.json costs `flotilla vet`, and what it saves: on the
# synthetic fleet (1,000 clusters × 50 bundles by default, with its charts),
# in the same run,
#   1. vet with no chart schemas (the evaluation alone),
#   2. vet with a values.schema.json in every chart (each cluster's values
#      of each Helm bundle checked, positioned),
#   3. render --all --out with those schemas: the other way to find a
#      violation (Helm's own check at render time, unpositioned).
# Results go in bench/RESULTS.md by hand, with the machine and date printed.
#
#   bench/vet.sh [CLUSTERS] [BUNDLES]
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-1000}
bundles=${2:-50}
runs=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date:    $(date -u +%Y-%m-%d)"
echo "fleet:   $clusters clusters x $bundles bundles"
make -s build
go run ./internal/synthfleet/cmd/synthfleet -dir "$work/plain" -clusters "$clusters" -bundles "$bundles" -sources
cp -r "$work/plain" "$work/typed"
for chart in "$work"/typed/charts/*/; do
	cat >"$chart/values.schema.json" <<'SCHEMA'
{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["replicas"],
  "properties": {
    "replicas": {"type": "integer", "minimum": 1, "maximum": 50},
    "region": {"type": "string"},
    "host": {"type": "string", "pattern": "^app\\."},
    "image": {"type": "object", "properties": {"repository": {"type": "string"}, "tag": {"type": "string"}}},
    "resources": {"type": "object", "properties": {"requests": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "podSecurity": {"enum": ["baseline", "restricted"]},
    "dataResidency": {"type": "string"}
  }
}
SCHEMA
done

# median of $runs wall-clock runs, in seconds; the command must succeed
measure() {
	local times=()
	for _ in $(seq $runs); do
		local start end
		start=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		end=$(date +%s.%N)
		times+=("$(echo "$end - $start" | bc)")
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

plain=$(measure bin/flotilla vet "$work/plain")
typed=$(measure bin/flotilla vet "$work/typed")
render=$(measure bin/flotilla render "$work/typed" --all --out "$work/out")
echo
echo "median of $runs runs (whole processes):"
printf '  vet, no chart schemas             %6.2f s\n' "$plain"
printf '  vet, values checked (every chart) %6.2f s   (%.2fx vet without schemas)\n' "$typed" "$(echo "$typed / $plain" | bc -l)"
printf '  render --all --out (Helm checks)  %6.2f s   (vet with schemas takes %.2fx its time)\n' "$render" "$(echo "$typed / $render" | bc -l)"
