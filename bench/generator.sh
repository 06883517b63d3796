#!/usr/bin/env bash
# bench/generator.sh — `flotilla generator serve` (Argo CD's plugin
# generator) on the synthetic fleet (1,000 clusters x 50 bundles by
# default): the first planning, then what a request costs once the plans
# are there (whole answer, and narrowed to one cluster), and the server's
# peak memory with its planning worker. Argo CD's default client timeout is
# 30 s and it polls every 120 s: a request must not wait for a planning.
# Results go in bench/RESULTS.md by hand, with the machine and date this
# prints. With "gated", the fleet gets rollout waves (a canary wave, an eu
# wave behind an approval, the rest) and is a Git repository, so every
# planning also takes the rollout gate.
#
#   bench/generator.sh [CLUSTERS] [BUNDLES] [gated]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
clusters=${1:-1000}
bundles=${2:-50}
gated=${3:-}
runs=5
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

machine
echo "fleet:   $clusters clusters x $bundles bundles"
synth_fleet "$work/fleet"
if [ "$gated" = gated ]; then
	echo 'rollout: waves: [{name: "canary", names: ["c-000*"]}, {name: "eu", regions: ["eu-*"], approve: true}, {name: "rest"}]' >>"$work/fleet/fleet.cue"
	git -C "$work/fleet" init -q -b main
	git -C "$work/fleet" add -A
	git -C "$work/fleet" -c user.name=bench -c user.email=bench@example.com commit -qm fleet
	echo "gated:   rollout waves canary, eu (approve), rest; the fleet is a Git repository"
fi
echo bench-token >"$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start=$(date +%s.%N)
bin/flotilla generator serve "$work/fleet" --token-file "$work/token" --listen "127.0.0.1:$port" --refresh 1h 2>"$work/server.log" &
server=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
	kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
	sleep 0.2
done
echo "first planning and listening: $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f') s"

ask() {
	curl -sf -o "$work/answer.json" -H "Authorization: Bearer bench-token" \
		-d "{\"applicationSetName\": \"bench\", \"input\": {\"parameters\": $1}}" \
		"http://127.0.0.1:$port/api/v1/getparams.execute"
}
ask '{}'
sets=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["output"]["parameters"]))' "$work/answer.json")
echo "answer:  $sets parameter sets, $(wc -c <"$work/answer.json") bytes"
echo "request, every set (median of $runs): $(measure ask '{}') s"
echo "request, one cluster (median of $runs): $(measure ask '{"cluster": "c-0500"}') s"
# Peak and current resident memory: a worker gives its heap back a second
# after its last job, and ends after --worker-idle-timeout.
rss() { awk '/VmHWM/ {peak = $2} /VmRSS/ {now = $2} END {printf "%.0f MiB (now %.0f MiB)", peak/1024, now/1024}' "/proc/$1/status"; }
sleep 2
echo "server peak RSS: $(rss "$server")"
for w in $(pgrep -P "$server" || true); do echo "worker $w peak RSS: $(rss "$w")"; done
