# bench/lib.sh — what the benchmark scripts share; source it.

# machine prints the machine and date every result is recorded with.
machine() {
	echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	echo "date:    $(date -u +%Y-%m-%d)"
}

# measure prints the median of $runs wall-clock runs of a command, in
# seconds; the command's output is discarded and it must succeed.
measure() {
	local times=()
	for _ in $(seq "$runs"); do
		local start end
		start=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		end=$(date +%s.%N)
		times+=("$(echo "$end - $start" | bc)")
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

# fleet_git runs git in the benchmark's fleet repository ($work/fleet).
fleet_git() { command git -C "$work/fleet" -c user.name=bench -c user.email=bench@example.com "$@"; }

# commit_overlay_change commits the change the preview benchmarks preview:
# app-000's overlay for regulated clusters asks for 4 replicas (500 of the
# synthetic fleet's 1,000 clusters change).
commit_overlay_change() {
	sed -i '0,/podSecurity: "restricted", replicas: 3}/s//podSecurity: "restricted", replicas: 4}/' "$work/fleet/fleet.cue"
	fleet_git commit -qam "app-000: 4 replicas in regulated clusters"
}

# fleet_with_change makes the benchmark's fleet ($work/fleet) a Git
# repository: the fleet as written, then commit_overlay_change on top.
fleet_with_change() {
	fleet_git init -q -b main
	fleet_git add -A
	fleet_git commit -qm base
	commit_overlay_change
}

# synth_fleet builds bin/flotilla and writes the synthetic fleet ($clusters
# clusters x $bundles bundles, with its charts and kustomizations) into the
# folder $1.
synth_fleet() {
	make -s build
	go run ./internal/synthfleet/cmd/synthfleet -dir "$1" -clusters "$clusters" -bundles "$bundles" -sources
}

# synth_policies writes the policies the policy benchmarks check into the
# fleet folder $1 (policies.cue): a forbid, a constrain on every
# Deployment, and a require for the regulated class.
synth_policies() {
	cat >"$1/policies.cue" <<'CUE'
package fleet

policies: {
	"no-load-balancers": forbid: [{apiVersion: "v1", kind: "Service", spec: type: "LoadBalancer"}]
	"sane-replicas": constrain: [{match: {apiVersion: "apps/v1", kind: "Deployment"}, spec: replicas: >=1 & <=50}]
	"regulated-config": {
		target: clusterSelector: matchLabels: class: "regulated"
		require: [{apiVersion: "v1", kind: "ConfigMap"}]
	}
}
CUE
}
