#!/usr/bin/env bash
# bench/render.sh — rendering against the reference command lines, on the
# same inputs:
#   1. one bundle: Flotilla's in-process render (go test -bench) vs
#      `helm template` v3.22.0 and `kustomize build` v5.8.1 (whole processes)
#   2. `flotilla render --all` for the demo fleet with N extra clusters
#      (default 1,000), each distinct bundle input rendered once, in render
#      workers (the default) and in process.
# Results go in bench/RESULTS.md by hand, with the machine and date printed.
set -euo pipefail
cd "$(dirname "$0")/.."
clusters=${1:-1000}
runs=5
tools=$PWD/bin/tools
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date:    $(date -u +%Y-%m-%d)"
helm=$tools/v3.22.0/helm
kustomize=$tools/v5.8.1/kustomize
[ -x "$helm" ] || GOBIN=$tools/v3.22.0 go install helm.sh/helm/v3/cmd/helm@v3.22.0
[ -x "$kustomize" ] || GOBIN=$tools/v5.8.1 go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1
make -s build

# median of $runs wall-clock runs, in milliseconds
measure() {
	local times=()
	for _ in $(seq $runs); do
		local start end
		start=$(date +%s%N)
		"$@" >/dev/null
		end=$(date +%s%N)
		times+=($(((end - start) / 1000000)))
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

echo '{"replicas": 3, "metrics": {"enabled": true}, "cache": {"size": "128Mi"}}' >"$work/values.json"
helm_ms=$(measure "$helm" template shop render/helm/testdata/repo/charts/shop --namespace shop-ns --include-crds \
	-f "$work/values.json" --kube-version v1.35.2 --api-versions monitoring.coreos.com/v1)
kust_ms=$(measure "$kustomize" build render/kustomize/testdata/repo/overlays/prod)
echo
echo "one bundle, reference CLIs (median of $runs whole processes):"
echo "  helm template (render/helm/testdata shop chart)        ${helm_ms} ms"
echo "  kustomize build (render/kustomize/testdata overlays/prod) ${kust_ms} ms"
echo "one bundle, in-process (go test -bench):"
go test -run '^$' -bench . -benchmem ./render/helm/ ./render/kustomize/ | grep -E '^(Benchmark|pkg)'

mkdir -p "$work/fleet"
cp -r fleet.cue examples deploy "$work/fleet/"
go run ./internal/synthfleet/cmd/synthfleet -dir "$work/fleet" -clusters "$clusters" -inventory-only
# In render workers (the default: each render bounded in time and memory,
# offline ones without network) and in process (--sandbox=false), same run.
for sandbox in true false; do
	rm -rf "$work/out"
	start=$(date +%s%N)
	bin/flotilla render "$work/fleet" --all --out "$work/out" --sandbox=$sandbox 2>"$work/log"
	end=$(date +%s%N)
	echo
	echo "render --all --sandbox=$sandbox, demo fleet + $clusters clusters:"
	tail -1 "$work/log" | sed 's/^/  /'
	echo "  $(((end - start) / 1000000)) ms, $(find "$work/out" -name '*.yaml' | wc -l) files, $(du -sh "$work/out" | cut -f1)"
done
