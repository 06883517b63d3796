#!/usr/bin/env bash
# bench/status.sh — `flotilla status` over a fleet of status branches
# (1,000 clusters by default), whole process, on a local bare repository
# (file://; BenchmarkRead1000 in sync/report measures the same read over
# HTTP). The peer is `git ls-remote` + `git fetch --depth 1` of the same
# branches with the git command line: the two round trips Flotilla makes. Results go in bench/RESULTS.md by hand,
# with the machine and date this prints.
#
#   bench/status.sh [CLUSTERS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
clusters=${1:-1000}
runs=5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

machine
echo "fleet:   $clusters status branches"
make -s build

# One status branch per cluster, as the agents' first reports leave them,
# written in one git fast-import.
git init -q --bare "$work/fleet.git"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for i in $(seq 0 $((clusters - 1))); do
	name=$(printf 'c%04d' "$i")
	file="apiVersion: flotilla.dev/v1alpha1
kind: ClusterStatus
cluster: {name: $name, region: eu-west-1, labels: {}, facts: {kubernetesVersion: v1.36.3, apiGroups: [], apiVersions: [], regions: [], zones: [], nodes: 1}}
agent: bench
appliedRevision: 0123456789abcdef0123456789abcdef01234567
seenRevision: 0123456789abcdef0123456789abcdef01234567
phase: Ready
bundles:
- {name: web, phase: Ready, counts: {created: 1, configured: 0, unchanged: 0, deleted: 0, drifted: 0}, lastTransitionTime: \"$now\"}
reportedAt: \"$now\"
"
	msg="status($name): Ready"
	printf 'commit refs/heads/flotilla/status/%s\ncommitter flotilla <flotilla@flotilla.dev> %d +0000\ndata %d\n%s\nM 100644 inline clusters/%s.yaml\ndata %d\n%s\n' \
		"$name" "$(date +%s)" "${#msg}" "$msg" "$name" "$(printf '%s' "$file" | wc -c)" "$file"
done | git -C "$work/fleet.git" fast-import --quiet


peer() {
	rm -rf "$work/peer"
	git init -q --bare "$work/peer"
	git -C "$work/peer" ls-remote "file://$work/fleet.git" 'refs/heads/flotilla/status/*' >/dev/null
	git -C "$work/peer" fetch -q --depth 1 "file://$work/fleet.git" '+refs/heads/flotilla/status/*:refs/remotes/origin/flotilla/status/*'
}

lines=$(bin/flotilla status --repo "$work/fleet.git" | wc -l)
echo "flotilla status printed $lines lines (a header and one per cluster)"
echo
echo "median of $runs runs (whole processes):"
echo "  git ls-remote + git fetch --depth 1 (peer): $(measure peer) s"
echo "  flotilla status:                            $(measure bin/flotilla status --repo "$work/fleet.git") s"
echo "  flotilla status -o json:                    $(measure bin/flotilla status --repo "$work/fleet.git" -o json) s"
echo "  flotilla status --cluster c0500:            $(measure bin/flotilla status --repo "$work/fleet.git" --cluster c0500) s"
