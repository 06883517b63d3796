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
source bench/lib.sh
clusters=${1:-1000}
bundles=${2:-50}
runs=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

machine
echo "fleet:   $clusters clusters x $bundles bundles"
synth_fleet "$work/plain"
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


plain=$(measure bin/flotilla vet "$work/plain")
typed=$(measure bin/flotilla vet "$work/typed")
render=$(measure bin/flotilla render "$work/typed" --all --out "$work/out")
echo
echo "median of $runs runs (whole processes):"
printf '  vet, no chart schemas             %6.2f s\n' "$plain"
printf '  vet, values checked (every chart) %6.2f s   (%.2fx vet without schemas)\n' "$typed" "$(echo "$typed / $plain" | bc -l)"
printf '  render --all --out (Helm checks)  %6.2f s   (vet with schemas takes %.2fx its time)\n' "$render" "$(echo "$typed / $render" | bc -l)"
